"""A scripted "person" who takes over from the policy when it strays (HIL-SERL-style interventions in sim).

On a robot a person watches and grabs the spacemouse when the arm heads somewhere useless;
the takeover path there is ``robot/takeover.py``. In simulation the same idea needs a rule
for "strays" and a stand-in for the person: the task's scripted expert. The rule reads the
env's ground-truth task progress (``info["progress"]`` in [0, 1]): if it has not risen by
``min_gain`` over the last ``patience`` steps, the expert takes over for ``takeover_steps``
steps, then hands back. Nobody steps in while the task reads as solved (``info["success"]``):
a reach policy hovering within the tolerance makes no progress, and that is fine. At most ``max_per_episode`` takeovers per episode, so the policy
keeps most of the episode to itself.

The wrapper reports what happened in ``info``: ``intervention`` (the expert's action was
executed this step), ``executed_action`` (what the env ran: store this one, it is what caused
the next state) and ``policy_action`` (what the policy asked for). The training loop sends
intervened transitions to the demonstration side of the batch as well as the online side
(HIL-SERL, Luo et al. 2024).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


class StrayDetector:
    """"No progress for a while": progress rose less than ``min_gain`` over the last ``patience``
    time units (env steps here, seconds in the ROS scripted person), while the task is not solved.

    Solved (the env's success flag, or progress 1) is never straying, and the watch starts afresh
    after it: a policy holding still at the goal makes no progress, and that is fine."""

    def __init__(self, patience: float, min_gain: float) -> None:
        self.patience, self.min_gain = float(patience), float(min_gain)
        self.history: deque[tuple[float, float]] = deque()

    def clear(self) -> None:
        self.history.clear()

    def update(self, t: float, progress: float, solved: bool = False) -> bool:
        """Record progress at time ``t``; True when the rule says step in now."""
        if solved:
            self.history.clear()
            return False
        h = self.history
        h.append((float(t), float(progress)))
        while len(h) > 1 and h[1][0] <= t - self.patience:  # keep one sample at or before the window start
            h.popleft()
        if h[0][0] > t - self.patience or progress >= 1.0:
            return False  # not watched for long enough yet, or done
        return max(p for _, p in h) - h[0][1] < self.min_gain


class ScriptedIntervention(gym.Wrapper):
    def __init__(self, env: gym.Env, expert: Callable[[dict], np.ndarray] | None = None, patience: int = 15,
                 min_gain: float = 0.02, takeover_steps: int = 15, max_per_episode: int = 2,
                 start_after: int = 0) -> None:
        super().__init__(env)
        for name, v in (("patience", patience), ("takeover_steps", takeover_steps)):
            if int(v) < 1:
                raise ValueError(f"intervention.{name} must be >= 1, got {v}")
        if expert is None:
            from sim.panda.experts import make_expert

            expert = make_expert(env)
        self.expert = expert
        self.patience, self.min_gain, self.takeover_steps = int(patience), float(min_gain), int(takeover_steps)
        self.max_per_episode, self.start_after = int(max_per_episode), int(start_after)
        self._obs: dict | None = None
        self._stray = StrayDetector(self.patience, self.min_gain)
        self._stuck = False  # the rule's verdict after the last step
        self._left = 0  # steps of the current takeover still to run
        self._count = 0  # takeovers this episode
        self._t = 0

    def reset(self, **kwargs: Any) -> tuple[dict, dict]:
        obs, info = self.env.reset(**kwargs)
        self._obs, self._left, self._count, self._t = obs, 0, 0, 0
        self._stray.clear()
        self._stuck = self._stray.update(0, float(info.get("progress", 0.0)), bool(info.get("success", False)))
        if hasattr(self.expert, "reset"):
            self.expert.reset()
        return obs, info

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        policy_action = np.asarray(action, dtype=np.float32)
        if (self._left == 0 and self._count < self.max_per_episode and self._t >= self.start_after
                and self._stuck):
            self._left, self._count = self.takeover_steps, self._count + 1
            if hasattr(self.expert, "reset"):
                self.expert.reset()  # the expert plans from where the arm is now
        intervening = self._left > 0
        executed = np.asarray(self.expert(self._obs), np.float32) if intervening else policy_action
        if intervening:
            self._left -= 1
            if self._left == 0:
                self._stray.clear()  # judge the policy afresh after a handback
        obs, reward, terminated, truncated, info = self.env.step(executed)
        self._obs, self._t = obs, self._t + 1
        self._stuck = self._stray.update(self._t, float(info.get("progress", 0.0)), bool(info.get("success", False)))
        info = dict(info, intervention=intervening, executed_action=executed, policy_action=policy_action,
                    interventions=self._count)
        return obs, reward, terminated, truncated, info
