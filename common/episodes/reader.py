"""Reading a dataset: committed metadata, episodes as arrays, frames, replay-buffer transitions.

What is *committed* is decided by ``meta/info.json`` alone: ``total_episodes`` episodes,
``total_tasks`` tasks. Anything else on disk (a metadata row, data file or video of an
episode whose write was interrupted before info.json was replaced) is a *leftover*:
the reader ignores it, ``check`` reports it, and the next writer (or ``repair``)
deletes it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from common.episodes import layout as L
from common.episodes import video as V
from common.spec import EmbodimentSpec, unflatten_state


@dataclass
class Metadata:
    """The committed state of a dataset plus what lies around uncommitted."""

    root: Path
    info: dict[str, Any]
    spec: EmbodimentSpec
    cameras: dict[str, str]  # camera -> spec image field, e.g. {"front": "image_front"}
    tasks: list[str]
    rows: list[dict[str, Any]]  # meta/episodes rows of committed episodes, stats columns removed
    episode_stats: list[dict[str, dict[str, np.ndarray]]]  # per committed episode, feature -> stats
    leftovers: list[Path] = field(default_factory=list)  # files to delete (uncommitted or temporary)
    extra_rows: int = 0  # uncommitted rows in meta/episodes files
    extra_tasks: int = 0  # uncommitted rows in tasks.parquet

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return self.info["features"]


def _stats_from_row(row: dict[str, Any], features: dict[str, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, ft in features.items():
        if f"stats/{key}/mean" not in row or row[f"stats/{key}/mean"] is None:
            continue
        shape = (ft["shape"][-1], 1, 1) if ft["dtype"] == "video" else (int(np.prod(ft["shape"])),)
        out[key] = {s: np.asarray(row[f"stats/{key}/{s}"], np.float64).reshape(shape) for s in ("min", "max", "mean", "std")}
        out[key]["count"] = np.asarray(row[f"stats/{key}/count"], np.int64).reshape(1)
    return out


def load_metadata(root: str | Path) -> Metadata:
    """Read info.json, tasks and episode rows; separate committed from leftover state."""
    root = Path(root)
    info_path = root / L.INFO_PATH
    if not info_path.exists():
        raise L.DatasetError(f"{root} is not a dataset: {L.INFO_PATH} is missing")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as err:
        raise L.DatasetError(f"{info_path} is not valid JSON: {err}") from err
    ours = info.get("rewardforge")
    if not isinstance(ours, dict) or ours.get("format") != L.FORMAT:
        raise L.DatasetError(
            f"{root}: info.json has no 'rewardforge' section with format {L.FORMAT!r} "
            "(a LeRobot dataset not written by rewardforge cannot be read here yet)"
        )
    if info.get("codebase_version") != L.CODEBASE_VERSION:
        raise L.DatasetError(f"{root}: codebase_version {info.get('codebase_version')!r}, expected {L.CODEBASE_VERSION!r}")
    spec = EmbodimentSpec.from_dict(ours["embodiment"])
    cameras = dict(ours.get("cameras", {}))
    n_ep, n_tasks = int(info["total_episodes"]), int(info["total_tasks"])

    all_tasks = L.read_tasks(root) if (root / L.TASKS_PATH).exists() else []
    if len(all_tasks) < n_tasks:
        raise L.DatasetError(f"{root}: info.json says {n_tasks} tasks, {L.TASKS_PATH} has {len(all_tasks)}")
    rows: list[dict[str, Any]] = []
    extra_rows = 0
    for path in sorted((root / "meta" / "episodes").glob("*/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if row["episode_index"] < n_ep:
                rows.append(row)
            else:
                extra_rows += 1
    rows.sort(key=lambda r: r["episode_index"])
    if [r["episode_index"] for r in rows] != list(range(n_ep)):
        have = [r["episode_index"] for r in rows]
        raise L.DatasetError(
            f"{root}: info.json says {n_ep} episodes but meta/episodes holds episode indices "
            f"{have[:5]}{'...' if len(have) > 5 else ''} ({len(have)} rows); the metadata is damaged"
        )
    stats = [_stats_from_row(r, info["features"]) for r in rows]
    rows = [{k: v for k, v in r.items() if not k.startswith("stats/")} for r in rows]

    expected = {L.data_file(root, i) for i in range(n_ep)}
    expected |= {L.video_file(root, cam, i) for i in range(n_ep) for cam in cameras}
    leftovers = [p for p in sorted((root / "data").glob("*/*.parquet")) if p not in expected]
    leftovers += [p for p in sorted((root / "videos").glob("*/*/*.mp4")) if p not in expected]
    leftovers += sorted(p for p in root.rglob("*.tmp") if p.is_file())
    staging = root / L.STAGING_DIR
    if staging.exists():
        leftovers += sorted(p for p in staging.iterdir() if p.is_file())
    return Metadata(root, info, spec, cameras, all_tasks[:n_tasks], rows, stats, leftovers, extra_rows,
                    len(all_tasks) - n_tasks)


class Dataset:
    """Read-only view of a dataset directory.

    ``episode(i)`` gives the stored columns as arrays, ``observations(i)`` the same
    frames as observation dicts keyed like the embodiment spec (what reward terms and
    policies read), ``transitions()`` everything as (obs, action, reward, next_obs)
    for a replay buffer, ``frames(camera)`` streams decoded images.
    """

    def __init__(self, root: str | Path) -> None:
        self.meta = load_metadata(root)
        self.root = self.meta.root
        self.info = self.meta.info
        self.spec = self.meta.spec
        self.fps = self.meta.fps
        self.cameras = tuple(self.meta.cameras)
        self.tasks = list(self.meta.tasks)
        self.episodes = self.meta.rows  # per-episode metadata rows (stats left out)
        stats_path = self.root / L.STATS_PATH
        self.stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}

    def __len__(self) -> int:
        return self.num_episodes

    @property
    def num_episodes(self) -> int:
        return int(self.info["total_episodes"])

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    def _check_index(self, i: int) -> int:
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range; {self.root} has {self.num_episodes} episodes")
        return i % self.num_episodes

    def _cams(self, images: bool | Sequence[str]) -> list[str]:
        if images is True:
            return list(self.cameras)
        if not images:
            return []
        unknown = [c for c in images if c not in self.cameras]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; {self.root} has {list(self.cameras)}")
        return list(images)

    def episode(self, i: int, images: bool | Sequence[str] = False) -> dict[str, Any]:
        """Stored columns of episode ``i`` as arrays with a leading time axis.

        State fields come back in their spec shapes (``observation.keypoints``:
        (T, K, 3)), scalars as (T,). ``images=True`` (or a list of cameras) also
        decodes ``observation.images.<camera>`` (T, H, W, 3) uint8. When the final
        observation was recorded: ``final.observation.state`` (D,) and, with images,
        ``final.observation.images.<camera>`` (H, W, 3).
        """
        i = self._check_index(i)
        row = self.episodes[i]
        table = pq.read_table(L.data_file(self.root, i))
        features = self.meta.features
        out: dict[str, Any] = {}
        for name in table.column_names:
            if name not in features:
                continue
            arr = L.column_to_numpy(table.column(name), features[name]["shape"])
            if name.startswith("observation.") and name != "observation.state":
                fname = name[len("observation.") :]
                if fname in self.spec.obs_names:
                    arr = arr.reshape(len(arr), *self.spec.field(fname).shape)
            out[name] = arr
        final_state = row.get("final/observation.state")
        if final_state is not None:
            out["final.observation.state"] = np.asarray(final_state, np.float32)
        for cam in self._cams(images):
            frames = V.decode(L.video_file(self.root, cam, i))
            length = int(row["length"])
            out[L.video_key(cam)] = frames[:length]
            if final_state is not None and len(frames) > length:
                out[f"final.observation.images.{cam}"] = frames[length]
        return out

    def observations(self, i: int, images: bool | Sequence[str] = False) -> dict[str, np.ndarray]:
        """Episode ``i``'s observations keyed by spec field names, each (T, *shape)."""
        return self._obs_of(self.episode(i, images))

    def _obs_of(self, ep: dict[str, Any]) -> dict[str, np.ndarray]:
        obs = {f.name: ep[L.state_key(f.name)] for f in self.spec.state_fields}
        for cam, fname in self.meta.cameras.items():
            if L.video_key(cam) in ep:
                obs[fname] = ep[L.video_key(cam)]
        return obs

    def frames(self, camera: str, episodes: Sequence[int] | None = None) -> Iterator[np.ndarray]:
        """Decoded (H, W, 3) frames of one camera, episode after episode (final frames left out)."""
        self._cams([camera])
        for i in range(self.num_episodes) if episodes is None else episodes:
            i = self._check_index(i)
            length = int(self.episodes[i]["length"])
            for t, frame in enumerate(V.read_frames(L.video_file(self.root, camera, i))):
                if t >= length:
                    break
                yield frame

    def transitions(self, images: bool | Sequence[str] = False, episodes: Sequence[int] | None = None) -> dict[str, Any]:
        """All frames as transitions for a replay buffer or reward relabelling.

        Frame t of an episode is (obs_t, action_t, reward_t, obs_{t+1}). For the last
        frame, ``next_obs`` is the recorded final observation; where none was recorded
        it repeats obs_t and ``next_obs_missing`` is True (harmless when the episode
        terminated, a small bias when it was truncated). ``terminated`` is
        ``next.done and not next.truncated``; an episode whose last frame is not marked
        done (a recording stopped by hand) counts as truncated there.

        Returns ``obs`` / ``next_obs`` (dicts keyed by spec field, (N, *shape)),
        ``state`` / ``next_state`` (N, state_dim) float32, ``action``,
        ``policy_action`` (N, A), ``reward`` (N,), ``terminated``, ``truncated``,
        ``intervention``, ``success``, ``next_obs_missing`` (N,) bool,
        ``episode_index``, ``frame_index`` (N,) int64.
        """
        parts: list[dict[str, Any]] = []
        for i in range(self.num_episodes) if episodes is None else episodes:
            ep = self.episode(i, images)
            T = len(ep["action"])
            obs = self._obs_of(ep)
            state = ep["observation.state"]
            final_ok = "final.observation.state" in ep
            if final_ok:
                final = unflatten_state(self.spec, ep["final.observation.state"][None])
                final = {k: v.astype(np.float32) for k, v in final.items()}
                final_state = ep["final.observation.state"][None]
                for cam, fname in self.meta.cameras.items():
                    if fname in obs:
                        key = f"final.observation.images.{cam}"
                        final[fname] = ep[key][None] if key in ep else obs[fname][-1:]
            else:
                final = {k: v[-1:] for k, v in obs.items()}
                final_state = state[-1:]
            next_obs = {k: np.concatenate([v[1:], final[k]]) for k, v in obs.items()}
            done = ep["next.done"].astype(bool)
            trunc = ep["next.truncated"].astype(bool).copy()
            trunc[-1] |= not done[-1]
            missing = np.zeros(T, bool)
            missing[-1] = not final_ok
            parts.append({
                "obs": obs, "next_obs": next_obs, "state": state,
                "next_state": np.concatenate([state[1:], final_state.astype(np.float32)]),
                "action": ep["action"], "policy_action": ep["action.policy"], "reward": ep["next.reward"],
                "terminated": done & ~trunc, "truncated": trunc, "intervention": ep["intervention"].astype(bool),
                "success": ep["next.success"].astype(bool), "next_obs_missing": missing,
                "episode_index": ep["episode_index"], "frame_index": ep["frame_index"],
            })
        if not parts:
            raise ValueError(f"{self.root} has no episodes to make transitions from")
        out: dict[str, Any] = {}
        for key, first in parts[0].items():
            if isinstance(first, dict):
                out[key] = {k: np.concatenate([p[key][k] for p in parts]) for k in first}
            else:
                out[key] = np.concatenate([p[key] for p in parts])
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for people: episodes, frames, success rate, sources, interventions, size."""
        rows = self.episodes
        n = len(rows)
        size = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        feats = self.meta.features
        return {
            "root": str(self.root),
            "embodiment": self.spec.name,
            "fps": self.fps,
            "episodes": n,
            "frames": self.num_frames,
            "mean_length": self.num_frames / n if n else 0.0,
            "tasks": list(self.tasks),
            "success_rate": sum(bool(r["success"]) for r in rows) / n if n else None,
            "sources": dict(Counter(r["source"] for r in rows)),
            "intervention_frames": sum(int(r["interventions"]) for r in rows),
            "episodes_with_interventions": sum(int(r["interventions"]) > 0 for r in rows),
            "mean_return": sum(float(r["return"]) for r in rows) / n if n else None,
            "final_observations": sum(r.get("final/observation.state") is not None for r in rows),
            "cameras": {c: feats[L.video_key(c)]["shape"][:2] for c in self.cameras},
            "size_mb": size / 2**20,
        }
