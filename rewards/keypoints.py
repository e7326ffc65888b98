"""Keypoint rewards: progress along a sequence of waypoints defined relative to named points (KAGI).

A task is written as a short list of waypoints over named 3D points ("keypoints"):
"pinch over the object", "pinch at the object with the gripper closed", "object at the
goal". Each :class:`Waypoint` says which point moves, where it should be (another
keypoint plus an offset in metres, robot base frame, or a fixed base-frame position), how
close is close enough, and optionally what the gripper must be doing.

Where the points come from
--------------------------
* ``source: sim``: the observation's ``keypoints`` field ``(K, 3)``, names in
  ``spec.extra["keypoint_names"]`` (the Panda tasks publish pinch, object/handle, goal).
* ``source: camera``: 2D pixels of named points (``obs[uv_key]``, ``(K, 2)``) plus depth
  (a depth image ``(H, W)`` in metres, or one depth per point ``(K,)``), back-projected
  through a pinhole :class:`CameraModel` into the base frame. This is what a robot with an
  RGB-D camera and a 2D point tracker provides; the fingertips then come from
  proprioception (``ee_pos``). :meth:`CameraModel.from_mujoco` derives the same model
  from a MuJoCo camera, so the two sources can be checked against each other in sim.

The reward (all of it a function of one observation, so relabelling stored data gives
the same numbers as the online loop)
------------------------------------------------------------------------------------------
For waypoint i with moving point p and target q (keypoint + offset), the distance is the
Euclidean norm over the waypoint's ``axes``; with a ``direction`` u it is one-sided:
overshooting along u costs nothing, ``d = sqrt(max(0, (q - p).u)^2 + |perp|^2)``.
Waypoint i is *satisfied* when ``d_i <= tolerance_i`` and its gripper requirement holds.

* stage (``stage_rule: latest``, default): ``1 + max{i : waypoint i satisfied}``, 0 if
  none. Reaching a later waypoint counts the earlier ones as done, which is what lets a
  stateless rule survive waypoints that stop holding once passed (the pinch leaves the
  pre-grasp pose when it descends). ``stage_rule: first_unsatisfied`` is the strict form:
  the number of leading satisfied waypoints (the index of the first unsatisfied one).
* closeness to the current waypoint ``c = 1 - tanh(d / scale)`` in (0, 1]; 0 once every
  waypoint is satisfied.
* potential ``Phi(s) = (stage + c) / N`` in [0, 1] (N waypoints).
* dense reward ``r_dense = Phi(s')``.
* sparse reward ``r_sparse = success_reward`` when the final waypoint holds at s' (or the
  reward of a configured ``sparse`` term), else 0.
* KAGI's combination: ``r = r_sparse if r_sparse != 0 else r_dense``.
* optional potential-based shaping (Ng, Harada & Russell 1999): ``F = gamma Phi(s') -
  Phi(s)`` with ``Phi(s') = 0`` on terminal transitions; adding ``shaping_weight * F`` to any
  reward leaves its optimal policies unchanged. ``dense: false`` with shaping gives the
  textbook form ``r = r_sparse + w F``.

``RewardOutput.success`` is "final waypoint satisfied at s'" (or the sparse term's verdict).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.spec import EmbodimentSpec
from rewards.base import RewardConfigError, RewardOutput, RewardTerm, Transitions, register

WAYPOINT_DIR = Path(__file__).resolve().parents[1] / "configs" / "reward" / "waypoints"
BASE = "base"  # target name for a fixed base-frame position (the offset is the position)
EE_ALIASES = ("ee", "ee_pos")  # read from obs["ee_pos"] (proprioception), never from keypoints
GRIPPER_STATES = ("open", "closed")
AXES = ("xyz", "xy", "xz", "yz", "x", "y", "z")
STAGE_RULES = ("latest", "first_unsatisfied")
SOURCES = ("sim", "camera")


# ---------------------------------------------------------------------------
# cameras: pixels <-> base frame


@dataclass(frozen=True)
class CameraModel:
    """Pinhole camera with OpenCV axes (x right, y down, z forward) and its pose in the base frame.

    Pixel coordinates are continuous: pixel column ``i`` covers ``[i, i + 1)``, so its centre
    is ``u = i + 0.5``, and row 0 is the top of the image. ``rotation`` maps camera axes to
    base axes (its columns are the camera axes written in the base frame) and ``position``
    is the optical centre; depth is the z coordinate in the camera frame (metres along the
    optical axis, what MuJoCo's depth renderer and most RGB-D drivers report).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    position: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        rot = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4):
            raise ValueError("camera rotation must be orthonormal (camera axes in the base frame)")
        object.__setattr__(self, "rotation", rot)
        object.__setattr__(self, "position", np.asarray(self.position, dtype=np.float64).reshape(3))
        if self.width < 1 or self.height < 1 or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"bad camera intrinsics {self.width}x{self.height} fx={self.fx} fy={self.fy}")

    @classmethod
    def from_mujoco(cls, model: Any, data: Any, camera: str | int, width: int, height: int) -> CameraModel:
        """The camera MuJoCo renders for ``camera`` at ``width`` x ``height`` (after ``mj_forward``).

        MuJoCo's ``fovy`` is the vertical field of view and pixels are square, so
        ``fy = fx = (height / 2) / tan(fovy / 2)`` with the principal point at the image
        centre. A MuJoCo camera looks along its -z axis with y up; flipping y and z gives
        the OpenCV axes: ``R = xmat @ diag(1, -1, -1)``.
        """
        cam_id = model.camera(camera).id if isinstance(camera, str) else int(camera)
        sensor = getattr(model, "cam_sensorsize", None)
        if sensor is not None and np.any(np.asarray(sensor[cam_id]) > 0):
            raise NotImplementedError("cameras with sensorsize/focal (physical intrinsics) are not supported yet")
        fovy = math.radians(float(model.cam_fovy[cam_id]))
        f = 0.5 * height / math.tan(0.5 * fovy)
        xmat = np.asarray(data.cam_xmat[cam_id], dtype=np.float64).reshape(3, 3)
        return cls(width=int(width), height=int(height), fx=f, fy=f, cx=0.5 * width, cy=0.5 * height,
                   rotation=xmat @ np.diag([1.0, -1.0, -1.0]), position=np.array(data.cam_xpos[cam_id]))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "camera") -> CameraModel:
        """From config: ``width, height, fx, fy, cx, cy, position: [x, y, z]`` and either
        ``rotation`` (3x3, camera axes as columns) or ``quat`` (w, x, y, z), camera -> base."""
        need = ("width", "height", "fx", "fy", "cx", "cy", "position")
        missing = [k for k in need if k not in d]
        if missing or ("rotation" in d) == ("quat" in d):
            raise RewardConfigError(f"{where} needs {list(need)} and exactly one of rotation (3x3) or quat "
                                    f"(w, x, y, z); missing {missing or ['rotation/quat']}")
        rot = np.asarray(d["rotation"], float) if "rotation" in d else _quat_to_mat(np.asarray(d["quat"], float))
        try:
            return cls(int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]),
                       float(d["cy"]), rot, np.asarray(d["position"], float))
        except ValueError as e:
            raise RewardConfigError(f"{where}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy, "cx": self.cx,
                "cy": self.cy, "rotation": self.rotation.tolist(), "position": self.position.tolist()}

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Base-frame points ``(..., 3)`` -> pixels ``(..., 2)`` (u, v) and depth ``(...,)``.

        ``p_cam = R^T (p - t)``; ``u = fx x / z + cx``, ``v = fy y / z + cy``. Points behind
        the camera get depth <= 0 (and meaningless pixels); check ``depth > 0``.
        """
        p = (np.asarray(points, np.float64) - self.position) @ self.rotation  # = R^T (p - t), row-wise
        z = p[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx * p[..., 0] / z + self.cx, self.fy * p[..., 1] / z + self.cy], axis=-1)
        return uv, z

    def backproject(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Pixels ``(..., 2)`` with depths ``(...,)`` -> base-frame points ``(..., 3)``.

        ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``, then ``p = R p_cam + t``.
        """
        uv, z = np.asarray(uv, np.float64), np.asarray(depth, np.float64)
        p_cam = np.stack([(uv[..., 0] - self.cx) * z / self.fx, (uv[..., 1] - self.cy) * z / self.fy, z], -1)
        return p_cam @ self.rotation.T + self.position

    def in_image(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, np.float64)
        return (uv[..., 0] >= 0) & (uv[..., 0] < self.width) & (uv[..., 1] >= 0) & (uv[..., 1] < self.height)

    def sample_depth(self, depth_image: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Depth at pixels ``uv`` (nearest pixel) from ``(..., H, W)`` images; NaN outside the image.

        ``depth_image`` has the same leading axes as ``uv[..., 0, :]`` (one image per batch
        element, K points each) or none (one image for all points).
        """
        img = np.asarray(depth_image, np.float64)
        uv = np.asarray(uv, np.float64)
        if img.shape[-2:] != (self.height, self.width):
            raise ValueError(f"depth image is {img.shape[-2:]}, camera is {self.height}x{self.width}")
        inside = self.in_image(uv) & np.all(np.isfinite(uv), axis=-1)
        col = np.where(inside, np.floor(np.nan_to_num(uv[..., 0])), 0).astype(np.int64)
        row = np.where(inside, np.floor(np.nan_to_num(uv[..., 1])), 0).astype(np.int64)
        if img.ndim == 2:
            z = img[row, col]
        else:  # (B, H, W) with uv (B, K, 2)
            b = np.arange(img.shape[0]).reshape(-1, *([1] * (uv.ndim - 2)))
            z = img[b, row, col]
        return np.where(inside, z, np.nan)


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def render_rgbd(model: Any, data: Any, camera: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, CameraModel]:
    """RGB ``(H, W, 3)`` uint8, depth ``(H, W)`` metres and the :class:`CameraModel` of one MuJoCo view.

    For tests, the VLM keypoint proposal and calibration checks; callers in processes that
    also use torch must have called ``sim.gl.before_gl_context()`` (done here when ``sim`` is
    importable).
    """
    try:
        from sim.gl import before_gl_context

        before_gl_context()
    except ImportError:  # pragma: no cover - outside the repository
        pass
    import mujoco

    renderer = mujoco.Renderer(model, height=height, width=width)
    try:
        renderer.update_scene(data, camera=camera)
        rgb = renderer.render().copy()
        renderer.enable_depth_rendering()
        renderer.update_scene(data, camera=camera)
        depth = renderer.render().copy()
    finally:
        renderer.close()
    return rgb, depth.astype(np.float32), CameraModel.from_mujoco(model, data, camera, width, height)


# ---------------------------------------------------------------------------
# waypoints


@dataclass(frozen=True)
class Waypoint:
    """One step of a task: ``point`` should be at ``target`` (+ ``offset``) within ``tolerance``.

    ``target`` is a keypoint name, or ``"base"`` for a fixed position (then ``offset`` is
    that position in the base frame). ``axes`` limits the distance to some coordinates
    (``xy``: "over", at any height). ``direction`` makes it one-sided: overshooting the
    target along that base-frame vector is fine (a drawer opened further than asked).
    ``gripper`` is ``open``/``closed``/None, judged from the ``gripper`` observation
    (openness 0..1) against the term's ``gripper_threshold``. ``scale`` overrides the
    term's closeness scale (metres at which closeness has dropped to 1 - tanh(1) = 0.24).
    """

    point: str
    target: str
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tolerance: float = 0.03
    gripper: str | None = None
    axes: str = "xyz"
    direction: tuple[float, float, float] | None = None
    scale: float | None = None
    name: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "waypoint") -> Waypoint:
        if not isinstance(d, Mapping):
            raise RewardConfigError(f"{where} must be a mapping with keys point, target, ...; got {d!r}")
        allowed = {"point", "target", "offset", "tolerance", "gripper", "axes", "direction", "scale", "name"}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise RewardConfigError(f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}")
        for key in ("point", "target"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise RewardConfigError(f"{where}.{key} must be a keypoint name (string), got {d.get(key)!r}")
        offset = _vec3(d.get("offset", (0.0, 0.0, 0.0)), f"{where}.offset")
        tol = d.get("tolerance", 0.03)
        if not isinstance(tol, int | float) or not 0.0 < float(tol) <= 1.0:
            raise RewardConfigError(f"{where}.tolerance must be a distance in (0, 1] metres, got {tol!r}")
        grip = d.get("gripper")
        if grip is not None and grip not in GRIPPER_STATES:
            raise RewardConfigError(f"{where}.gripper must be one of {list(GRIPPER_STATES)} or null, got {grip!r}")
        axes = d.get("axes", "xyz")
        if axes not in AXES:
            raise RewardConfigError(f"{where}.axes must be one of {list(AXES)}, got {axes!r}")
        direction = d.get("direction")
        if direction is not None:
            v = np.asarray(_vec3(direction, f"{where}.direction"))
            if np.linalg.norm(v) < 1e-9:
                raise RewardConfigError(f"{where}.direction must be a non-zero vector, got {direction!r}")
            direction = tuple(float(x) for x in v / np.linalg.norm(v))
        scale = d.get("scale")
        if scale is not None and (not isinstance(scale, int | float) or float(scale) <= 0):
            raise RewardConfigError(f"{where}.scale must be a positive distance in metres or null, got {scale!r}")
        return cls(point=d["point"], target=d["target"], offset=offset, tolerance=float(tol), gripper=grip,
                   axes=axes, direction=direction, scale=None if scale is None else float(scale),
                   name=str(d.get("name", "")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "point": self.point, "target": self.target,
                               "offset": [round(float(x), 6) for x in self.offset],
                               "tolerance": self.tolerance, "gripper": self.gripper, "axes": self.axes}
        if self.direction is not None:
            out["direction"] = [round(float(x), 6) for x in self.direction]
        if self.scale is not None:
            out["scale"] = self.scale
        return out

    @property
    def names(self) -> tuple[str, ...]:
        """Keypoints this waypoint reads (``base`` excluded)."""
        return tuple(n for n in (self.point, self.target) if n != BASE)


def _vec3(v: Any, where: str) -> tuple[float, float, float]:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise RewardConfigError(f"{where} must be three finite numbers [x, y, z] (metres, base frame), got {v!r}")
    return (float(a[0]), float(a[1]), float(a[2]))


def available_waypoint_files(directory: Path = WAYPOINT_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_waypoints(source: str | Sequence[Mapping[str, Any]], directory: Path | str = WAYPOINT_DIR,
                   where: str = "reward.params.waypoints") -> tuple[list[Waypoint], dict[str, Any]]:
    """Waypoints from a name (``configs/reward/waypoints/<name>.yaml``), a YAML path, or an inline list.

    Returns the waypoints and the file's other top-level keys (``keypoints``, ``description``).
    """
    meta: dict[str, Any] = {}
    if isinstance(source, str):
        path = Path(source) if source.endswith((".yaml", ".yml")) or "/" in source else Path(directory) / f"{source}.yaml"
        if not path.is_file():
            raise RewardConfigError(
                f"{where}={source!r}: no waypoint file {path}; available in {directory}: "
                f"{', '.join(available_waypoint_files(Path(directory))) or '(none)'} (or give a path to a .yaml file, "
                "or an inline list of waypoints)")
        import yaml

        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise RewardConfigError(f"{where}={source!r}: {path} is not valid YAML: {e}") from e
        if not isinstance(doc, Mapping) or "waypoints" not in doc:
            raise RewardConfigError(f"{where}={source!r}: {path} must be a mapping with a 'waypoints' list")
        meta = {k: v for k, v in doc.items() if k != "waypoints"}
        items, where = doc["waypoints"], f"{path.name}: waypoints"
    else:
        items = source
    if not isinstance(items, Sequence) or isinstance(items, str | bytes) or not items:
        raise RewardConfigError(f"{where} must be a non-empty list of waypoints ({{point, target, offset, "
                                f"tolerance, gripper}}), got {items!r}")
    return [Waypoint.from_dict(w, f"{where}[{i}]") for i, w in enumerate(items)], meta


# ---------------------------------------------------------------------------
# where the points come from


class SimKeypoints:
    """Points from the observation's ``keypoints`` field (names in the spec), ``ee``/``ee_pos`` from proprioception."""

    def __init__(self, names: Sequence[str] | None, explicit: bool = False) -> None:
        self.names = None if names is None else list(names)
        self.explicit = explicit  # names given in the config (must then match the spec's)

    @property
    def requires(self) -> tuple[str, ...]:
        return ("keypoints",)

    def available(self) -> list[str]:
        return [*(self.names or []), *EE_ALIASES]

    def positions(self, obs: Mapping[str, np.ndarray], wanted: Sequence[str]) -> dict[str, np.ndarray]:
        if self.names is None:
            raise RewardConfigError("the keypoint reward does not know the keypoint names yet: bind it to the "
                                    "task's spec, or set reward.params.keypoint_names")
        out: dict[str, np.ndarray] = {}
        kp = None
        for n in wanted:
            if n in EE_ALIASES:
                out[n] = np.asarray(obs["ee_pos"], np.float64).reshape(-1, 3)
                continue
            if kp is None:
                kp = np.asarray(obs["keypoints"], np.float64)
                kp = kp.reshape(-1, *kp.shape[-2:])
                if kp.shape[-2] != len(self.names):
                    raise ValueError(f"observation has {kp.shape[-2]} keypoints, names say {self.names}")
            out[n] = kp[:, self.names.index(n)]
        return out


class CameraKeypoints:
    """Points from 2D pixels + depth through a :class:`CameraModel`; ``ee``/``ee_pos`` from proprioception.

    ``obs[uv_key]``: ``(K, 2)`` pixels (u, v) of ``names``; ``obs[depth_key]``: a depth image
    ``(H, W)`` in metres (sampled at each pixel) or per-point depths ``(K,)``. A point
    outside the image or without depth comes out NaN, which the reward treats as "not
    satisfied, closeness 0" rather than guessing.
    """

    def __init__(self, camera: CameraModel, names: Sequence[str], uv_key: str, depth_key: str) -> None:
        self.camera, self.names, self.uv_key, self.depth_key = camera, list(names), uv_key, depth_key

    @property
    def requires(self) -> tuple[str, ...]:
        return (self.uv_key, self.depth_key)

    def available(self) -> list[str]:
        return [*self.names, *EE_ALIASES]

    def positions(self, obs: Mapping[str, np.ndarray], wanted: Sequence[str]) -> dict[str, np.ndarray]:
        uv = np.asarray(obs[self.uv_key], np.float64)
        uv = uv.reshape(-1, len(self.names), 2)
        depth = np.asarray(obs[self.depth_key], np.float64)
        cam = self.camera
        if depth.shape[-2:] == (cam.height, cam.width):
            z = cam.sample_depth(depth.reshape(-1, cam.height, cam.width), uv)
        else:
            z = np.where(cam.in_image(uv), depth.reshape(-1, len(self.names)), np.nan)
        z = np.where(z > 0, z, np.nan)
        pts = cam.backproject(uv, z)
        out = {}
        for n in wanted:
            if n in EE_ALIASES:
                out[n] = np.asarray(obs["ee_pos"], np.float64).reshape(-1, 3)
            else:
                out[n] = pts[:, self.names.index(n)]
        return out


# ---------------------------------------------------------------------------
# the reward term


_AXIS_MASK = {a: np.array([c in a for c in "xyz"], dtype=np.float64) for a in AXES}


class KeypointReward(RewardTerm):
    """Dense progress along waypoints, overridden by a sparse success reward (see the module doc)."""

    name = "keypoints"

    def __init__(
        self,
        waypoints: Sequence[Waypoint] | None,
        source: SimKeypoints | CameraKeypoints,
        *,
        success_reward: float = 2.0,
        dense: bool = True,
        shaping_weight: float = 0.0,
        gamma: float = 0.99,
        stage_rule: str = "latest",
        scale: float = 0.2,
        gripper_threshold: float = 0.7,
        sparse: RewardTerm | None = None,
        waypoint_source: str | None = None,
        waypoints_dir: Path | str = WAYPOINT_DIR,
    ) -> None:
        if stage_rule not in STAGE_RULES:
            raise RewardConfigError(f"reward.params.stage_rule={stage_rule!r}; allowed: {', '.join(STAGE_RULES)}")
        if not 0.0 <= gamma <= 1.0:
            raise RewardConfigError(f"reward.params.gamma={gamma} must be in [0, 1]")
        if scale <= 0:
            raise RewardConfigError(f"reward.params.scale={scale} must be a positive distance in metres")
        if not 0.0 < gripper_threshold < 1.0:
            raise RewardConfigError(f"reward.params.gripper_threshold={gripper_threshold} must be in (0, 1)")
        self.source = source
        self.success_reward, self.dense, self.shaping_weight = float(success_reward), bool(dense), float(shaping_weight)
        self.gamma, self.stage_rule, self.scale = float(gamma), stage_rule, float(scale)
        self.gripper_threshold = float(gripper_threshold)
        self.sparse = sparse
        self.waypoint_source, self.waypoints_dir = waypoint_source, Path(waypoints_dir)
        self.waypoints: list[Waypoint] = []
        if waypoints is not None:
            self._set_waypoints(list(waypoints))

    # ---- setup ------------------------------------------------------------
    def _set_waypoints(self, waypoints: list[Waypoint]) -> None:
        if not waypoints:
            raise RewardConfigError("reward.params.waypoints: the sequence is empty")
        self.waypoints = waypoints
        self._update_requires()

    def _update_requires(self) -> None:
        req = list(self.source.requires)
        if any(n in EE_ALIASES for w in self.waypoints for n in w.names) or isinstance(self.source, CameraKeypoints):
            req.append("ee_pos")
        if any(w.gripper for w in self.waypoints):
            req.append("gripper")
        req += list(self.sparse.requires) if self.sparse is not None else []
        self.requires = tuple(dict.fromkeys(req))

    def bind(self, spec: EmbodimentSpec) -> RewardTerm:
        """Resolve ``waypoints: auto`` from the task's spec (``panda/reach`` -> ``reach.yaml``),
        take the keypoint names from it, and check every waypoint refers to a known point."""
        if isinstance(self.source, SimKeypoints):
            names = list(spec.extra.get("keypoint_names") or []) if spec.extra else []
            if not names:
                raise RewardConfigError(f"reward kind 'keypoints' reads keypoint positions, but {spec.name!r} "
                                        "publishes no keypoint_names (spec.extra); use source: camera or a task "
                                        "with keypoints (the Panda tasks)")
            if self.source.explicit and self.source.names != names:
                raise RewardConfigError(f"reward.params.keypoint_names={self.source.names} but {spec.name!r} "
                                        f"publishes keypoints {names}; drop the setting or make it match")
            self.source.names = names  # the spec is authoritative for the order of obs["keypoints"]
        if not self.waypoints:
            task = spec.name.split("/")[-1]
            if task not in available_waypoint_files(self.waypoints_dir):
                raise RewardConfigError(
                    f"reward.params.waypoints=auto: no waypoint file for task {task!r} (spec {spec.name!r}) in "
                    f"{self.waypoints_dir}; available: {', '.join(available_waypoint_files(self.waypoints_dir))}; "
                    "name one with reward.params.waypoints=<name>")
            self._set_waypoints(load_waypoints(task, self.waypoints_dir)[0])
        self._check_names()
        if self.sparse is not None:
            self.sparse.bind(spec)
        return super().bind(spec)

    def _check_names(self) -> None:
        known = set(self.source.available()) | {BASE}
        if isinstance(self.source, SimKeypoints) and self.source.names is None:
            return  # checked at bind time
        for i, w in enumerate(self.waypoints):
            bad = [n for n in (w.point, w.target) if n not in known or (n == BASE and n == w.point)]
            if bad:
                raise RewardConfigError(
                    f"reward.params.waypoints[{i}] ({w.name or w.point}) refers to {bad}; known points: "
                    f"{sorted(known - {BASE})} (targets may also be 'base': a fixed base-frame position)")

    # ---- evaluation -------------------------------------------------------
    def evaluate(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-observation progress: ``stage`` (B,), ``closeness`` (B,), ``distance`` (B,) to the current
        waypoint (m), ``potential`` (B,), ``satisfied`` (B, N), ``distances`` (B, N)."""
        if not self.waypoints:
            raise RewardConfigError("reward.params.waypoints=auto is resolved from the task: bind the term to "
                                    "the env's spec first (the training loop does), or name a waypoint file")
        wanted = list(dict.fromkeys(n for w in self.waypoints for n in w.names))
        pos = self.source.positions(obs, wanted)
        b = next(iter(pos.values())).shape[0] if pos else np.asarray(obs["ee_pos"]).reshape(-1, 3).shape[0]
        n = len(self.waypoints)
        dist = np.empty((b, n))
        sat = np.empty((b, n), dtype=bool)
        close = np.empty((b, n))
        openness = None
        if any(w.gripper for w in self.waypoints):
            openness = np.asarray(obs["gripper"], np.float64).reshape(b, -1)[:, 0]
        for i, w in enumerate(self.waypoints):
            target = np.asarray(w.offset) + (0.0 if w.target == BASE else pos[w.target])
            delta = (target - pos[w.point]) * _AXIS_MASK[w.axes]
            if w.direction is not None:
                u = np.asarray(w.direction) * _AXIS_MASK[w.axes]
                along = delta @ u
                perp = delta - along[:, None] * u
                d = np.sqrt(np.maximum(along, 0.0) ** 2 + np.sum(perp**2, axis=-1))
            else:
                d = np.linalg.norm(delta, axis=-1)
            ok = np.isfinite(d) & (np.nan_to_num(d, nan=np.inf) <= w.tolerance)
            if w.gripper is not None and openness is not None:
                ok &= (openness >= self.gripper_threshold) if w.gripper == "open" else (openness < self.gripper_threshold)
            dist[:, i], sat[:, i] = d, ok
            close[:, i] = np.where(np.isfinite(d), 1.0 - np.tanh(np.nan_to_num(d) / (w.scale or self.scale)), 0.0)
        if self.stage_rule == "latest":
            idx = np.where(sat, np.arange(1, n + 1), 0)
            stage = idx.max(axis=1)
        else:
            stage = np.where(sat.all(axis=1), n, np.argmin(sat, axis=1))
        cur = np.minimum(stage, n - 1)
        rows = np.arange(b)
        closeness = np.where(stage < n, close[rows, cur], 0.0)
        return {"stage": stage, "closeness": closeness, "distance": dist[rows, cur],
                "potential": (stage + closeness) / n, "satisfied": sat, "distances": dist}

    def compute(self, batch: Transitions) -> RewardOutput:
        nxt = self.evaluate(batch.next_obs)
        phi1 = nxt["potential"]
        success = nxt["satisfied"][:, -1]
        if self.sparse is not None:
            s_out = self.sparse(batch)
            r_sparse = s_out.reward.astype(np.float64)
            if s_out.success is not None:
                success = s_out.success
        else:
            r_sparse = self.success_reward * success.astype(np.float64)
        r_dense = phi1 if self.dense else np.zeros_like(phi1)
        fired = r_sparse != 0
        reward = np.where(fired, r_sparse, r_dense)  # KAGI: r = r_sparse if r_sparse != 0 else r_dense
        comps = {"stage": nxt["stage"], "closeness": nxt["closeness"], "distance": nxt["distance"],
                 "potential": phi1, "sparse": r_sparse, "dense": r_dense, "override": fired}
        if self.shaping_weight:
            phi0 = self.evaluate(batch.obs)["potential"]
            term = batch.info.get("terminated") if batch.info else None
            alive = 1.0 if term is None else 1.0 - np.asarray(term, np.float64).reshape(-1)
            shaping = self.gamma * phi1 * alive - phi0  # F = gamma Phi(s') - Phi(s) (Ng et al. 1999)
            reward = reward + self.shaping_weight * shaping
            comps["shaping"] = shaping
        return RewardOutput(reward, comps, success)

    def train_mode(self, on: bool) -> None:
        if self.sparse is not None:
            self.sparse.train_mode(on)

    def state_dict(self) -> dict[str, Any]:
        return {"sparse": self.sparse.state_dict()} if self.sparse is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.sparse is not None:
            self.sparse.load_state_dict(state.get("sparse", {}))


# ---------------------------------------------------------------------------
# config


PARAMS = ("waypoints", "waypoints_dir", "source", "keypoint_names", "camera", "uv_key", "depth_key",
          "success_reward", "dense", "shaping_weight", "gamma", "stage_rule", "scale", "gripper_threshold",
          "sparse", "vlm")


@register("keypoints")
def build_keypoints(params: Mapping[str, Any], spec: EmbodimentSpec | None) -> RewardTerm:
    """``reward=keypoints``; every param is documented in configs/reward/keypoints.yaml."""
    params = dict(params)
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise RewardConfigError(f"reward.params has unknown keys {unknown} for kind 'keypoints'; allowed: {list(PARAMS)}")
    source_kind = params.get("source", "sim")
    if source_kind not in SOURCES:
        raise RewardConfigError(f"reward.params.source={source_kind!r}; allowed: {', '.join(SOURCES)}")
    names = params.get("keypoint_names")
    if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
        raise RewardConfigError(f"reward.params.keypoint_names must be a list of names, got {names!r}")
    wdir = Path(params.get("waypoints_dir") or WAYPOINT_DIR)
    wsrc = params.get("waypoints", "auto")
    waypoints, file_names = None, None
    if not (isinstance(wsrc, str) and wsrc == "auto"):  # "auto" resolves in bind(), from the task's spec
        waypoints, meta = load_waypoints(wsrc, wdir)
        # Without a spec, the file's own list says what obs["keypoints"] holds; bind() replaces it.
        file_names = list(meta["keypoints"]) if meta.get("keypoints") else None
    if source_kind == "sim":
        source: SimKeypoints | CameraKeypoints = SimKeypoints(names or file_names, explicit=names is not None)
    else:
        cam = params.get("camera")
        if not isinstance(cam, Mapping):
            raise RewardConfigError("reward.params.camera must give the camera model (width, height, fx, fy, cx, "
                                    "cy, position, rotation|quat) when reward.params.source=camera")
        if not names:
            raise RewardConfigError("reward.params.keypoint_names must list the names of the tracked pixel points "
                                    "(in the order of obs[uv_key]) when reward.params.source=camera")
        source = CameraKeypoints(CameraModel.from_dict(cam, "reward.params.camera"), names,
                                 str(params.get("uv_key", "keypoints_uv")), str(params.get("depth_key", "depth_front")))
    sparse = None
    if params.get("sparse") is not None:
        from rewards.base import build

        if not isinstance(params["sparse"], Mapping):
            raise RewardConfigError("reward.params.sparse must be a term config ({kind, params}) or null")
        sparse = build(params["sparse"], spec, "reward.params.sparse")
    term = KeypointReward(
        waypoints, source,
        success_reward=_num(params, "success_reward", 2.0), dense=bool(params.get("dense", True)),
        shaping_weight=_num(params, "shaping_weight", 0.0), gamma=_num(params, "gamma", 0.99),
        stage_rule=str(params.get("stage_rule", "latest")), scale=_num(params, "scale", 0.2),
        gripper_threshold=_num(params, "gripper_threshold", 0.7), sparse=sparse,
        waypoint_source=wsrc if isinstance(wsrc, str) else "inline", waypoints_dir=wdir,
    )
    if term.waypoints:
        term._check_names()
    return term


def _num(params: Mapping[str, Any], key: str, default: float) -> float:
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
        raise RewardConfigError(f"reward.params.{key} must be a finite number, got {v!r}")
    return float(v)


__all__ = [
    "CameraKeypoints", "CameraModel", "KeypointReward", "SimKeypoints", "Waypoint", "available_waypoint_files",
    "build_keypoints", "load_waypoints", "render_rgbd",
]
