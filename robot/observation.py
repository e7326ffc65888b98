"""Where each observation field of an embodiment spec comes from on ROS, and assembling them.

A policy trained in simulation reads a dict of named fields (``common.spec``). On a
robot each field is read from a standard message:

=============  ==========================================  =====================
kind           message                                     part
=============  ==========================================  =====================
``pose``       geometry_msgs/PoseStamped                   position | yaw | quat
``twist``      geometry_msgs/TwistStamped                  linear | angular
``joints``     sensor_msgs/JointState (named joints)       position | velocity
``image``      sensor_msgs/Image (rgb8 or bgr8)            rgb
=============  ==========================================  =====================

:func:`default_sources` gives the mapping the MuJoCo sim robot publishes (and that a
real arm's drivers plus a perception node would publish under the same names); any
entry can be replaced from a YAML file (``observation_map`` parameter of the policy node).

:class:`ObservationAssembler` keeps the newest value and stamp of every field and
builds an observation only when every field is present, finite, no older than
``staleness`` seconds, and all stamps lie within ``max_skew`` of each other (time
alignment); otherwise it says what is wrong, and the policy node sends nothing (the
safety layer's watchdog then holds the arm). Camera images (``image_<camera>`` fields,
for a pixel policy; :func:`image_sources`) are kept as uint8 and have their own staleness
limit, since cameras run slower than joint states. Pure Python, no rclpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from common.spec import EmbodimentSpec

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))  # the Panda model's joint names
GRIPPER_JOINT = "gripper"  # sim convention: a virtual joint whose position is the openness in [0, 1]


@dataclass(frozen=True)
class Source:
    kind: str  # pose | twist | joints | image
    topic: str
    part: str  # pose: position|yaw|quat; twist: linear|angular; joints: position|velocity; image: rgb
    names: tuple[str, ...] = ()  # joints: which joints, in order

    def __post_init__(self) -> None:
        parts = {"pose": ("position", "yaw", "quat"), "twist": ("linear", "angular"), "joints": ("position", "velocity"),
                 "image": ("rgb",)}
        if self.kind not in parts:
            raise ValueError(f"source kind {self.kind!r} unknown; allowed: {', '.join(parts)}")
        if self.part not in parts[self.kind]:
            raise ValueError(f"source part {self.part!r} for kind {self.kind}; allowed: {', '.join(parts[self.kind])}")
        if self.kind == "joints" and not self.names:
            raise ValueError(f"joints source on {self.topic} needs joint names")


def default_sources(spec: EmbodimentSpec) -> dict[str, list[Source]]:
    """Field name -> its sources (one per field; several for ``keypoints``, one per keypoint)."""
    table: dict[str, list[Source]] = {
        "ee_pos": [Source("pose", "ee_pose", "position")],
        "ee_yaw": [Source("pose", "ee_pose", "yaw")],
        "ee_vel": [Source("twist", "ee_twist", "linear")],
        "gripper": [Source("joints", "/joint_states", "position", (GRIPPER_JOINT,))],
        "joint_pos": [Source("joints", "/joint_states", "position", ARM_JOINTS)],
        "joint_vel": [Source("joints", "/joint_states", "velocity", ARM_JOINTS)],
        "goal_pos": [Source("pose", "objects/goal/pose", "position")],
        "object_pos": [Source("pose", "objects/object/pose", "position")],
        "object_quat": [Source("pose", "objects/object/pose", "quat")],
        "drawer_pos": [Source("joints", "objects/joint_states", "position", ("drawer",))],
        "keypoints": [Source("pose", f"keypoints/{n}", "position") for n in spec.extra.get("keypoint_names", ())],
    }
    return {f.name: table[f.name] for f in spec.state_fields if f.name in table}


def image_sources(spec: EmbodimentSpec) -> dict[str, list[Source]]:
    """``image_<camera>`` field -> the sim robot's (and a ROS camera driver's usual) topic
    ``camera/<camera>/image_raw``."""
    return {f.name: [Source("image", f"camera/{f.name.removeprefix('image_')}/image_raw", "rgb")]
            for f in spec.image_fields}


def load_sources(spec: EmbodimentSpec, overrides: Mapping[str, object] | None,
                 images: bool = False) -> dict[str, list[Source]]:
    """Defaults with entries replaced from a mapping (a parsed YAML file):
    ``field: {kind, topic, part, names}`` or a list of those (keypoints). ``images``: the spec's
    camera fields too (a pixel policy reads them; other nodes subscribe to cameras themselves)."""
    sources = default_sources(spec)
    if images:
        sources.update(image_sources(spec))
    for name, entry in (overrides or {}).items():
        if name not in spec.obs_names:
            raise ValueError(f"observation_map names {name!r}, which {spec.name} does not have; fields: {spec.obs_names}")
        entries = entry if isinstance(entry, list) else [entry]
        sources[name] = [Source(e["kind"], e["topic"], e["part"], tuple(e.get("names", ()))) for e in entries]
    missing = [f.name for f in spec.state_fields if f.name not in sources]
    if images:
        missing += [f.name for f in spec.image_fields if f.name not in sources]
    if missing:
        raise ValueError(f"no ROS source for observation fields {missing} of {spec.name}; add them to observation_map")
    return sources


class ObservationAssembler:
    def __init__(self, spec: EmbodimentSpec, sources: Mapping[str, list[Source]], staleness: float = 0.25,
                 max_skew: float = 0.15, image_staleness: float | None = None) -> None:
        self.spec, self.sources = spec, dict(sources)
        self.staleness, self.max_skew = float(staleness), float(max_skew)
        self.image_staleness = self.staleness if image_staleness is None else float(image_staleness)
        # State fields always; image fields when they have a source (a pixel policy's cameras).
        self.fields = tuple(f for f in spec.observations if not f.is_image or f.name in self.sources)
        self._images = {f.name for f in self.fields if f.is_image}
        # latest (value, stamp) per (field, index of source)
        self.latest: dict[tuple[str, int], tuple[np.ndarray, float]] = {}

    def put(self, field: str, index: int, value: np.ndarray, stamp: float) -> None:
        value = np.asarray(value, np.uint8 if field in self._images else np.float32)
        self.latest[(field, index)] = (value, float(stamp))

    def assemble(self, now: float) -> tuple[dict[str, np.ndarray] | None, list[str]]:
        """(observation, []) when everything is fresh, aligned and finite; else (None, problems)."""
        problems: list[str] = []
        obs: dict[str, np.ndarray] = {}
        stamps: list[float] = []
        for f in self.fields:
            parts = []
            limit = self.image_staleness if f.is_image else self.staleness
            for i, src in enumerate(self.sources[f.name]):
                got = self.latest.get((f.name, i))
                if got is None:
                    problems.append(f"{f.name}: nothing received on {src.topic}")
                    continue
                value, stamp = got
                if now - stamp > limit:
                    problems.append(f"{f.name}: {src.topic} is {now - stamp:.3f} s old (> {limit} s)")
                if not f.is_image and not np.all(np.isfinite(value)):
                    problems.append(f"{f.name}: non-finite value from {src.topic}")
                parts.append(value)
                if not f.is_image:  # a 10 Hz camera lags 100 Hz state by design: images are held
                    stamps.append(stamp)  # to image_staleness instead of the skew limit
            if len(parts) == len(self.sources[f.name]):
                value = np.stack(parts) if f.name == "keypoints" else parts[0]
                if f.is_image and value.shape != f.shape:
                    problems.append(f"{f.name}: got a {value.shape} image from {self.sources[f.name][0].topic}, "
                                    f"spec says {f.shape}")
                elif value.size != f.size:
                    problems.append(f"{f.name}: got {value.size} values, spec says shape {f.shape}")
                else:
                    obs[f.name] = value.reshape(f.shape)
        if stamps and max(stamps) - min(stamps) > self.max_skew:
            problems.append(f"inputs not time-aligned: stamps span {max(stamps) - min(stamps):.3f} s (> {self.max_skew} s)")
        return (None, problems) if problems else (obs, [])


def with_cameras(spec: EmbodimentSpec, cameras: list[str], size: int) -> EmbodimentSpec:
    """``spec`` plus ``image_<camera>`` fields (size x size RGB): what an image reward term or a pixel
    policy reads, or a recorder stores. The fields are the sim tasks' own (sim/panda/base.py), so a
    pixel checkpoint trained in sim matches a robot spec built this way."""
    from dataclasses import replace

    from common.spec import ObsField

    extra = tuple(ObsField(f"image_{c}", (size, size, 3), dtype="uint8", frame="camera", units="px",
                           description=f"RGB from camera {c!r}")
                  for c in cameras if f"image_{c}" not in spec.obs_names)
    return replace(spec, observations=spec.observations + extra)


def robot_spec(task: str, spec_file: str) -> EmbodimentSpec:
    """The spec the robot follows: from a file if given, else from the named sim task (every node
    that reads or commands the robot builds its spec here)."""
    if spec_file:
        text = Path(spec_file).read_text()
        data = json.loads(text) if spec_file.endswith(".json") else yaml.safe_load(text)
        return EmbodimentSpec.from_dict(data)
    if not task:
        raise ValueError("set parameter embodiment_task (a sim task id) or embodiment_file (a spec file)")
    import sim

    env = sim.make(task)
    try:
        return env.unwrapped.embodiment
    finally:
        env.close()
