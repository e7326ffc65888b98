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

Images (pixel agents, policies/pixels.py): with ``image_shapes`` the buffer also keeps, per
row, each camera's image of s and of s' as uint8 (a quarter of float32's bytes); ``add`` then
takes ``obs``/``next_obs`` as dicts ``{"state": (E, obs_dim), "image_<cam>": (E, H, W, 3)}``
and ``sample`` adds ``obs_<name>``/``next_obs_<name>`` arrays. Memory: capacity x (2 x
cameras x H x W x 3 bytes + ...), e.g. 100k transitions of one 84 px camera: 4.2 GB, touched
(numpy allocates lazily) only as the buffer fills. Without ``image_shapes`` nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from common.atomic import atomic_open


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int, num_envs: int = 1, seed: int = 0,
                 image_shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
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
        self.image_shapes = {k: tuple(int(x) for x in v) for k, v in (image_shapes or {}).items()}
        self.images = {k: np.zeros((*shape, *v), np.uint8) for k, v in self.image_shapes.items()}
        self.next_images = {k: np.zeros((*shape, *v), np.uint8) for k, v in self.image_shapes.items()}

    def nbytes_per_transition(self) -> int:
        """Bytes one stored transition takes (state, action, reward, flags and any images)."""
        per = 4 * (2 * self.obs_dim + self.act_dim + 1) + 2
        return per + 2 * sum(int(np.prod(v)) for v in self.image_shapes.values())

    def __len__(self) -> int:
        return (self.rows if self.full else self.ptr) * self.num_envs

    def add(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Add one step of every env: arrays with a leading ``num_envs`` axis (``obs`` and
        ``next_obs`` as dicts of state and images for an image buffer)."""
        i = self.ptr
        if self.image_shapes:
            for k in self.image_shapes:
                self.images[k][i] = obs[k]
                self.next_images[k][i] = next_obs[k]
            obs, next_obs = obs["state"], next_obs["state"]
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
            return self._with_images({
                "obs": self.obs[t, e], "action": self.action[t, e], "reward": self.reward[t, e],
                "next_obs": self.next_obs[t, e],
                "discount": (gamma * (1.0 - self.terminated[t, e])).astype(np.float32),
            }, t, t, e)
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
        return self._with_images({
            "obs": self.obs[t, e], "action": self.action[t, e], "reward": ret.astype(np.float32),
            "next_obs": self.next_obs[last, e],
            "discount": (gamma**m * (1.0 - self.terminated[last, e])).astype(np.float32),
        }, t, last, e)

    def _with_images(self, batch: dict[str, np.ndarray], t: np.ndarray, last: np.ndarray,
                     e: np.ndarray) -> dict[str, np.ndarray]:
        for k in self.image_shapes:
            batch[f"obs_{k}"] = self.images[k][t, e]
            batch[f"next_obs_{k}"] = self.next_images[k][last, e]
        return batch

    # ---- persistence ------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the filled part to ``path`` (.npz) atomically: temp file, then os.replace."""
        n = self.rows if self.full else self.ptr
        with atomic_open(path, tmp_suffix=".tmp.npz") as f:
            self._savez(f, n)

    def _savez(self, f, n: int) -> None:
        images = {f"images/{k}": v[:n] for k, v in self.images.items()}
        images.update({f"next_images/{k}": v[:n] for k, v in self.next_images.items()})
        np.savez(
            f, **images, obs=self.obs[:n], next_obs=self.next_obs[:n], action=self.action[:n], reward=self.reward[:n],
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
            stored = sorted(k.removeprefix("images/") for k in data.files if k.startswith("images/"))
            if stored != sorted(self.image_shapes):
                raise ValueError(f"replay file {path} has images {stored}; this buffer has {sorted(self.image_shapes)}")
            for name in ("obs", "next_obs", "action", "reward", "terminated", "episode_end"):
                getattr(self, name)[:n] = data[name]
            for k in self.image_shapes:
                self.images[k][:n] = data[f"images/{k}"]
                self.next_images[k][:n] = data[f"next_images/{k}"]
            self.ptr, self.full = ptr, bool(full)
            self.rng.bit_generator.state = _literal(bytes(data["rng_state"]).decode())


def _literal(text: str) -> dict:
    import ast

    return ast.literal_eval(text)
