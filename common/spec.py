"""The one observation/action contract shared by simulation, training and the robot.

A policy is only meaningful on the embodiment it was trained for: the same action
vector means "move 1 cm" on one setup and "move 5 cm" on another. So every env
(MuJoCo task, outside benchmark, later the ROS bridge) publishes an
``EmbodimentSpec``, every checkpoint stores the spec it was trained with, and
loading a checkpoint against a different spec fails with the list of differences
instead of quietly driving the arm somewhere unexpected.

This module is plain Python + numpy on purpose: ``sim``, ``policies``, ``rewards``
and ``robot`` all import it, and none of them should drag MuJoCo, torch or ROS in
through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class SpecMismatchError(ValueError):
    """Raised when a checkpoint, observation or command does not fit an embodiment."""


@dataclass(frozen=True)
class ObsField:
    """One entry of the observation dict.

    ``privileged`` marks ground truth that the simulator knows for free but a real
    robot only gets from extra sensing (object poses from a tracker, say). Policies
    may use it; the flag lets a deployment check that something provides it.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"  # "float32" for state, "uint8" for images (H, W, 3)
    frame: str = "base"  # "base" (robot base frame), "world", "camera", "joint" or "none"
    units: str = ""  # "m", "m/s", "rad", "rad/s", "1" (unitless), "px" ...
    privileged: bool = False
    description: str = ""

    @property
    def is_image(self) -> bool:
        return self.dtype == "uint8" and len(self.shape) == 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True)
class ActionSpec:
    """A normalised action vector in [-1, 1]^dim and what each entry means.

    ``layout`` names each entry, e.g. ("dx", "dy", "dz", "dyaw", "gripper").
    ``scale`` maps a unit action to a physical command per control step
    (metres for dx/dy/dz, radians for dyaw, unitless for the gripper, where
    -1 is closed and +1 open). Meta-World keeps this layout with its own 1 cm
    scale; benchmarks without Cartesian semantics (dm_control) use layout
    ("a0", "a1", ...) with the scale that maps [-1, 1] onto their bounds.
    """

    layout: tuple[str, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.layout) != len(self.scale):
            raise ValueError(f"action layout {self.layout} and scale {self.scale} differ in length")

    @property
    def dim(self) -> int:
        return len(self.layout)


