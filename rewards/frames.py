"""Labelled camera frames for training and judging learned rewards.

A learned success detector needs frames with a success label, and it must be judged
on *episodes* it never saw (neighbouring frames of one episode are near-duplicates,
so a frame-level split would leak). :class:`LabelledFrames` therefore keeps, per
frame, the episode it came from next to the label.

Until the project's recorded-episode format exists, :func:`collect` fills it from
simulation: the scripted expert (successes), noisy experts (near misses and late
successes) and random policies (clear failures). A recorded episode set only has to
produce the same arrays (``frames``, ``success``, ``progress``, ``episode``, ``step``)
to feed the same training code.

Files are plain ``.npz`` (no pickles), written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_open

#: Policy kinds used by :func:`collect`, stored per frame in ``LabelledFrames.source``.
SOURCES = ("expert", "noisy", "random")


@dataclass
class LabelledFrames:
    """N frames of one camera with their labels; every array has length N.

    ``success`` and ``progress`` describe the state *shown in the frame* (for a
    frame rendered after a step, the ``info`` of that step; for the first frame,
    the ``info`` of ``reset``). ``episode`` ids are unique within the set; ``step``
    is the frame's index inside its episode (0 = the reset frame).
    """

    frames: np.ndarray  # (N, H, W, 3) uint8
    success: np.ndarray  # (N,) bool
    progress: np.ndarray  # (N,) float32 in [0, 1]
    episode: np.ndarray  # (N,) int64
    step: np.ndarray  # (N,) int64
    source: np.ndarray  # (N,) str: "expert", "noisy", "random", or a recording's own tag
    camera: str = "front"
    env_id: str = ""

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W, 3) uint8, got {self.frames.shape} {self.frames.dtype}")
        n = len(self.frames)
        self.success = np.asarray(self.success, dtype=bool).reshape(-1)
        self.progress = np.asarray(self.progress, dtype=np.float32).reshape(-1)
        self.episode = np.asarray(self.episode, dtype=np.int64).reshape(-1)
        self.step = np.asarray(self.step, dtype=np.int64).reshape(-1)
        self.source = np.asarray(self.source, dtype=str).reshape(-1)
        for name in ("success", "progress", "episode", "step", "source"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"LabelledFrames.{name} has {len(getattr(self, name))} entries for {n} frames")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def image_size(self) -> int:
        return int(self.frames.shape[1])

    @property
    def episodes(self) -> np.ndarray:
        """Episode ids, sorted."""
        return np.unique(self.episode)

    def select(self, idx: np.ndarray | slice) -> LabelledFrames:
        """Frames at ``idx`` (index array, boolean mask or slice)."""
        arrays = {f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name not in ("camera", "env_id")}
        return LabelledFrames(**arrays, camera=self.camera, env_id=self.env_id)

    def select_episodes(self, ids: Sequence[int] | np.ndarray) -> LabelledFrames:
        return self.select(np.isin(self.episode, np.asarray(ids, dtype=np.int64)))

    def episode_frames(self, ep: int) -> LabelledFrames:
        """One episode's frames in time order."""
        idx = np.flatnonzero(self.episode == ep)
        return self.select(idx[np.argsort(self.step[idx], kind="stable")])

    def last_frames(self, k: int = 1, successful_only: bool = False) -> np.ndarray:
        """The last ``k`` frames of every episode (of those ending in success, if asked), stacked."""
        out = []
        for ep in self.episodes:
            e = self.episode_frames(int(ep))
            if successful_only and not e.success[-1]:
                continue
            out.append(e.frames[-k:])
        if not out:
            raise ValueError("no episode qualifies (successful_only=True and no episode ends in success)")
        return np.concatenate(out)

    @staticmethod
    def concat(parts: Sequence[LabelledFrames]) -> LabelledFrames:
        """Join sets; episode ids of later parts are shifted so they stay unique."""
        if not parts:
            raise ValueError("nothing to concatenate")
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("frames", "success", "progress", "episode", "step", "source")}
        offset = 0
        for p in parts:
            for k in arrays:
                arrays[k].append(getattr(p, k) + offset if k == "episode" else getattr(p, k))
            offset += int(p.episode.max()) + 1 if len(p) else 0
        return LabelledFrames(**{k: np.concatenate(v) for k, v in arrays.items()},
                              camera=parts[0].camera, env_id=parts[0].env_id)

    # ---- files --------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` atomically (a reader sees the old file or the whole new one)."""
        path = Path(path)
        with atomic_open(path) as f:
            np.savez_compressed(
                f, frames=self.frames, success=self.success, progress=self.progress, episode=self.episode,
                step=self.step, source=self.source, camera=np.array(self.camera), env_id=np.array(self.env_id),
            )
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> LabelledFrames:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"labelled-frames file {str(path)!r} does not exist")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("frames", "success", "episode") if k not in z]
            if missing:
                raise ValueError(f"{path} is not a labelled-frames file: it lacks {missing}")
            n = len(z["frames"])
            return LabelledFrames(
                frames=z["frames"], success=z["success"], episode=z["episode"],
                progress=z["progress"] if "progress" in z else np.zeros(n, np.float32),
                step=z["step"] if "step" in z else _steps_from_episodes(z["episode"]),
                source=z["source"] if "source" in z else np.full(n, "unknown"),
                camera=str(z["camera"]) if "camera" in z else "front",
                env_id=str(z["env_id"]) if "env_id" in z else "",
            )


def _steps_from_episodes(episode: np.ndarray) -> np.ndarray:
    """Index within each episode, assuming frames are stored in time order."""
    step = np.zeros(len(episode), np.int64)
    for ep in np.unique(episode):
        idx = np.flatnonzero(episode == ep)
        step[idx] = np.arange(len(idx))
    return step


