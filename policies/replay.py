"""Preallocated replay buffer with truncation-aware n-step sampling.

Layout: arrays of shape ``(rows, num_envs, ...)``: one column per parallel env, so
a transition's successor in time is the next row of the same column and n-step
look-ahead never mixes envs. Each row stores ``obs, action, reward, next_obs,
terminated, episode_end`` (``episode_end`` = terminated or truncated).

n-step target pieces for a sampled transition t (Sutton & Barto 7.1):
    R = sum_{k<m} gamma^k r_{t+k},   discount = gamma^m (1 - terminated_{t+m-1}),
    next_obs = s'_{t+m-1}
where m <= n stops early at the end of the episode (terminated *or* truncated) and
at the newest stored row. After a truncation the value of s' is still bootstrapped
(discount > 0); after a termination it is not.
"""

from __future__ import annotations

import os

import numpy as np

from common.atomic import atomic_open


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int, num_envs: int = 1, seed: int = 0) -> None:
        self.num_envs = num_envs
        self.rows = max(1, capacity // num_envs)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        shape = (self.rows, num_envs)
        self.obs = np.zeros((*shape, obs_dim), np.float32)
        self.next_obs = np.zeros((*shape, obs_dim), np.float32)
        self.action = np.zeros((*shape, act_dim), np.float32)
        self.reward = np.zeros(shape, np.float32)
        self.terminated = np.zeros(shape, np.bool_)
        self.episode_end = np.zeros(shape, np.bool_)
        self.ptr = 0  # next row to write
        self.full = False
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return (self.rows if self.full else self.ptr) * self.num_envs

    def add(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Add one step of every env: arrays with a leading ``num_envs`` axis."""
        i = self.ptr
        self.obs[i] = obs
        self.action[i] = action
        self.reward[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = terminated
        self.episode_end[i] = np.logical_or(terminated, truncated)
        self.ptr = (i + 1) % self.rows
        self.full = self.full or self.ptr == 0

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99) -> dict[str, np.ndarray]:
        """Uniform batch with n-step returns: obs, action, reward (R), next_obs, discount."""
        filled = self.rows if self.full else self.ptr
        if filled == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        t = self.rng.integers(0, filled, size=batch_size)
        e = self.rng.integers(0, self.num_envs, size=batch_size)
        if n_step == 1:
            return {
                "obs": self.obs[t, e], "action": self.action[t, e], "reward": self.reward[t, e],
                "next_obs": self.next_obs[t, e],
                "discount": (gamma * (1.0 - self.terminated[t, e])).astype(np.float32),
            }
        k = np.arange(n_step)
        rows = (t[:, None] + k) % self.rows  # (B, n)
        ends = self.episode_end[rows, e[:, None]]
        # Step k is usable if no episode ended at steps 0..k-1 and row t+k has been written
        # (rows ahead of t up to the newest one: (ptr - 1 - t) mod rows).
        ended_before = np.concatenate([np.zeros((batch_size, 1), bool), np.cumsum(ends, 1)[:, :-1] > 0], 1)
        ahead = (self.ptr - 1 - t) % self.rows
        valid = ~ended_before & (k[None, :] <= ahead[:, None])
        m = valid.sum(1)  # >= 1: step 0 is always valid
        last = rows[np.arange(batch_size), m - 1]
        ret = (self.reward[rows, e[:, None]] * valid * gamma ** k[None, :]).sum(1)
        return {
            "obs": self.obs[t, e], "action": self.action[t, e], "reward": ret.astype(np.float32),
            "next_obs": self.next_obs[last, e],
            "discount": (gamma**m * (1.0 - self.terminated[last, e])).astype(np.float32),
        }

    # ---- persistence ------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the filled part to ``path`` (.npz) atomically: temp file, then os.replace."""
        n = self.rows if self.full else self.ptr
        with atomic_open(path, tmp_suffix=".tmp.npz") as f:
            self._savez(f, n)

    def _savez(self, f, n: int) -> None:
        np.savez(
            f, obs=self.obs[:n], next_obs=self.next_obs[:n], action=self.action[:n], reward=self.reward[:n],
            terminated=self.terminated[:n], episode_end=self.episode_end[:n],
            meta=np.array([self.rows, self.num_envs, self.obs_dim, self.act_dim, self.ptr, int(self.full)]),
            rng_state=np.frombuffer(repr(self.rng.bit_generator.state).encode(), np.uint8),
        )

    def load(self, path: str | os.PathLike) -> None:
        with np.load(path) as data:
            rows, num_envs, obs_dim, act_dim, ptr, full = (int(x) for x in data["meta"])
            if (rows, num_envs, obs_dim, act_dim) != (self.rows, self.num_envs, self.obs_dim, self.act_dim):
                raise ValueError(
                    f"replay file {path} has rows={rows}, num_envs={num_envs}, obs_dim={obs_dim}, act_dim={act_dim}; "
                    f"this buffer has {self.rows}, {self.num_envs}, {self.obs_dim}, {self.act_dim}"
                )
            n = len(data["reward"])
            for name in ("obs", "next_obs", "action", "reward", "terminated", "episode_end"):
                getattr(self, name)[:n] = data[name]
            self.ptr, self.full = ptr, bool(full)
            self.rng.bit_generator.state = _literal(bytes(data["rng_state"]).decode())


def _literal(text: str) -> dict:
    import ast

    return ast.literal_eval(text)