@dataclass(frozen=True)
class EmbodimentSpec:
    """What a robot (or benchmark) accepts and returns, at which rate, within which box."""

    name: str  # e.g. "panda/reach", "metaworld/reach-v3"
    control_hz: float
    action: ActionSpec
    observations: tuple[ObsField, ...]
    # Cartesian workspace box for the end effector, robot base frame, metres.
    # None for benchmarks that do not expose one.
    workspace_low: tuple[float, float, float] | None = None
    workspace_high: tuple[float, float, float] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # free-form, not compared

    # ---- lookup -----------------------------------------------------------
    def field(self, name: str) -> ObsField:
        for f in self.observations:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no observation {name!r}; it has {self.obs_names}")

    @property
    def obs_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.observations)

    @property
    def state_fields(self) -> tuple[ObsField, ...]:
        """Non-image fields, in declaration order (what a state-based policy reads)."""
        return tuple(f for f in self.observations if not f.is_image)

    @property
    def image_fields(self) -> tuple[ObsField, ...]:
        return tuple(f for f in self.observations if f.is_image)

    @property
    def state_dim(self) -> int:
        return sum(f.size for f in self.state_fields)

    # ---- checks -----------------------------------------------------------
    def check_observation(self, obs: Mapping[str, np.ndarray], *, allow_nonfinite: bool = False) -> None:
        """Raise SpecMismatchError naming every missing key, bad shape or non-finite value."""
        problems: list[str] = []
        for f in self.observations:
            if f.name not in obs:
                problems.append(f"missing {f.name!r}")
                continue
            value = np.asarray(obs[f.name])
            if tuple(value.shape) != tuple(f.shape):
                problems.append(f"{f.name!r} has shape {value.shape}, spec says {f.shape}")
            elif not allow_nonfinite and not f.is_image and not np.all(np.isfinite(value)):
                problems.append(f"{f.name!r} contains NaN or inf")
        if problems:
            raise SpecMismatchError(f"observation does not fit {self.name}: " + "; ".join(problems))

    def differences(self, other: EmbodimentSpec) -> list[str]:
        """Human-readable list of what differs in ways that change a policy's meaning."""
        diffs: list[str] = []
        if self.name != other.name:
            diffs.append(f"name {self.name!r} != {other.name!r}")
        if not np.isclose(self.control_hz, other.control_hz):
            diffs.append(f"control rate {self.control_hz} Hz != {other.control_hz} Hz")
        if self.action.layout != other.action.layout:
            diffs.append(f"action layout {self.action.layout} != {other.action.layout}")
        elif not np.allclose(self.action.scale, other.action.scale):
            diffs.append(f"action scale {self.action.scale} != {other.action.scale}")
        mine = {f.name: f for f in self.observations}
        theirs = {f.name: f for f in other.observations}
        for name in sorted(set(mine) | set(theirs)):
            if name not in theirs:
                diffs.append(f"observation {name!r} missing in {other.name}")
            elif name not in mine:
                diffs.append(f"observation {name!r} not in {self.name}")
            else:
                a, b = mine[name], theirs[name]
                for attr in ("shape", "dtype", "frame", "units"):
                    if getattr(a, attr) != getattr(b, attr):
                        diffs.append(f"observation {name!r} {attr} {getattr(a, attr)} != {getattr(b, attr)}")
        for attr in ("workspace_low", "workspace_high"):
            a, b = getattr(self, attr), getattr(other, attr)
            if (a is None) != (b is None) or (a is not None and not np.allclose(a, b)):
                diffs.append(f"{attr} {a} != {b}")
        return diffs

    def require_compatible(self, other: EmbodimentSpec, what: str = "checkpoint") -> None:
        """Raise with every difference if ``other`` (e.g. the robot) does not match ``self``."""
        diffs = self.differences(other)
        if diffs:
            raise SpecMismatchError(
                f"{what} was trained for {self.name!r} and refuses to run on {other.name!r}: "
                + "; ".join(diffs)
            )

    # ---- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmbodimentSpec:
        action = d["action"]
        return cls(
            name=d["name"],
            control_hz=float(d["control_hz"]),
            action=ActionSpec(layout=tuple(action["layout"]), scale=tuple(float(s) for s in action["scale"])),
            observations=tuple(
                ObsField(**{**f, "shape": tuple(int(s) for s in f["shape"])}) for f in d["observations"]
            ),
            workspace_low=None if d.get("workspace_low") is None else tuple(d["workspace_low"]),
            workspace_high=None if d.get("workspace_high") is None else tuple(d["workspace_high"]),
            extra=dict(d.get("extra", {})),
        )


def flatten_state(spec: EmbodimentSpec, obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Concatenate the spec's state fields of one observation (or a batch) into float32 vectors.

    Works on a single observation (each value shaped like the field) and on a batch
    (each value with one leading batch axis).
    """
    parts = []
    for f in spec.state_fields:
        v = np.asarray(obs[f.name], dtype=np.float32)
        batch_shape = v.shape[: v.ndim - len(f.shape)]
        parts.append(v.reshape(*batch_shape, f.size))
    return np.concatenate(parts, axis=-1)


def unflatten_state(spec: EmbodimentSpec, flat: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of :func:`flatten_state`: state vectors ``(..., state_dim)`` back to named fields."""
    flat = np.asarray(flat)
    if flat.shape[-1] != spec.state_dim:
        raise SpecMismatchError(f"state vectors have {flat.shape[-1]} values, {spec.name} has {spec.state_dim}")
    out, i = {}, 0
    for f in spec.state_fields:
        out[f.name] = flat[..., i : i + f.size].reshape(*flat.shape[:-1], *f.shape)
        i += f.size
    return out
