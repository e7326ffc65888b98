"""PandaEnv: the shared machinery of the Panda tabletop tasks.

Action (float32 in [-1, 1]): ``(dx, dy, dz, gripper)``, or ``(dx, dy, dz, dyaw,
gripper)`` with ``yaw=True``.

* ``dx, dy, dz`` move the Cartesian target of the fingertip ("pinch") site by
  ``action_scale`` metres per control step (default 0.05 m at 10 Hz = 0.5 m/s top
  speed, well under the Panda's 1.7 m/s). With that scale the 0.45 x 0.6 m workspace
  is crossed in ~12-15 steps, so a 50-step reach episode leaves most of its steps for
  the fine approach, while one unit action is still small next to the 3 cm success
  radius times the controller's lag. The target is the previous target plus the delta,
  clipped to the workspace box (base frame), then kept within ``max_target_lead``
  of the measured fingertip so that pushing against the table or a cabinet winds up no
  large force.
* ``dyaw`` turns the target yaw about the world z axis by ``yaw_scale`` rad per step
  (clipped to +-``yaw_limit``). Without ``yaw=True`` the gripper keeps yaw 0.
* ``gripper`` is continuous: -1 fully closed, +1 fully open; the Robotiq's position
  command is interpolated linearly in between.

Between control steps an operational-space controller (``controller.py``) turns the
target into joint torques at ``controller_hz`` on top of the 500 Hz physics.

Observation: a dict following ``self.embodiment`` (see ``proprio_fields``); tasks add
their own fields (goal, object pose, drawer opening, keypoints).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from common.spec import ActionSpec, EmbodimentSpec, ObsField
from sim.gl import before_gl_context
from sim.panda.controller import JointImpedanceController, OperationalSpaceController, yaw_of
from sim.panda.scene import HOME_QPOS, base_spec

DEFAULT_WORKSPACE_LOW = (0.30, -0.30, 0.01)
DEFAULT_WORKSPACE_HIGH = (0.75, 0.30, 0.40)
GRIPPER_CTRL_CLOSED = 255.0  # Robotiq 2F-85 command: 0 open .. 255 closed
GRIPPER_TENDON_CLOSED = 0.80  # "split" tendon length when fully closed on nothing

_MODEL_CACHE: dict[type, mujoco.MjModel] = {}


def proprio_fields() -> tuple[ObsField, ...]:
    """The proprioceptive part shared by every Panda task (and by the real Panda)."""
    return (
        ObsField("ee_pos", (3,), frame="base", units="m", description="pinch site position"),
        ObsField(
            "ee_yaw", (1,), frame="base", units="rad", description="gripper yaw about z, 0 = home"
        ),
        ObsField(
            "ee_vel", (3,), frame="base", units="m/s", description="pinch site linear velocity"
        ),
        ObsField(
            "gripper", (1,), frame="none", units="1", description="openness, 0 closed .. 1 open"
        ),
        ObsField("joint_pos", (7,), frame="joint", units="rad"),
        ObsField("joint_vel", (7,), frame="joint", units="rad/s"),
    )


def keypoint_field(names: tuple[str, ...]) -> ObsField:
    return ObsField(
        "keypoints",
        (len(names), 3),
        frame="base",
        units="m",
        privileged=True,
        description="positions of the MJCF sites " + ", ".join(names),
    )


class PandaEnv(gym.Env):
    """Base class; subclasses set ``task_name``, ``keypoint_names`` and the task hooks."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}
    task_name: ClassVar[str] = "base"
    keypoint_names: ClassVar[tuple[str, ...]] = ("pinch",)

    def __init__(
        self,
        render_mode: str | None = None,
        control_hz: float = 10.0,
        controller_hz: float = 250.0,
        action_scale: float = 0.05,
        yaw: bool = False,
        yaw_scale: float = 0.2,
        yaw_limit: float = 1.5,
        max_target_lead: float = 0.1,
        workspace_low: tuple[float, float, float] = DEFAULT_WORKSPACE_LOW,
        workspace_high: tuple[float, float, float] = DEFAULT_WORKSPACE_HIGH,
        cameras: tuple[str, ...] | list[str] = (),
        image_size: int = 84,
        render_height: int = 240,
        render_width: int = 320,
        render_camera: str = "front",
        randomize_physics: bool = True,
        randomize_visuals: bool = False,
        joint_noise: float = 0.02,
        terminate_on_success: bool = False,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        if cls_model := _MODEL_CACHE.get(type(self)):
            self.model = copy.deepcopy(cls_model)
        else:
            spec = base_spec()
            self._build(spec)
            _MODEL_CACHE[type(self)] = spec.compile()
            self.model = copy.deepcopy(_MODEL_CACHE[type(self)])
        self.data = mujoco.MjData(self.model)
        self._nominal = {
            "geom_size": self.model.geom_size.copy(),
            "geom_rbound": self.model.geom_rbound.copy(),
            "geom_aabb": self.model.geom_aabb.copy(),
            "geom_friction": self.model.geom_friction.copy(),
            "geom_rgba": self.model.geom_rgba.copy(),
            "body_mass": self.model.body_mass.copy(),
            "body_inertia": self.model.body_inertia.copy(),
            "light_diffuse": self.model.light_diffuse.copy(),
            "body_pos": self.model.body_pos.copy(),
            "dof_damping": self.model.dof_damping.copy(),
            "dof_frictionloss": self.model.dof_frictionloss.copy(),
        }

        dt = self.model.opt.timestep
        self.control_hz = float(control_hz)
        self.n_substeps = max(1, round(1.0 / (self.control_hz * dt)))
        self.ctrl_every = max(1, round(1.0 / (float(controller_hz) * dt)))
        if self.n_substeps % self.ctrl_every:
            raise ValueError(
                f"controller_hz={controller_hz} must divide the physics steps per control step"
            )
        self.metadata = {**self.metadata, "render_fps": int(round(self.control_hz))}
        self.action_scale = float(action_scale)
        self.yaw = bool(yaw)
        self.yaw_scale = float(yaw_scale)
        self.yaw_limit = float(yaw_limit)
        self.max_target_lead = float(max_target_lead)
        self.ws_low = np.asarray(workspace_low, dtype=np.float64)
        self.ws_high = np.asarray(workspace_high, dtype=np.float64)
        if (
            self.ws_low.shape != (3,)
            or self.ws_high.shape != (3,)
            or np.any(self.ws_low >= self.ws_high)
        ):
            raise ValueError(f"bad workspace box {workspace_low} .. {workspace_high}")
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.render_height, self.render_width = int(render_height), int(render_width)
        self.render_camera = render_camera
        self.randomize_physics = bool(randomize_physics)
        self.randomize_visuals = bool(randomize_visuals)
        self.joint_noise = float(joint_noise)
        self.terminate_on_success = bool(terminate_on_success)
        for cam in (*self.cameras, render_camera):
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0:
                raise ValueError(f"unknown camera {cam!r}; the scene has front, side, handcam_rgb")

        self.osc = OperationalSpaceController(self.model, "pinch", home_qpos=HOME_QPOS)
        self.joint_pd = JointImpedanceController(self.model)
        self._joint_target: np.ndarray | None = None
        self._pinch = self.model.site("pinch").id
        self._split = self.model.tendon("split").id
        self._kp_sites = [self.model.site(n).id for n in self.keypoint_names]
        self._jacp = np.zeros((3, self.model.nv))
        self._target = np.zeros(3)
        self._target_yaw = 0.0
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._init_task()

        self.embodiment = self._make_embodiment()
        self.observation_space = self._make_obs_space()
        dim = self.embodiment.action.dim
        self.action_space = spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)

    # ---- task hooks (subclasses) ------------------------------------------------
    def _build(self, spec: mujoco.MjSpec) -> None:
        """Add task bodies/sites to the scene spec (called once per task class)."""

    def _init_task(self) -> None:
        """Cache ids after the model exists."""

    def _task_fields(self) -> tuple[ObsField, ...]:
        return ()

    def _task_obs(self) -> dict[str, np.ndarray]:
        return {}

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Place goal/objects (qpos, mocap) for a new episode."""

    def _evaluate(self) -> tuple[float, dict[str, float], bool, float]:
        """Return (reward, components, success, progress) for the current state."""
        raise NotImplementedError

    # ---- spec & spaces ------------------------------------------------------------
    def _make_embodiment(self) -> EmbodimentSpec:
        layout = (
            ("dx", "dy", "dz", "dyaw", "gripper") if self.yaw else ("dx", "dy", "dz", "gripper")
        )
        s = self.action_scale
        scale = (s, s, s, self.yaw_scale, 1.0) if self.yaw else (s, s, s, 1.0)
        fields = [*proprio_fields(), *self._task_fields(), keypoint_field(self.keypoint_names)]
        for cam in self.cameras:
            fields.append(
                ObsField(
                    f"image_{cam}",
                    (self.image_size, self.image_size, 3),
                    dtype="uint8",
                    frame="camera",
                    units="px",
                    description=f"RGB from camera {cam!r}",
                )
            )
        return EmbodimentSpec(
            name=f"panda/{self.task_name}",
            control_hz=self.control_hz,
            action=ActionSpec(layout=layout, scale=scale),
            observations=tuple(fields),
            workspace_low=tuple(float(v) for v in self.ws_low),
            workspace_high=tuple(float(v) for v in self.ws_high),
            extra={
                "keypoint_names": list(self.keypoint_names),
                "cameras": list(self.cameras),
                "gripper": "continuous: -1 closed, +1 open",
                "robot": "franka_panda + robotiq_2f85 (gym_hil model)",
            },
        )

    def _make_obs_space(self) -> spaces.Dict:
        d = {}
        for f in self.embodiment.observations:
            if f.is_image:
                d[f.name] = spaces.Box(0, 255, shape=f.shape, dtype=np.uint8)
            elif f.name == "gripper":
                d[f.name] = spaces.Box(0.0, 1.0, shape=f.shape, dtype=np.float32)
            else:
                d[f.name] = spaces.Box(-np.inf, np.inf, shape=f.shape, dtype=np.float32)
        return spaces.Dict(d)

    # ---- state readers ------------------------------------------------------------
    @property
    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._pinch].copy()

    @property
    def ee_yaw(self) -> float:
        return yaw_of(self.data.site_xmat[self._pinch])

    @property
    def gripper_openness(self) -> float:
        length = self.data.ten_length[self._split]
        return float(np.clip(1.0 - length / GRIPPER_TENDON_CLOSED, 0.0, 1.0))

    @property
    def target(self) -> np.ndarray:
        return self._target.copy()

    def site_pos(self, name: str) -> np.ndarray:
        return self.data.site(name).xpos.copy()

    def _get_obs(self) -> dict[str, np.ndarray]:
        d, m = self.data, self.model
        mujoco.mj_jacSite(m, d, self._jacp, None, self._pinch)
        f32 = np.float32
        obs = {
            "ee_pos": d.site_xpos[self._pinch].astype(f32),
            "ee_yaw": np.array([self.ee_yaw], dtype=f32),
            "ee_vel": (self._jacp @ d.qvel).astype(f32),
            "gripper": np.array([self.gripper_openness], dtype=f32),
            "joint_pos": d.qpos[:7].astype(f32),
            "joint_vel": d.qvel[:7].astype(f32),
        }
        obs.update(self._task_obs())
        obs["keypoints"] = d.site_xpos[self._kp_sites].astype(f32)
        for cam in self.cameras:
            obs[f"image_{cam}"] = self._render(cam, self.image_size, self.image_size)
        return obs

    # ---- gym API ------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        m, d = self.model, self.data
        for key, value in self._nominal.items():
            getattr(m, key)[:] = value
        mujoco.mj_resetData(m, d)
        d.qpos[:7] = HOME_QPOS + rng.uniform(-self.joint_noise, self.joint_noise, 7)
        d.ctrl[7] = 0.0  # gripper open
        if self.randomize_visuals:
            self._randomize_visuals(rng)
        self._reset_task(rng)
        mujoco.mj_forward(m, d)
        self._target = np.clip(self.ee_pos, self.ws_low, self.ws_high)
        self._target_yaw = 0.0
        self._joint_target = None
        self._reset_extra()
        _, components, success, progress = self._evaluate()
        info = {
            "success": bool(success),
            "progress": float(progress),
            "reward_components": components,
        }
        return self._get_obs(), info

    def _reset_extra(self) -> None:
        """Hook for per-episode bookkeeping after the scene is placed."""

    def _randomize_visuals(self, rng: np.random.Generator) -> None:
        m = self.model
        for name in ("table", "object"):
            gid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name)
            if gid >= 0:
                m.geom_rgba[gid, :3] = rng.uniform(0.1, 0.9, 3)
        m.light_diffuse[:] = self._nominal["light_diffuse"] * rng.uniform(0.6, 1.4, (m.nlight, 1))

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"action has shape {a.shape}, expected {self.action_space.shape} {self.embodiment.action.layout}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or inf: {action!r}")
        a = np.clip(a, -1.0, 1.0)
        target_yaw = None
        if self.yaw:
            target_yaw = float(np.clip(self._target_yaw + a[3] * self.yaw_scale, -self.yaw_limit, self.yaw_limit))
        self.command_cartesian(self._target + a[:3] * self.action_scale, target_yaw)
        self.command_gripper(a[-1])
        self.advance()

        reward, components, success, progress = self._evaluate()
        info = {
            "success": bool(success),
            "progress": float(progress),
            "reward_components": components,
        }
        terminated = bool(success and self.terminate_on_success)
        return self._get_obs(), float(reward), terminated, False, info

    # ---- low-level control (step() uses these; the ROS sim robot drives the arm with them) ----
    def command_cartesian(self, target_pos: np.ndarray, target_yaw: float | None = None) -> np.ndarray:
        """Set the fingertip target for operational-space control; returns the target used.

        The target is clipped to the workspace box and to ``max_target_lead`` metres from
        the fingertips (so a far target cannot wind up a large task-space force).
        Switches the arm back to Cartesian control after joint commands.
        """
        target = np.clip(np.asarray(target_pos, dtype=np.float64).reshape(3), self.ws_low, self.ws_high)
        ee = self.ee_pos
        lead = target - ee
        dist = np.linalg.norm(lead)
        if dist > self.max_target_lead:
            target = np.clip(ee + lead * (self.max_target_lead / dist), self.ws_low, self.ws_high)
        self._target = target
        if target_yaw is not None:
            self._target_yaw = float(np.clip(target_yaw, -self.yaw_limit, self.yaw_limit))
        self._joint_target = None
        return target.copy()

    def command_joints(self, q_target: np.ndarray) -> None:
        """Track arm joint positions (7,) with joint impedance control until the next Cartesian command."""
        q = np.asarray(q_target, dtype=np.float64).reshape(-1)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint target must be 7 finite values, got {q_target!r}")
        lo, hi = self.model.jnt_range[:7, 0], self.model.jnt_range[:7, 1]
        self._joint_target = np.clip(q, lo, hi)

    def command_gripper(self, command: float) -> None:
        """Gripper command in [-1, 1]: -1 closed, +1 open (the action's last entry)."""
        self.data.ctrl[7] = GRIPPER_CTRL_CLOSED * 0.5 * (1.0 - float(np.clip(command, -1.0, 1.0)))

    def advance(self, physics_steps: int | None = None) -> None:
        """Run the physics for ``physics_steps`` (default: one control period), recomputing
        the active controller's torques every ``ctrl_every`` steps."""
        m, d, k = self.model, self.data, self.ctrl_every
        n = self.n_substeps if physics_steps is None else int(physics_steps)
        for start in range(0, n, k):
            if self._joint_target is None:
                d.ctrl[:7] = self.osc.torques(d, self._target, self._target_yaw)
            else:
                d.ctrl[:7] = self.joint_pd.torques(d, self._joint_target)
            mujoco.mj_step(m, d, min(k, n - start))
        mujoco.mj_forward(m, d)
        if not np.all(np.isfinite(d.qpos)):
            raise RuntimeError("simulation diverged (non-finite state)")

    @property
    def target_yaw(self) -> float:
        return self._target_yaw

    def ee_frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Fingertip (pinch site) position (3,), rotation matrix (3, 3), linear and angular velocity (3,)."""
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self.data, jacp, jacr, self._pinch)
        return (self.ee_pos, self.data.site_xmat[self._pinch].reshape(3, 3).copy(),
                jacp @ self.data.qvel, jacr @ self.data.qvel)

    def render_frame(self, camera: str, height: int, width: int) -> np.ndarray:
        """An RGB frame (uint8) from a named camera, e.g. for a ROS image topic."""
        return self._render(camera, height, width)

    def make_renderer(self, height: int, width: int) -> mujoco.Renderer:
        """A renderer with this env's settings (no shadows, reflections or skybox). Its GL context
        belongs to the calling thread: a thread that renders makes its own."""
        before_gl_context()
        r = mujoco.Renderer(self.model, height=height, width=width)
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            r.scene.flags[flag] = False
        return r

    def camera_fovy(self, camera: str) -> float:
        return float(self.model.cam_fovy[self.model.camera(camera).id])

    def observe(self) -> dict[str, np.ndarray]:
        """The current observation (what step() returns), without stepping."""
        return self._get_obs()

    def evaluate(self) -> tuple[float, dict[str, float], bool, float]:
        """(reward, components, success, progress) of the current state."""
        return self._evaluate()

    # ---- rendering ----------------------------------------------------------------
    def _render(self, camera: str, height: int, width: int) -> np.ndarray:
        key = (height, width)
        r = self._renderers.get(key)
        if r is None:
            r = self._renderers[key] = self.make_renderer(height, width)
        r.update_scene(self.data, camera=camera)
        return r.render().copy()

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._render(self.render_camera, self.render_height, self.render_width)

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
