"""Meta-World v3 (metaworld 3.1.1) single-task adapter behind the project's env contract.

One Meta-World task with its goal (and object start) drawn per episode from a
fixed set of goals, the way Meta-World's MT1 benchmark does it:
``metaworld.MT1(task, seed=goal_set_seed)`` builds 50 ``Task`` objects (each a frozen
``rand_vec`` of object start + goal); every ``reset`` picks one of them with the
env's own ``np_random`` and calls Meta-World's ``set_task``. So ``reset(seed=s)``
gives the same goal for the same ``s`` (and ``goal_set_seed``), and an unseeded
sequence of resets cycles through MT1's goals at random. ``options={"goal_index": i}``
picks goal ``i`` of the 50 explicitly (evaluation over all goals).

Reward: Meta-World's own (reward_function_version "v2", in [0, 10]).
``info["success"]``: Meta-World's own success flag as a bool (``False`` after reset,
where Meta-World reports nothing). ``info["reward_components"]``: Meta-World's other
info entries (near_object, grasp_success, grasp_reward, in_place_reward,
obj_to_target, unscaled_reward) as floats.

Observation: ``{"state": (39,) float32}``, Meta-World's own goal-observable vector,
world frame (Meta-World's table frame), metres / unitless:

====== =====================================================================
0:3    hand (end-effector body "hand") position
3      gripper opening, finger distance / 0.1 m clipped to [0, 1] (1 = open)
4:7    object 1 position        7:11   object 1 quaternion (w, x, y, z)
11:14  object 2 position        14:18  object 2 quaternion (zeros if unused)
18:36  the same 18 entries one control step earlier (frame stacking)
36:39  goal position
====== =====================================================================

``split_state`` names these slices; the spec's ``extra["state_layout"]`` lists them.

Action: ``(dx, dy, dz, gripper)`` in [-1, 1]. One unit of dx/dy/dz moves Meta-World's
mocap target (which the hand follows through a weld) by ``action_scale`` = 0.01 m in
that world axis per control step (clipped to Meta-World's mocap box).
``gripper`` follows the project's convention, -1 closed and +1 open: Meta-World's
own convention is the opposite (+1 closes), so the adapter negates it before
passing it on. Code that drives this env with Meta-World's scripted policies
(``metaworld.policies``) must negate their last entry, see ``from_metaworld_action``.

Rendering: ``render_mode="rgb_array"`` through Meta-World's own (Gymnasium) renderer,
camera ``camera_name`` (default "corner2"), ``width`` x ``height``. Meta-World's
``corner*`` cameras are rolled 180 degrees, so their frames are rotated back
(``rotate_180``, default on for those cameras only).

Control rate: frame_skip (5) x timestep (0.0025 s) = 12.5 ms, i.e. 80 Hz.

Episode length: Meta-World's horizon is 500 steps; the registered ids wrap this env
in Gymnasium's ``TimeLimit(500)``. Meta-World 3.1.1 itself raises ``ValueError`` if
stepped once more after its ``max_path_length`` (and moves the mocap before raising),
so the adapter lifts that internal limit and leaves truncation to ``TimeLimit``: a
larger ``max_episode_steps`` works too.
"""

from __future__ import annotations

import functools
import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from common.spec import ActionSpec, EmbodimentSpec, ObsField  # noqa: E402
from sim.gl import before_gl_context  # noqa: E402

MAX_EPISODE_STEPS = 500  # Meta-World's max_path_length
N_GOALS = 50  # goals per task in Meta-World's MT1 benchmark

# Meta-World stacks the current and the previous frame: entries 0:18 are the current hand,
# gripper and object poses, 18:36 the same fields one step earlier, 36:39 the goal.
_FRAME: dict[str, tuple[int, int]] = {
    "ee_pos": (0, 3),
    "gripper_open": (3, 4),
    "obj1_pos": (4, 7),
    "obj1_quat": (7, 11),
    "obj2_pos": (11, 14),
    "obj2_quat": (14, 18),
}
STATE_LAYOUT: dict[str, tuple[int, int]] = {
    **_FRAME,
    **{f"prev_{k}": (a + 18, b + 18) for k, (a, b) in _FRAME.items()},
    "goal_pos": (36, 39),
}


def split_state(state: np.ndarray) -> dict[str, np.ndarray]:
    """Named views of a Meta-World state vector (works on a batch, last axis 39)."""
    return {k: state[..., a:b] for k, (a, b) in STATE_LAYOUT.items()}


def from_metaworld_action(action: np.ndarray) -> np.ndarray:
    """Convert a Meta-World-convention action (+1 closes) to this adapter's (-1 closes)."""
    a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0).copy()
    a[..., 3] = -a[..., 3]
    return a


