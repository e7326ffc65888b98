"""dm_control suite adapter (dm-control 1.0.28) behind the project's env contract.

``DMCEnv(domain, task)`` wraps ``dm_control.suite.load(domain, task)``.

Observation: ``{"state": (n,) float32}``, the task's observation dict flattened in
dm_control's own key order (each entry ``ravel()``-ed). The named parts and their
slices are in the spec's ``extra["state_layout"]`` (``split_state`` returns them),
e.g. reacher: position (2, joint angles, rad), to_target (2, finger-to-target
vector, m), velocity (2, rad/s) -> 6; manipulator bring_ball: arm_pos (8x2 cos/sin
or angle), arm_vel (8), touch (5), hand_pos, object_pos, target_pos (4 each: x, z,
cos, sin), object_vel (3) -> 44.

Action: ``(a0, a1, ...)`` in [-1, 1], mapped affinely onto dm_control's action bounds
(``low + (a + 1) / 2 * (high - low)``); the spec's scale is the half-range, which is
1 for the tasks registered here (their actuators already take [-1, 1]).

Reward: dm_control's own, in [0, 1].

``info["success"]`` -- dm_control has no success flag, so we define one from the
task's reward, which for the tasks here is ``rewards.tolerance(distance, bounds=(0, r))``
and equals exactly 1.0 inside the bounds:

* reacher (easy / hard): the finger is inside the target, i.e. the fingertip-to-target
  distance is below the sum of the target and finger radii (target radius 5 cm on easy,
  1.5 cm on hard), i.e. the step reward is 1.
* manipulator bring_ball: the ball is within 1 cm (dm_control's ``_CLOSE``) of the
  target ball, i.e. the step reward is 1. Note that dm_control starts about 10 % of
  bring_ball episodes with the ball already in the target (``_P_IN_TARGET``) and about
  10 % with it in the hand, so success can be True right after reset.

In general: ``success = reward >= success_threshold`` (default 1.0), also evaluated
after reset.

Episode length: dm_control's own limit (1000 control steps for the tasks here: reacher
20 s at 50 Hz, manipulator 10 s at 100 Hz) is applied by the registered ids as a
Gymnasium ``TimeLimit`` (truncation, never termination). dm_control's own time limit is
switched off (``time_limit=inf``) so that dm_control never auto-resets underneath us;
a task that ends by itself would report ``terminated=True``.

Seeding: ``reset(seed=s)`` re-seeds the task's ``RandomState`` with ``s``, so the initial
configuration (arm angles, target position) is reproducible.

Rendering: ``physics.render(height, width, camera_id)`` for ``render_mode="rgb_array"``.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from common.spec import ActionSpec, EmbodimentSpec, ObsField  # noqa: E402
from sim.gl import before_gl_context  # noqa: E402

DEFAULT_EPISODE_STEPS = 1000


def _layout(obs_spec) -> dict[str, tuple[int, int]]:
    layout, start = {}, 0
    for key, arr in obs_spec.items():
        n = int(np.prod(arr.shape)) if arr.shape else 1
        layout[key] = (start, start + n)
        start += n
    return layout


def split_state(state: np.ndarray, layout: dict[str, Any]) -> dict[str, np.ndarray]:
    """Named views of a flattened state (works on a batch) given ``spec.extra['state_layout']``."""
    return {k: state[..., a:b] for k, (a, b) in layout.items()}


class DMCEnv(gym.Env):
    """One dm_control suite task as a Gymnasium env; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        domain: str = "reacher",
        task: str = "easy",
        render_mode: str | None = None,
        camera_id: int = 0,
        width: int = 128,
        height: int = 128,
        success_threshold: float = 1.0,
    ) -> None:
        before_gl_context()  # importing dm_control already opens EGL
        from dm_control import suite

        if (domain, task) not in suite.ALL_TASKS:
            raise ValueError(f"unknown dm_control task {domain}-{task}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', not {render_mode!r}")
        self.domain, self.task = domain, task
        self.render_mode = render_mode
        self.camera_id, self.width, self.height = int(camera_id), int(width), int(height)
        self.success_threshold = float(success_threshold)
        # time_limit=inf: no auto-reset inside dm_control; TimeLimit truncates instead.
        self._env = suite.load(domain, task, task_kwargs={"time_limit": float("inf")})
        aspec = self._env.action_spec()
        self._a_low = np.asarray(aspec.minimum, dtype=np.float64) * np.ones(aspec.shape)
        self._a_high = np.asarray(aspec.maximum, dtype=np.float64) * np.ones(aspec.shape)
        self._layout = _layout(self._env.observation_spec())
        dim = max(b for _, b in self._layout.values())
        control_hz = 1.0 / self._env.control_timestep()
        self.metadata = {**self.metadata, "render_fps": int(round(control_hz))}
        self.embodiment = EmbodimentSpec(
            name=f"dmc/{domain}-{task}",
            control_hz=float(control_hz),
            action=ActionSpec(
                layout=tuple(f"a{i}" for i in range(aspec.shape[0])),
                scale=tuple(float(s) for s in (self._a_high - self._a_low) / 2.0),
            ),
            observations=(
                ObsField(
                    name="state",
                    shape=(dim,),
                    dtype="float32",
                    frame="none",
                    units="mixed",
                    privileged=True,
                    description=(
                        f"dm_control {domain}-{task} observation dict flattened in order: "
                        + ", ".join(f"{k}[{a}:{b}]" for k, (a, b) in self._layout.items())
                    ),
                ),
            ),
            extra={
                "benchmark": "dm_control",
                "domain": domain,
                "task": task,
                "state_layout": {k: list(v) for k, v in self._layout.items()},
                "action_low": self._a_low.tolist(),
                "action_high": self._a_high.tolist(),
                "success": f"step reward >= {self.success_threshold}",
            },
        )
        self.observation_space = gym.spaces.Dict(
            {"state": gym.spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)}
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=aspec.shape, dtype=np.float32)

    # ------------------------------------------------------------------
    @property
    def physics(self):
        """dm_control's Physics (for tests and scripted experts)."""
        return self._env.physics

    def _obs(self, observation) -> dict[str, np.ndarray]:
        state = np.concatenate(
            [np.asarray(v, dtype=np.float64).ravel() for v in observation.values()]
        )
        return {"state": state.astype(np.float32)}

    def current_observation(self) -> dict[str, np.ndarray]:
        """Observation of the current physics state (after setting it by hand, say)."""
        return self._obs(self._env.task.get_observation(self._env.physics))

    def current_reward(self) -> float:
        return float(self._env.task.get_reward(self._env.physics))

    def is_success(self, reward: float | None = None) -> bool:
        r = self.current_reward() if reward is None else reward
        return bool(r >= self.success_threshold)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task._random = np.random.RandomState(int(seed))  # dm_control's task RNG
        ts = self._env.reset()
        reward = self.current_reward()
        return self._obs(ts.observation), {
            "success": self.is_success(reward),
            "reward_components": {},
        }

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self._a_low.shape), -1.0, 1.0)
        ts = self._env.step(self._a_low + (a + 1.0) * 0.5 * (self._a_high - self._a_low))
        reward = float(ts.reward or 0.0)
        info = {"success": self.is_success(reward), "reward_components": {}}
        return self._obs(ts.observation), reward, bool(ts.last()), False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return np.ascontiguousarray(
            self._env.physics.render(height=self.height, width=self.width, camera_id=self.camera_id)
        )

    def close(self) -> None:
        self._env.close()
