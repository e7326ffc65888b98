"""The trajectory analyser (Auto MC-Reward): short text summaries of failed episodes.

Auto MC-Reward (Li et al. 2024) adds, next to the reward designer and the critic, an
analyser that reads the agent's failed trajectories and tells the designer *where* they
go wrong. Here the summary is computed, not written by a model: from the task view's
quantities (the same keys a reward program reads, ``view.view_arrays``) of each step of an
evaluation episode we measure

* the closest the gripper's pinch point got to what it must reach first (the object, the
  drawer handle, or for reach tasks the goal), and at which step, with the gripper's
  openness there;
* whether the object moved (largest displacement from its start) and how high it was lifted;
* the final distance of the object (or handle, or pinch point) to the goal, against its start;
* the ground-truth progress (maximum and final) when the episode logged it;

and name the stage the episode got stuck in: ``approach`` (never got near), ``contact``
(reached the object but never moved it), ``transport`` (moved it, but it never came near the
goal), ``hold`` (came near the goal but did not stay / did not succeed there).

Works on anything with ``batch`` (:class:`rewards.base.Transitions`), ``success`` and
optionally ``seed`` and ``policy`` (e.g. :class:`rewards.evaluate.Episode`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewards.code.view import TaskView, view_arrays

STAGES = {
    "approach": "the gripper never got near the {target}",
    "contact": "the gripper reached the {target} but never moved it",
    "transport": "the {target} moved but never came near the goal",
    "hold": "came near the goal but did not stay there / did not succeed",
}


@dataclass
class AnalyserSettings:
    """Thresholds of the analyser (config ``analysis.*``), metres."""

    near_m: float = 0.04  # "reached" the object/handle: pinch point within this distance
    moved_m: float = 0.01  # the object "moved": displaced at least this far from its start
    goal_m: float = 0.03  # "near the goal"
    max_episodes: int = 3  # failed episodes described one by one (all are counted)


def _first(a: dict[str, np.ndarray], *keys: str) -> tuple[str, np.ndarray] | tuple[None, None]:
    for k in keys:
        if k in a:
            return k, a[k]
    return None, None


def summarise_episode(episode: Any, view: TaskView | None, settings: AnalyserSettings | None = None) -> dict[str, Any]:
    """Measured quantities and the stuck stage of one episode (see the module doc)."""
    s = settings or AnalyserSettings()
    b = episode.batch
    first = view_arrays(view, b.obs)
    nxt = view_arrays(view, b.next_obs)
    states = {k: np.concatenate([first[k][:1], nxt[k]]) for k in nxt}  # s_0 .. s_T
    T = len(b)
    _, pinch = _first(states, "kp_pinch", "ee_pos")
    _, goal = _first(states, "goal_pos", "kp_goal")
    obj_key, obj = _first(states, "object_pos", "kp_object", "kp_handle")
    target = "object" if obj_key in ("object_pos", "kp_object") else ("drawer handle" if obj_key else "goal")
    out: dict[str, Any] = {"steps": T, "success": bool(episode.success), "target": target,
                           "seed": getattr(episode, "seed", None), "policy": getattr(episode, "policy", None)}
    if pinch is None or goal is None:
        out["stage"] = None
        return out
    reach_to = obj if obj is not None else goal
    d = np.linalg.norm(pinch - reach_to, axis=-1)
    k = int(np.argmin(d))
    out.update(closest_m=float(d[k]), closest_step=k, start_m=float(d[0]))
    if "gripper" in states:
        out["gripper_at_closest"] = float(np.ravel(states["gripper"][k])[0])
    carried = obj if obj is not None else pinch
    dg = np.linalg.norm(carried - goal, axis=-1)
    out.update(final_goal_m=float(dg[-1]), start_goal_m=float(dg[0]), min_goal_m=float(dg.min()),
               min_goal_step=int(np.argmin(dg)))
    if obj is not None:
        disp = np.linalg.norm(obj - obj[0], axis=-1)
        out.update(moved_m=float(disp.max()), lifted_m=float(max(0.0, (obj[:, 2] - obj[0, 2]).max())))
    if "drawer_pos" in states:
        out["opening_m"] = (float(np.ravel(states["drawer_pos"][0])[0]), float(np.ravel(states["drawer_pos"][-1])[0]))
    if b.progress is not None and np.isfinite(b.progress).any():
        out.update(progress_max=float(np.nanmax(b.progress)), progress_final=float(b.progress[-1]))
    if out["success"]:
        out["stage"] = None
    elif (obj is not None and d.min() > s.near_m) or (obj is None and dg.min() > s.goal_m):
        out["stage"] = "approach"
    elif obj is not None and out["moved_m"] < s.moved_m:
        out["stage"] = "contact"
    elif dg.min() > s.goal_m:
        out["stage"] = "transport"
    else:
        out["stage"] = "hold"
    return out


def describe(summary: dict[str, Any]) -> str:
    """One line for one episode's summary."""
    cm = lambda m: f"{100 * m:.1f} cm"  # noqa: E731
    tgt = summary["target"]
    who = f"episode (reset seed {summary['seed']})" if summary.get("seed") is not None else "episode"
    parts = [f"{who}, {summary['steps']} steps, {'succeeded' if summary['success'] else 'failed'}"]
    if "closest_m" in summary:
        g = f", gripper openness {summary['gripper_at_closest']:.2f} there" if "gripper_at_closest" in summary else ""
        parts.append(f"closest pinch-{tgt} distance {cm(summary['closest_m'])} at step {summary['closest_step']} "
                     f"(start {cm(summary['start_m'])}{g})")
    if "moved_m" in summary:
        parts.append(f"the {tgt} moved {cm(summary['moved_m'])} at most and was lifted {cm(summary['lifted_m'])}")
    if "opening_m" in summary:
        parts.append(f"drawer opening {cm(summary['opening_m'][0])} -> {cm(summary['opening_m'][1])}")
    if "final_goal_m" in summary:
        what = tgt if tgt != "goal" else "pinch point"
        parts.append(f"final {what}-goal distance {cm(summary['final_goal_m'])} (start {cm(summary['start_goal_m'])}, "
                     f"closest {cm(summary['min_goal_m'])} at step {summary['min_goal_step']})")
    if "progress_max" in summary:
        parts.append(f"ground-truth progress max {summary['progress_max']:.2f}, final {summary['progress_final']:.2f}")
    if summary.get("stage"):
        parts.append(f"stuck at: {summary['stage']} ({STAGES[summary['stage']].format(target=tgt)})")
    return "; ".join(parts)


def analyse_failures(episodes: Sequence[Any], view: TaskView | None, settings: AnalyserSettings | None = None) -> str:
    """Text for the refine prompt: how many evaluation episodes failed, the stages they got
    stuck in, and a line per failed episode (up to ``max_episodes``)."""
    s = settings or AnalyserSettings()
    if not episodes:
        return "No evaluation episodes to analyse."
    sums = [summarise_episode(e, view, s) for e in episodes]
    failed = [x for x in sums if not x["success"]]
    if not failed:
        return f"All {len(sums)} evaluation episodes succeeded."
    stages = Counter(x["stage"] for x in failed if x.get("stage"))
    head = f"{len(failed)} of {len(sums)} evaluation episodes failed"
    if stages:
        head += "; stuck at: " + ", ".join(f"{k} x{v}" for k, v in stages.most_common())
    lines = [head + ". Failed episodes:"]
    lines += [f"- {describe(x)}" for x in failed[: s.max_episodes]]
    if len(failed) > s.max_episodes:
        lines.append(f"- ... and {len(failed) - s.max_episodes} more")
    return "\n".join(lines)


__all__ = ["STAGES", "AnalyserSettings", "analyse_failures", "describe", "summarise_episode"]