def metaworld_spec(
    task: str, control_hz: float = 80.0, action_scale: float = 0.01
) -> EmbodimentSpec:
    """The EmbodimentSpec of ``MetaWorldEnv(task)`` (no Meta-World import needed)."""
    return EmbodimentSpec(
        name=f"metaworld/{task}",
        control_hz=float(control_hz),
        action=ActionSpec(
            layout=("dx", "dy", "dz", "gripper"),
            scale=(action_scale, action_scale, action_scale, 1.0),
        ),
        observations=(
            ObsField(
                name="state",
                shape=(39,),
                dtype="float32",
                frame="world",
                units="mixed",
                privileged=True,
                description=(
                    "Meta-World's 39-d goal-observable state: hand pos (m), gripper opening "
                    "(0..1), object 1 and 2 pos (m) + quat (w,x,y,z), the same 18 entries one "
                    "step earlier, goal pos (m); see extra['state_layout']"
                ),
            ),
        ),
        workspace_low=None,
        workspace_high=None,
        extra={
            "benchmark": "metaworld",
            "metaworld_version": "3.1.1",
            "task": task,
            "state_layout": {k: list(v) for k, v in STATE_LAYOUT.items()},
            "gripper_convention": "-1 closed, +1 open (Meta-World's sign negated)",
            "max_episode_steps": MAX_EPISODE_STEPS,
        },
    )


@functools.lru_cache(maxsize=32)
def _mt1_tasks(task: str, goal_set_seed: int) -> tuple:
    """Meta-World's MT1 goal set for one task (cached: building it takes ~0.5 s)."""
    before_gl_context()  # metaworld imports MuJoCo's renderer stack
    import metaworld

    return tuple(metaworld.MT1(task, seed=goal_set_seed).train_tasks)


class MetaWorldEnv(gym.Env):
    """A single Meta-World v3 task with MT1's 50 goals; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str = "reach-v3",
        render_mode: str | None = None,
        camera_name: str = "corner2",
        width: int = 128,
        height: int = 128,
        goal_set_seed: int = 0,
        rotate_180: bool | None = None,
    ) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(
                f"unknown Meta-World v3 task {task!r}; known: {sorted(ALL_V3_ENVIRONMENTS)}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', not {render_mode!r}")
        self.task = task
        self.render_mode = render_mode
        self.goal_set_seed = int(goal_set_seed)
        # Meta-World's corner cameras are rolled 180 degrees (e.g. "corner" has its up
        # axis pointing down in the XML), so frames come out upside down; rotate them.
        self.rotate_180 = (
            camera_name.startswith("corner") if rotate_180 is None else bool(rotate_180)
        )
        self._tasks = _mt1_tasks(task, self.goal_set_seed)
        self._mw = ALL_V3_ENVIRONMENTS[task](
            reward_function_version="v2",
            render_mode=render_mode,
            camera_name=camera_name,
            width=width,
            height=height,
        )
        # Meta-World raises on the step after max_path_length; TimeLimit truncates instead.
        self._mw.max_path_length = np.iinfo(np.int64).max
        self._mw.set_task(self._tasks[0])  # goal-observable (MT1) obs space from here on
        dt = self._mw.frame_skip * self._mw.model.opt.timestep
        self.embodiment = metaworld_spec(
            task, control_hz=1.0 / dt, action_scale=self._mw.action_scale
        )
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / dt))}
        self.observation_space = gym.spaces.Dict(
            {"state": gym.spaces.Box(-np.inf, np.inf, shape=(39,), dtype=np.float32)}
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.goal_index: int | None = None

    # ------------------------------------------------------------------
    @staticmethod
    def _obs(raw: np.ndarray) -> dict[str, np.ndarray]:
        return {"state": np.asarray(raw, dtype=np.float32).copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # Meta-World's reset() ignores its seed argument; seed() is its own way.
            self._mw.seed(int(seed))
        idx = (options or {}).get("goal_index")
        if idx is None:
            idx = int(self.np_random.integers(len(self._tasks)))
        if not 0 <= int(idx) < len(self._tasks):
            raise ValueError(f"goal_index {idx} outside [0, {len(self._tasks)})")
        self.goal_index = int(idx)
        self._mw.set_task(self._tasks[self.goal_index])
        raw, _ = self._mw.reset()
        info = {"success": False, "goal_index": self.goal_index, "reward_components": {}}
        return self._obs(raw), info

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0).copy()
        a[3] = -a[3]  # project convention (-1 closed) -> Meta-World's (+1 closes)
        raw, reward, _terminated, _truncated, mw_info = self._mw.step(a)
        success = bool(mw_info.get("success", 0.0) > 0.5)
        components = {k: float(v) for k, v in mw_info.items() if k != "success"}
        info = {"success": success, "goal_index": self.goal_index, "reward_components": components}
        # Meta-World never terminates; truncation comes from TimeLimit.
        return self._obs(raw), float(reward), False, False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        frame = self._mw.render()
        if self.rotate_180:
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame)

    def close(self) -> None:
        self._mw.close()
