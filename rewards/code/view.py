"""The compact task view: what a generated reward program may read, generated from the task itself.

Text2Reward (Xie et al. 2024) showed that a short, Pythonic description of the environment
state is enough for a language model to write dense rewards; here the description is
*generated* from the task's :class:`~common.spec.EmbodimentSpec` (names, shapes, units,
frames) plus a short task text, so it cannot drift from what the env really returns.

The program sees plain dicts of numpy arrays, one row per transition::

    compute_reward(obs, action, next_obs) -> (B,) array  or  {term_name: (B,) array}

``obs``/``next_obs`` hold every state field of the spec under its own name, ``(B, *shape)``
float64, and each named keypoint of ``keypoints`` split out as ``kp_<name>`` ``(B, 3)``.
Images are left out (a program over pixels would be neither fast nor checkable).
:func:`view_arrays` builds exactly these dicts from a batch of observations *or* from one
live robot observation (a dict that follows the spec), so the same program runs on both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.spec import EmbodimentSpec, ObsField

# Short task texts for the tasks shipped in sim/panda (the env itself carries no prose).
TASK_TEXTS: dict[str, str] = {
    "panda/reach": "Move the gripper's pinch point (between the fingertips) to the goal position and hold it there. "
                   "Success: pinch-goal distance below 3 cm.",
    "panda/push": "Push the block across the table so that it reaches the goal position (the block stays on the "
                  "table; the goal is on the table surface). Success: block-goal distance below a few cm.",
    "panda/pick_place": "Grasp the block, lift it and carry it to the goal position, which may be in the air. "
                        "Success: block-goal distance below a few cm.",
    "panda/drawer_open": "Grasp the drawer handle and pull the drawer open until its opening reaches the goal. "
                         "Success: drawer opened far enough.",
}


@dataclass(frozen=True)
class ViewEntry:
    """One key of the view: name, per-transition shape, units, frame and meaning."""

    name: str
    shape: tuple[int, ...]
    units: str
    frame: str
    description: str
    source: str  # the spec field it comes from
    index: int | None = None  # row of a (K, 3) keypoint field


@dataclass
class TaskView:
    """The documented view of one task; :meth:`describe` is the text put in the prompt."""

    task: str  # spec name, e.g. "panda/reach"
    text: str  # what the task is, in words
    entries: tuple[ViewEntry, ...]
    action_layout: tuple[str, ...]
    action_scale: tuple[float, ...]
    control_hz: float
    workspace: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    def describe(self) -> str:
        """Plain text the model reads: the signature, every key with shape, units and frame."""
        lines = [
            f"Task `{self.task}`: {self.text}",
            "",
            "Write `compute_reward(obs, action, next_obs)`. `obs` and `next_obs` are dicts of numpy float64",
            "arrays with a leading batch axis B (one row per transition); `action` is (B, "
            f"{len(self.action_layout)}) in [-1, 1]. Score the transition by `next_obs` mainly.",
            "Keys of obs / next_obs:",
        ]
        for e in self.entries:
            shape = "(B" + "".join(f", {d}" for d in e.shape) + ")"
            units = e.units or "unitless"
            lines.append(f"  {e.name:14s} {shape:10s} [{units}, frame: {e.frame}] {e.description}".rstrip())
        layout = ", ".join(f"{n} (x{s:g})" for n, s in zip(self.action_layout, self.action_scale, strict=True))
        lines.append(f"Action entries (unit action -> physical command per step): {layout}.")
        lines.append(f"Control rate: {self.control_hz:g} Hz.")
        if self.workspace:
            lo, hi = self.workspace
            lines.append(f"End-effector workspace box (base frame, m): low {list(lo)}, high {list(hi)}.")
        lines.append("Frames: 'base' = robot base frame (x forward, y left, z up, metres); 'joint' = joint space; "
                     "'none' = no frame.")
        lines.extend(self.notes)
        return "\n".join(lines)


def _entry_desc(f: ObsField) -> str:
    return f.description or f.name.replace("_", " ")


def build_view(spec: EmbodimentSpec, text: str | None = None) -> TaskView:
    """The view of ``spec``'s task; ``text`` overrides the built-in task text (required for unknown tasks)."""
    if text is None:
        text = TASK_TEXTS.get(spec.name)
        if text is None:
            raise ValueError(f"no built-in task text for {spec.name!r} (known: {sorted(TASK_TEXTS)}); "
                             "pass one (reward_gen: --task-text / task_text)")
    entries: list[ViewEntry] = []
    names = list(spec.extra.get("keypoint_names", ()) or ())
    for f in spec.state_fields:
        entries.append(ViewEntry(f.name, tuple(f.shape), f.units, f.frame, _entry_desc(f), f.name))
        if f.name == "keypoints" and len(f.shape) == 2 and f.shape[1] == 3:
            for i in range(f.shape[0]):
                kp = names[i] if i < len(names) else f"k{i}"
                entries.append(ViewEntry(f"kp_{kp}", (3,), f.units or "m", f.frame, f"position of keypoint {kp!r}",
                                         f.name, i))
    notes = ("Gripper observation: openness 0 = closed .. 1 = open; the gripper action is -1 close .. +1 open.",)
    ws = (tuple(spec.workspace_low), tuple(spec.workspace_high)) if spec.workspace_low and spec.workspace_high else None
    return TaskView(spec.name, text, tuple(entries), tuple(spec.action.layout), tuple(spec.action.scale),
                    float(spec.control_hz), ws, notes)


def view_arrays(view: TaskView | None, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The dict a program reads, from a batch ``{key: (B, ...)}`` or one live observation ``{key: (...)}``.

    Without a view (a term not yet bound to a spec) the non-image fields pass through as they are.
    A single observation (shapes equal to the spec's) gets a batch axis of 1.
    """
    if view is None:
        return {k: np.asarray(v, np.float64) for k, v in obs.items() if np.asarray(v).dtype != np.uint8}
    out: dict[str, np.ndarray] = {}
    single = None
    for e in view.entries:
        if e.source not in obs:
            raise KeyError(f"observation lacks {e.source!r}, which the task view ({view.task}) promises")
        v = np.asarray(obs[e.source], np.float64)
        spec_shape = next(x.shape for x in view.entries if x.name == e.source)
        if single is None:
            single = v.shape == tuple(spec_shape)
        if single:
            v = v[None]
        out[e.name] = v[:, e.index] if e.index is not None else v
    return out


__all__ = ["TASK_TEXTS", "TaskView", "ViewEntry", "build_view", "view_arrays"]