def split_by_episode(data: LabelledFrames, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                     seed: int = 0) -> tuple[LabelledFrames, LabelledFrames, LabelledFrames]:
    """Train / validation / held-out sets with no episode in two of them.

    Episodes are shuffled within two strata (episodes that reach success at some
    frame, and those that never do) and each stratum is cut by ``fractions``, so
    every part gets successes and failures when there are enough episodes. Each part
    gets at least one episode of a stratum with at least three episodes.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or f.sum() <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {fractions}")
    f = f / f.sum()
    rng = np.random.default_rng(seed)
    eps = data.episodes
    any_success = np.array([data.success[data.episode == e].any() for e in eps])
    parts: list[list[int]] = [[], [], []]
    for stratum in (eps[any_success], eps[~any_success]):
        stratum = rng.permutation(stratum)
        n = len(stratum)
        n_val, n_test = int(round(f[1] * n)), int(round(f[2] * n))
        if n >= 3:
            n_val, n_test = max(n_val, 1 if f[1] > 0 else 0), max(n_test, 1 if f[2] > 0 else 0)
        n_train = max(n - n_val - n_test, 0)
        parts[0] += stratum[:n_train].tolist()
        parts[1] += stratum[n_train:n_train + n_val].tolist()
        parts[2] += stratum[n_train + n_val:].tolist()
    train, val, test = (data.select_episodes(p) for p in parts)
    return train, val, test


# ---------------------------------------------------------------------------
# collection in simulation


def collect(env_id: str = "rewardforge/PandaReach-v0", n_expert: int = 10, n_noisy: int = 10, n_random: int = 10,
            camera: str = "front", image_size: int = 48, seed: int = 0, max_steps: int | None = None,
            noise_std: float = 0.5, random_segment_prob: float = 0.1, random_segment_len: int = 5,
            env_kwargs: dict[str, Any] | None = None, progress_bar: bool = True) -> LabelledFrames:
    """Roll out expert, noisy-expert and random policies and keep every frame with its labels.

    Noisy experts add Gaussian noise (std drawn per episode in ``[0, noise_std]``) to the
    expert's action and, with probability ``random_segment_prob`` per step, switch to
    uniformly random actions for ``random_segment_len`` steps: this yields near misses,
    detours and late successes, the hard negatives/positives a classifier needs.
    ``max_steps`` shortens episodes (default: the env's time limit); shorter expert
    episodes keep the set from being mostly "already succeeded" frames.
    """
    from tqdm import tqdm

    import sim  # here: sim pulls MuJoCo in, which plain users of LabelledFrames do not need
    from sim.gl import before_gl_context
    from sim.panda.experts import make_expert

    before_gl_context()  # this process may train with torch later (see sim/gl.py)
    for key, n in (("n_expert", n_expert), ("n_noisy", n_noisy), ("n_random", n_random)):
        if int(n) < 0:
            raise ValueError(f"{key} must be >= 0, got {n}")
    env = sim.make(env_id, cameras=(camera,), image_size=int(image_size), **(env_kwargs or {}))
    key = f"image_{camera}"
    horizon = int(max_steps or env.spec.max_episode_steps or 50)
    expert = make_expert(env)
    rng = np.random.default_rng(seed)
    plan = ["expert"] * int(n_expert) + ["noisy"] * int(n_noisy) + ["random"] * int(n_random)
    cols: dict[str, list[Any]] = {k: [] for k in ("frames", "success", "progress", "episode", "step", "source")}

    def keep(obs: dict, info: dict, ep: int, t: int, src: str) -> None:
        cols["frames"].append(obs[key])
        cols["success"].append(bool(info["success"]))
        cols["progress"].append(float(info["progress"]))
        cols["episode"].append(ep)
        cols["step"].append(t)
        cols["source"].append(src)

    bar = tqdm(total=len(plan) * (horizon + 1), desc=f"frames {env_id.split('/')[-1]}", disable=not progress_bar,
               unit="frame")
    try:
        for ep, src in enumerate(plan):
            obs, info = env.reset(seed=int(seed) * 100_003 + ep)
            if hasattr(expert, "reset"):
                expert.reset()
            keep(obs, info, ep, 0, src)
            bar.update(1)
            sigma = rng.uniform(0.0, noise_std)
            segment_left, t = 0, 0
            for t in range(1, horizon + 1):
                if src == "random":
                    action = rng.uniform(-1, 1, env.action_space.shape)
                else:
                    action = np.asarray(expert(obs), dtype=np.float64)
                    if src == "noisy":
                        if segment_left == 0 and rng.random() < random_segment_prob:
                            segment_left = random_segment_len
                        if segment_left > 0:
                            segment_left -= 1
                            action = rng.uniform(-1, 1, action.shape)
                        else:
                            action = action + rng.normal(0.0, sigma, action.shape)
                obs, _, terminated, truncated, info = env.step(np.clip(action, -1, 1).astype(np.float32))
                keep(obs, info, ep, t, src)
                bar.update(1)
                if terminated or truncated:
                    break
            bar.update(horizon - t)  # steps an early end skipped
    finally:
        bar.close()
        env.close()
    return LabelledFrames(frames=np.stack(cols["frames"]), success=np.array(cols["success"]),
                          progress=np.array(cols["progress"]), episode=np.array(cols["episode"]),
                          step=np.array(cols["step"]), source=np.array(cols["source"]),
                          camera=camera, env_id=env_id)


__all__ = ["SOURCES", "LabelledFrames", "collect", "split_by_episode"]
