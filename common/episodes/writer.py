"""Writing episodes: ``DatasetWriter``, the one way demonstrations, interventions and rollouts reach disk.

Crash safety. A frame lives in memory (state, actions, labels) or in an ffmpeg child
process (images, encoded as they arrive into ``.staging/``) until ``end_episode``.
That call then (1) writes the episode's data parquet and moves its mp4 files into
place, each under a temporary name first and renamed (``os.replace``) when whole,
(2) rewrites the small metadata files the same way (meta/episodes, tasks, stats)
and (3) rewrites ``meta/info.json`` last: replacing info.json is the commit point.
A process killed at any moment therefore leaves info.json describing only complete
episodes; the files of the episode it was writing are leftovers that readers
ignore and the next writer deletes when it opens the dataset. So at most the
episode in progress is lost.

One writer at a time: the writer holds an exclusive ``flock`` on ``.writer.lock``
(released by the OS if the process dies), and a second writer is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from common.episodes import layout as L
from common.episodes import video as V
from common.episodes.reader import load_metadata
from common.spec import EmbodimentSpec

_ACTION_TOL = 1e-5  # executed actions are normalised; allow float rounding at the bounds


class DatasetWriter:
    """Record episodes into a dataset directory (created, or opened to append).

    ``root``: the dataset directory. If it holds a dataset, new episodes are
    appended and ``spec``, ``fps`` and ``cameras`` must match what it was created
    with (the error lists every difference); otherwise it must be empty or absent.

    ``spec``: the embodiment the frames come from (observation fields, action
    layout). It is stored in ``meta/info.json`` so the dataset says what its numbers mean.

    ``fps``: frames per second (default: ``spec.control_hz``); timestamps are ``frame_index / fps``.

    ``cameras``: cameras to store as video, by camera name (spec field ``image_front``
    is camera ``front``); default: every image field of the spec (when appending: the
    stored cameras). Image fields not listed are not stored.

    ``crf``: H.264 quality (0 lossless .. 51 worst) for new datasets.

    Use one writer from one thread::

        with DatasetWriter("data/pick", env.unwrapped.embodiment) as w:
            w.begin_episode("pick up the block", source="expert")
            for ...: w.add_frame(obs, action, reward=r, success=s, done=d)
            w.end_episode(final_obs=next_obs)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        spec: EmbodimentSpec,
        *,
        fps: float | None = None,
        cameras: Sequence[str] | None = None,
        crf: int = V.DEFAULT_CRF,
    ) -> None:
        self.root = Path(root)
        self.spec = spec
        self.fps = float(fps if fps is not None else spec.control_hz)
        if not self.fps > 0:
            raise L.DatasetError(f"fps must be > 0, got {fps!r}")
        if not 0 <= int(crf) <= 51:
            raise L.DatasetError(f"crf must be in 0..51 (x264 quality), got {crf!r}")
        self._episode: dict[str, Any] | None = None
        self._streams: dict[str, V.VideoStream] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        try:
            if (self.root / L.INFO_PATH).exists():
                self._open_existing(cameras)
            else:
                self._create(cameras, int(crf))
        except BaseException:
            self._release_lock()
            raise

    # ---- setup ---------------------------------------------------------------------
    def _acquire_lock(self):
        f = open(self.root / L.LOCK_FILE, "a+")  # noqa: SIM115 - held for the writer's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            f.close()
            raise L.DatasetError(f"{self.root} is already open for writing (by pid {who}); close that writer first") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        return f

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _resolve_cameras(self, cameras: Sequence[str] | None) -> dict[str, str]:
        available = {L.camera_name(f.name): f.name for f in self.spec.image_fields}
        if cameras is None:
            return available
        if isinstance(cameras, str):
            raise L.DatasetError(f"cameras must be a list of camera names, got the string {cameras!r}")
        unknown = [c for c in cameras if c not in available]
        if unknown:
            raise L.DatasetError(
                f"cameras {unknown} are not image fields of {self.spec.name}; it has cameras {sorted(available)} "
                f"(image fields {[f.name for f in self.spec.image_fields]})"
            )
        return {c: available[c] for c in cameras}

    def _create(self, cameras: Sequence[str] | None, crf: int) -> None:
        stray = [p.name for p in self.root.iterdir() if p.name not in (L.LOCK_FILE, L.STAGING_DIR)]
        if stray:
            raise L.DatasetError(
                f"{self.root} is not empty and has no {L.INFO_PATH}: refusing to write a dataset over {stray[:5]}"
            )
        self.cameras = self._resolve_cameras(cameras)
        for cam, fname in self.cameras.items():
            h, w, _ = self.spec.field(fname).shape
            V.check_frame_size(h, w, f"camera {cam!r} ({fname})")
        fps_out: float | int = int(self.fps) if float(self.fps).is_integer() else self.fps
        self.info: dict[str, Any] = {
            "codebase_version": L.CODEBASE_VERSION,
            "robot_type": self.spec.name,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "chunks_size": L.CHUNKS_SIZE,
            "data_files_size_in_mb": L.DATA_FILES_SIZE_IN_MB,
            "video_files_size_in_mb": L.VIDEO_FILES_SIZE_IN_MB,
            "fps": fps_out,
            "splits": {},
            "data_path": L.DATA_PATH,
            "video_path": L.VIDEO_PATH if self.cameras else None,
            "features": L.build_features(self.spec, fps_out, list(self.cameras), crf, V.DEFAULT_GOP),
            "rewardforge": {
                "format": L.FORMAT,
                "embodiment": self.spec.to_dict(),
                "cameras": dict(self.cameras),
                "files": "one data parquet and one mp4 per camera per episode; "
                "file number = episode index (chunk = n // chunks_size, file = n % chunks_size)",
            },
        }
        self._crf = crf
        self.tasks: list[str] = []
        self._rows: list[dict[str, Any]] = []
        self._stats: list[dict[str, dict[str, np.ndarray]]] = []
        L.write_parquet(self.root / L.TASKS_PATH, L.tasks_table([]))
        L.write_json(self.root / L.STATS_PATH, {})
        L.write_json(self.root / L.INFO_PATH, self.info)

    def _open_existing(self, cameras: Sequence[str] | None) -> None:
        meta = load_metadata(self.root)
        problems = [f"embodiment: {d}" for d in meta.spec.differences(self.spec)]
        if not np.isclose(meta.fps, self.fps):
            problems.append(f"fps: dataset has {meta.fps}, writer asked for {self.fps}")
        stored = list(meta.cameras)
        if cameras is not None and list(cameras) != stored:
            problems.append(f"cameras: dataset has {stored}, writer asked for {list(cameras)}")
        missing = [f for f in meta.cameras.values() if f not in self.spec.obs_names]
        if missing:
            problems.append(f"cameras: spec lacks the stored image fields {missing}")
        if problems:
            raise L.DatasetError(f"cannot append to {self.root}: " + "; ".join(problems))
        self.cameras = dict(meta.cameras)
        self.info = meta.info
        self._crf = int(self.info["features"][L.video_key(stored[0])]["info"].get("video.crf", V.DEFAULT_CRF)) if stored else V.DEFAULT_CRF
        self.tasks = list(meta.tasks)
        self._rows = [dict(r) for r in meta.rows]
        self._stats = meta.episode_stats
        if meta.leftovers or meta.extra_rows or meta.extra_tasks:
            self._repair(meta)

    def _repair(self, meta) -> None:
        """Delete leftovers of an interrupted write and rewrite metadata to the committed state."""
        for p in meta.leftovers:
            p.unlink(missing_ok=True)
        shutil.rmtree(self.root / L.STAGING_DIR, ignore_errors=True)
        if meta.extra_tasks:
            L.write_parquet(self.root / L.TASKS_PATH, L.tasks_table(self.tasks))
        if meta.extra_rows:
            n = len(self._rows)
            last = (n - 1) // L.EPISODES_PER_META_FILE if n else -1
            for path in sorted((self.root / "meta" / "episodes").glob("*/*.parquet")):
                c, f = int(path.parent.name.split("-")[1]), int(path.stem.split("-")[1])
                if c * L.CHUNKS_SIZE + f > last:
                    path.unlink()
            if n:
                self._write_meta_file(last)
        L.write_json(self.root / L.STATS_PATH, self._global_stats())

    # ---- state ---------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        """Committed episodes."""
        return len(self._rows)

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    @property
    def recording(self) -> bool:
        """True between ``begin_episode`` and ``end_episode`` / ``discard_episode``."""
        return self._episode is not None

    # ---- recording -----------------------------------------------------------------
    def begin_episode(self, task: str, source: str = "expert", metadata: Mapping[str, Any] | None = None) -> int:
        """Start an episode; returns the index it will get if it is ended (not discarded).

        ``task``: the instruction in words (it becomes the episode's task in
        meta/tasks.parquet). ``source``: who acted, one of expert, noisy, teleop,
        policy, intervention. ``metadata``: JSON-serialisable extras kept per episode
        (seed, operator, policy checkpoint...).
        """
        if self._lock is None:
            raise L.DatasetError("this writer is closed")
        if self._episode is not None:
            raise L.DatasetError("an episode is already being recorded; end_episode() or discard_episode() first")
        if not isinstance(task, str) or not task.strip():
            raise L.DatasetError(f"task must be a non-empty string describing the task, got {task!r}")
        if source not in L.SOURCES:
            raise L.DatasetError(f"source must be one of {', '.join(L.SOURCES)}; got {source!r}")
        try:
            meta_json = json.dumps(dict(metadata or {}), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise L.DatasetError(f"episode metadata must be JSON-serialisable: {err}") from err
        index = len(self._rows)
        shutil.rmtree(self.root / L.STAGING_DIR, ignore_errors=True)
        self._episode = {
            "task": task, "source": source, "metadata": meta_json, "index": index,
            "state": [], "action": [], "policy": [], "intervention": [], "reward": [],
            "success": [], "done": [], "truncated": [],
            "img": {cam: _ImageStats() for cam in self.cameras},
        }
        for cam in self.cameras:
            self._streams[cam] = V.VideoStream(
                self.root / L.STAGING_DIR / f"ep-{index:06d}-{cam}.mp4", self.fps, crf=self._crf
            )
        return index

    def _state_and_images(self, obs: Mapping[str, Any], what: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        parts, problems = [], []
        for f in self.spec.state_fields:
            if f.name not in obs:
                problems.append(f"missing {f.name!r}")
                continue
            v = np.asarray(obs[f.name], dtype=np.float32)
            if v.shape != tuple(f.shape):
                problems.append(f"{f.name!r} has shape {v.shape}, spec says {tuple(f.shape)}")
            elif not np.all(np.isfinite(v)):
                problems.append(f"{f.name!r} contains NaN or inf")
            else:
                parts.append(v.reshape(-1))
        images = {}
        for cam, fname in self.cameras.items():
            if fname not in obs:
                problems.append(f"missing {fname!r} (camera {cam!r})")
                continue
            img = np.asarray(obs[fname])
            want = tuple(self.spec.field(fname).shape)
            if img.shape != want or img.dtype != np.uint8:
                problems.append(f"{fname!r} is {img.dtype} {img.shape}, expected uint8 {want}")
            else:
                images[cam] = img
        if problems:
            raise L.DatasetError(f"{what} does not fit {self.spec.name}: " + "; ".join(problems))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32), images

    def _action(self, action: Any, what: str) -> np.ndarray:
        a = np.asarray(action, dtype=np.float32)
        dim = self.spec.action.dim
        if a.shape != (dim,):
            raise L.DatasetError(f"{what} has shape {a.shape}, expected ({dim},) {self.spec.action.layout}")
        if not np.all(np.isfinite(a)):
            raise L.DatasetError(f"{what} contains NaN or inf: {a}")
        if np.any(np.abs(a) > 1.0 + _ACTION_TOL):
            raise L.DatasetError(f"{what} {a} is outside [-1, 1]; store the normalised (clipped) action")
        return np.clip(a, -1.0, 1.0)

    def add_frame(
        self,
        obs: Mapping[str, Any],
        action: Any,
        policy_action: Any | None = None,
        intervention: bool = False,
        reward: float = 0.0,
        success: bool = False,
        done: bool = False,
        truncated: bool = False,
    ) -> None:
        """Append one control step: the observation seen, then what happened after acting.

        ``action``: the executed action (normalised, [-1, 1]). ``policy_action``: what
        the policy asked for (default: ``action``; differs when a person took over,
        then ``intervention=True``). ``reward``, ``success``: after this step.
        ``done``: the episode ended after this step; ``truncated``: it ended by a time
        limit rather than by reaching a terminal state (implies ``done``).
        """
        ep = self._episode
        if ep is None:
            raise L.DatasetError("add_frame() before begin_episode()")
        t = len(ep["action"])
        state, images = self._state_and_images(obs, f"observation of frame {t}")
        a = self._action(action, f"action of frame {t}")
        p = a if policy_action is None else self._action(policy_action, f"policy_action of frame {t}")
        r = float(reward)
        if not np.isfinite(r):
            raise L.DatasetError(f"reward of frame {t} is {reward!r}; rewards must be finite")
        for cam, img in images.items():
            self._streams[cam].append(img)
            ep["img"][cam].add(img)
        ep["state"].append(state)
        ep["action"].append(a)
        ep["policy"].append(p)
        ep["intervention"].append(bool(intervention))
        ep["reward"].append(r)
        ep["success"].append(bool(success))
        ep["done"].append(bool(done) or bool(truncated))
        ep["truncated"].append(bool(truncated))

    def discard_episode(self) -> None:
        """Drop the episode being recorded (nothing of it reaches the dataset)."""
        for s in self._streams.values():
            s.abort()
        self._streams.clear()
        self._episode = None
        shutil.rmtree(self.root / L.STAGING_DIR, ignore_errors=True)

    def end_episode(self, success: bool | None = None, final_obs: Mapping[str, Any] | None = None) -> int:
        """Write the episode and commit it; returns its index.

        ``success``: the episode's label (default: ``next.success`` of its last
        frame). ``final_obs``: the observation after the last action, stored so the
        last transition has its next observation (state in meta/episodes, images as
        one extra frame at the end of each mp4, past ``to_timestamp``).
        """
        ep = self._episode
        if ep is None:
            raise L.DatasetError("end_episode() without begin_episode()")
        T = len(ep["action"])
        if T == 0:
            raise L.DatasetError("the episode has no frames; call discard_episode() instead")
        final_state = None
        if final_obs is not None:
            final_state, final_images = self._state_and_images(final_obs, "final_obs")
            for cam, img in final_images.items():
                self._streams[cam].append(img)
        index = ep["index"]
        label = bool(ep["success"][-1]) if success is None else bool(success)
        task_index = self._task_index(ep["task"])
        from_index = self.num_frames

        state = np.stack(ep["state"]).astype(np.float32)
        cols: dict[str, np.ndarray] = {"observation.state": state}
        offset = 0
        for f in self.spec.state_fields:
            cols[L.state_key(f.name)] = state[:, offset : offset + f.size]
            offset += f.size
        frame_index = np.arange(T, dtype=np.int64)
        cols.update({
            "action": np.stack(ep["action"]), "action.policy": np.stack(ep["policy"]),
            "intervention": np.asarray(ep["intervention"]), "next.reward": np.asarray(ep["reward"], np.float32),
            "next.success": np.asarray(ep["success"]), "next.done": np.asarray(ep["done"]),
            "next.truncated": np.asarray(ep["truncated"]),
            "timestamp": (frame_index / self.fps).astype(np.float32), "frame_index": frame_index,
            "episode_index": np.full(T, index, np.int64), "index": from_index + frame_index,
            "task_index": np.full(T, task_index, np.int64),
        })
        features = self.info["features"]
        schema = L.data_schema(features)
        table = pa.Table.from_arrays(
            [L.numpy_to_column(cols[n], features[n]["dtype"], features[n]["shape"]) for n in schema.names],
            schema=schema,
        )
        stats = {n: L.array_stats(cols[n]) for n in schema.names}

        # 1. episode files, each complete before it appears under its name
        L.write_parquet(L.data_file(self.root, index), table)
        streams, self._streams = self._streams, {}
        try:
            for cam, s in streams.items():
                s.close()
                L.fsync_file(s.path)
                dest = L.video_file(self.root, cam, index)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(s.path, dest)
                stats[L.video_key(cam)] = ep["img"][cam].result()
        except BaseException:
            for s in streams.values():
                s.abort()
            self._episode = None
            raise

        # 2. metadata row and small files, 3. info.json last (the commit point)
        c, f = L.file_location(index)
        row: dict[str, Any] = {
            "episode_index": index, "tasks": [ep["task"]], "length": T,
            "data/chunk_index": c, "data/file_index": f,
            "dataset_from_index": from_index, "dataset_to_index": from_index + T,
        }
        for cam in self.cameras:
            row.update({
                f"videos/{L.video_key(cam)}/chunk_index": c, f"videos/{L.video_key(cam)}/file_index": f,
                f"videos/{L.video_key(cam)}/from_timestamp": 0.0,
                f"videos/{L.video_key(cam)}/to_timestamp": T / self.fps,
            })
        mc, mf = L.file_location(index // L.EPISODES_PER_META_FILE)
        row.update({
            "meta/episodes/chunk_index": mc, "meta/episodes/file_index": mf,
            "success": label, "source": ep["source"], "interventions": int(sum(ep["intervention"])),
            "return": float(np.sum(ep["reward"], dtype=np.float64)),
            "final/observation.state": None if final_state is None else final_state.tolist(),
            "metadata": ep["metadata"],
        })
        self._rows.append(row)
        self._stats.append(stats)
        self._write_meta_file(index // L.EPISODES_PER_META_FILE)
        if task_index == len(self.tasks) - 1 and self._new_task:
            L.write_parquet(self.root / L.TASKS_PATH, L.tasks_table(self.tasks))
        L.write_json(self.root / L.STATS_PATH, self._global_stats())
        self.info.update({
            "total_episodes": len(self._rows), "total_frames": from_index + T, "total_tasks": len(self.tasks),
            "splits": {"train": f"0:{len(self._rows)}"},
        })
        L.write_json(self.root / L.INFO_PATH, self.info)
        self._episode = None
        shutil.rmtree(self.root / L.STAGING_DIR, ignore_errors=True)
        return index

    def _task_index(self, task: str) -> int:
        self._new_task = task not in self.tasks
        if self._new_task:
            self.tasks.append(task)
        return self.tasks.index(task)

    # ---- metadata files ----------------------------------------------------------------
    def _meta_schema(self) -> pa.Schema:
        cols = [
            ("episode_index", pa.int64()), ("tasks", pa.list_(pa.string())), ("length", pa.int64()),
            ("data/chunk_index", pa.int64()), ("data/file_index", pa.int64()),
            ("dataset_from_index", pa.int64()), ("dataset_to_index", pa.int64()),
        ]
        for cam in self.cameras:
            k = f"videos/{L.video_key(cam)}"
            cols += [(f"{k}/chunk_index", pa.int64()), (f"{k}/file_index", pa.int64()),
                     (f"{k}/from_timestamp", pa.float64()), (f"{k}/to_timestamp", pa.float64())]
        cols += [
            ("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64()),
            ("success", pa.bool_()), ("source", pa.string()), ("interventions", pa.int64()),
            ("return", pa.float64()), ("final/observation.state", pa.list_(pa.float32())),
            ("metadata", pa.string()),
        ]
        for key in self.info["features"]:
            for s in ("min", "max", "mean", "std"):
                cols.append((f"stats/{key}/{s}", pa.list_(pa.float64())))
            cols.append((f"stats/{key}/count", pa.list_(pa.int64())))
        return pa.schema(cols)

    def _write_meta_file(self, number: int) -> None:
        lo, hi = number * L.EPISODES_PER_META_FILE, (number + 1) * L.EPISODES_PER_META_FILE
        records = []
        for row, st in zip(self._rows[lo:hi], self._stats[lo:hi], strict=True):
            rec = dict(row)
            for key, s in st.items():
                for name, v in s.items():
                    rec[f"stats/{key}/{name}"] = np.asarray(v).reshape(-1).tolist()
            records.append(rec)
        schema = self._meta_schema()
        table = pa.Table.from_pylist(records, schema=schema)
        L.write_parquet(L.episodes_file(self.root, number), table)

    def _global_stats(self) -> dict[str, Any]:
        keys = list(self.info["features"])
        merged = {k: L.merge_stats([s[k] for s in self._stats if k in s]) for k in keys}
        return L.stats_to_json({k: v for k, v in merged.items() if v})

    # ---- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        """Discard an unfinished episode and release the dataset. Idempotent."""
        if self._episode is not None:
            self.discard_episode()
        self._release_lock()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


class _ImageStats:
    """Per-channel running min/max/mean/std of one camera over an episode, in [0, 1].

    Uses every frame but only about 32x32 pixels of each (a strided subsample): the
    statistics only feed input normalisation, and this keeps them cheap at any size.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.n = 0
        self.sum = self.sumsq = self.lo = self.hi = None

    def add(self, img: np.ndarray) -> None:
        h, w, c = img.shape
        sub = img[:: max(1, h // 32), :: max(1, w // 32)]
        x = np.ascontiguousarray(sub.reshape(-1, c).T)  # (C, pixels): fast row reductions
        lo, hi = x.min(1), x.max(1)
        x = x.astype(np.float32) / 255.0
        s, s2 = x.sum(1, dtype=np.float64), np.einsum("ij,ij->i", x, x, dtype=np.float64)
        lo, hi = lo / 255.0, hi / 255.0
        if self.sum is None:
            self.sum, self.sumsq, self.lo, self.hi = s, s2, lo, hi
        else:
            self.sum, self.sumsq = self.sum + s, self.sumsq + s2
            self.lo, self.hi = np.minimum(self.lo, lo), np.maximum(self.hi, hi)
        self.n += x.shape[1]
        self.frames += 1

    def result(self) -> dict[str, np.ndarray]:
        mean = self.sum / self.n
        var = np.maximum(self.sumsq / self.n - mean**2, 0.0)
        shape = (len(mean), 1, 1)
        return {"min": self.lo.reshape(shape), "max": self.hi.reshape(shape), "mean": mean.reshape(shape),
                "std": np.sqrt(var).reshape(shape), "count": np.array([self.frames])}
