"""Between the env and the replay buffer: score transitions with a reward term.

With the env's own reward (``reward.kind=task``) the training loop stores transitions
directly. With any other term, each env step goes through :class:`RewardStream`:

* a cheap term (``batched = False``) scores the step at once;
* an expensive term (``batched = True``, e.g. CLIP) sees the steps held back until
  ``relabel_batch`` transitions are waiting or an episode ends, and scores them in one
  call, as VLM-RM relabels a whole rollout at once.

Only scored transitions enter the replay buffer, so learning never trains on a
transition whose reward is still missing. Per-env sums of the reward and of each
component are kept for the episode log (Eureka-style reflection reads them later), and
a reward-hacking monitor (rewards/monitor.py) checks every scored batch against the
sim's ground truth; its counts go into the training log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.replay import ReplayBuffer
from rewards import RewardTerm, Transitions
from rewards.monitor import RewardMonitor


@dataclass
class _Step:
    batch: Transitions  # the E transitions of one vector-env step
    obs_flat: np.ndarray
    next_flat: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class RewardStream:
    def __init__(self, term: RewardTerm, buffer: ReplayBuffer, num_envs: int, scale: float = 1.0,
                 relabel_batch: int = 256, nonfinite: str = "error", monitor: RewardMonitor | None = None) -> None:
        self.term, self.buffer, self.num_envs, self.monitor = term, buffer, num_envs, monitor
        self.scale, self.relabel_batch, self.nonfinite = float(scale), int(relabel_batch), nonfinite
        self.pending: list[_Step] = []
        self.episode_reward = np.zeros(num_envs)
        self.episode_components: dict[str, np.ndarray] = {}
        self.nonfinite_count = 0
        term.train_mode(True)

    @property
    def waiting(self) -> int:
        """Transitions stored nowhere yet (held for a batched term)."""
        return len(self.pending) * self.num_envs

    def add(self, batch: Transitions, obs_flat: np.ndarray, next_flat: np.ndarray,
            terminated: np.ndarray, truncated: np.ndarray) -> None:
        """One vector-env step; scores and stores it (and any held steps) when it is time."""
        self.pending.append(_Step(batch, obs_flat, next_flat, np.asarray(terminated), np.asarray(truncated)))
        ended = bool(np.any(terminated) or np.any(truncated))
        if not self.term.batched or ended or self.waiting >= self.relabel_batch:
            self.flush()

    def flush(self) -> None:
        """Score every held step in one call and add them to the buffer in time order."""
        if not self.pending:
            return
        steps, self.pending = self.pending, []
        batch = Transitions.concat([s.batch for s in steps])
        out = self.term(batch)
        if self.monitor is not None:  # flags where this reward and the task state disagree
            self.monitor.update(out, batch.success, batch.progress)
        n, E = len(steps), self.num_envs
        reward = out.reward.astype(np.float64)
        bad = ~np.isfinite(reward)
        if bad.any():
            self.nonfinite_count += int(bad.sum())
            if self.nonfinite == "error":
                raise FloatingPointError(
                    f"reward term {self.term.name!r} returned {int(bad.sum())} non-finite rewards of {len(reward)}; "
                    "fix the term, or set reward.nonfinite=zero to store 0 instead (counted in the log)")
            reward = np.where(bad, 0.0, reward)
        reward = reward.reshape(n, E)
        for k, s in enumerate(steps):
            self.buffer.add(s.obs_flat, s.batch.action, (reward[k] * self.scale).astype(np.float32),
                            s.next_flat, s.terminated, s.truncated)
        self.episode_reward += reward.sum(0)
        for name, v in out.components.items():
            acc = self.episode_components.setdefault(name, np.zeros(E))
            acc += np.nan_to_num(v.astype(np.float64).reshape(n, E)).sum(0)

    def end_episode(self, i: int) -> dict[str, Any]:
        """Sums for env ``i``'s finished episode (call after :meth:`flush`); resets them."""
        row: dict[str, Any] = {"reward_return": float(self.episode_reward[i])}
        for name, acc in self.episode_components.items():
            row[f"reward/{name}"] = float(acc[i])
            acc[i] = 0.0
        self.episode_reward[i] = 0.0
        return row


def step_transitions(obs: dict[str, np.ndarray], action: np.ndarray, next_obs: dict[str, np.ndarray],
                     env_reward: np.ndarray, success: np.ndarray, progress: np.ndarray | None,
                     episode_step: np.ndarray) -> Transitions:
    """A ``Transitions`` batch for one vector-env step (copies: vector envs reuse their arrays)."""
    return Transitions(
        obs={k: np.array(v) for k, v in obs.items()}, action=np.array(action),
        next_obs={k: np.array(v) for k, v in next_obs.items()}, env_reward=np.asarray(env_reward, np.float32),
        success=np.asarray(success, bool), progress=None if progress is None else np.asarray(progress, np.float32),
        episode_step=np.array(episode_step),
    )
