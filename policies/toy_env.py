"""A 2-D point-mass reaching task that keeps the ``sim`` env contract, for tests and smoke runs.

It needs no MuJoCo, steps in microseconds and is learnable by SAC in a few thousand
steps, so the training loop, checkpoints and resume can be tested end to end in
seconds. Not registered under ``rewardforge/``: make it with the module-qualified
id ``policies.toy_env:rftoy/PointReach-v0`` (Gymnasium imports the module, which
registers the id).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from common.spec import ActionSpec, EmbodimentSpec, ObsField

ENV_ID = "rftoy/PointReach-v0"
QUALIFIED_ID = f"policies.toy_env:{ENV_ID}"


def point_reach_spec(step_size: float = 0.1) -> EmbodimentSpec:
    return EmbodimentSpec(
        name="toy/point_reach",
        control_hz=10.0,
        action=ActionSpec(layout=("dx", "dy"), scale=(step_size, step_size)),
        observations=(
            ObsField("position", (2,), frame="world", units="m", description="point position"),
            ObsField("goal", (2,), frame="world", units="m", privileged=True, description="goal position"),
        ),
        workspace_low=(-1.0, -1.0, 0.0),
        workspace_high=(1.0, 1.0, 0.0),
    )


class PointReachEnv(gym.Env):
    """Move a point in [-1, 1]^2 to a random goal. Reward -|p - g|; success within ``tolerance``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, step_size: float = 0.1, tolerance: float = 0.1, terminate_on_success: bool = True,
                 render_mode: str | None = None) -> None:
        self.embodiment = point_reach_spec(step_size)
        self.step_size, self.tolerance, self.terminate_on_success = step_size, tolerance, terminate_on_success
        self.render_mode = render_mode
        box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({"position": box, "goal": box})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.zeros(2, np.float32)
        self._goal = np.zeros(2, np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {"position": self._pos.copy(), "goal": self._goal.copy()}

    def _dist(self) -> float:
        return float(np.linalg.norm(self._pos - self._goal))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-0.9, 0.9, 2).astype(np.float32)
        self._goal = self.np_random.uniform(-0.9, 0.9, 2).astype(np.float32)
        return self._obs(), {"success": self._dist() < self.tolerance}

    def step(self, action: np.ndarray):
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self._pos = np.clip(self._pos + self.step_size * a, -1.0, 1.0).astype(np.float32)
        dist = self._dist()
        success = dist < self.tolerance
        info = {"success": success, "reward_components": {"distance": -dist}}
        return self._obs(), -dist, bool(success and self.terminate_on_success), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        size = 64
        img = np.full((size, size, 3), 255, np.uint8)
        for p, color in ((self._goal, (0, 160, 0)), (self._pos, (200, 0, 0))):
            c = ((p + 1.0) / 2.0 * (size - 1)).round().astype(int)
            img[max(c[1] - 2, 0): c[1] + 3, max(c[0] - 2, 0): c[0] + 3] = color
        return img


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=PointReachEnv, max_episode_steps=50)
