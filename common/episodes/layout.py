"""Paths, feature schema and statistics of the on-disk episode format (see ``common.episodes``).

Everything here is pure: it maps an :class:`~common.spec.EmbodimentSpec` and a few
settings onto the LeRobotDataset v3 names, and reads/writes the small files
atomically. The writer and the reader both build on it, so the two cannot drift.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.atomic import atomic_open
from common.spec import EmbodimentSpec

CODEBASE_VERSION = "v3.0"  # LeRobotDataset layout version we follow
FORMAT = "rewardforge.episodes/1"  # our own additions on top of it (info.json "rewardforge")
CHUNKS_SIZE = 1000  # files per chunk-XXX folder (LeRobot's default)
EPISODES_PER_META_FILE = 1000  # rows per meta/episodes parquet file (keeps each rewrite small)
# LeRobot's defaults; informational here, since we write one data file and one mp4 per episode.
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 500

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
STAGING_DIR = ".staging"  # in-progress video files; never referenced by metadata
LOCK_FILE = ".writer.lock"

SOURCES = ("expert", "noisy", "teleop", "policy", "intervention")

# Per-frame columns every dataset has, besides the observation fields and cameras.
# (dtype, shape); shape [1] means a scalar column, as in LeRobot.
FRAME_FEATURES: dict[str, tuple[str, list[int]]] = {
    "intervention": ("bool", [1]),
    "next.reward": ("float32", [1]),
    "next.success": ("bool", [1]),
    "next.done": ("bool", [1]),
    "next.truncated": ("bool", [1]),
    "timestamp": ("float32", [1]),
    "frame_index": ("int64", [1]),
    "episode_index": ("int64", [1]),
    "index": ("int64", [1]),
    "task_index": ("int64", [1]),
}

_ARROW = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}


class DatasetError(ValueError):
    """A dataset that cannot be opened, appended to or written as asked; the message says why."""


# ---------------------------------------------------------------------------
# names


def camera_name(field_name: str) -> str:
    """Spec image field ``image_front`` -> camera ``front`` (other names are kept whole)."""
    return field_name[len("image_") :] if field_name.startswith("image_") else field_name


def video_key(camera: str) -> str:
    return f"observation.images.{camera}"


def state_key(field_name: str) -> str:
    return f"observation.{field_name}"


def file_location(number: int, chunks_size: int = CHUNKS_SIZE) -> tuple[int, int]:
    """The n-th file of a kind lives in chunk ``n // chunks_size`` as file ``n % chunks_size``."""
    return number // chunks_size, number % chunks_size


def data_file(root: Path, episode: int) -> Path:
    c, f = file_location(episode)
    return root / DATA_PATH.format(chunk_index=c, file_index=f)


def video_file(root: Path, camera: str, episode: int) -> Path:
    c, f = file_location(episode)
    return root / VIDEO_PATH.format(video_key=video_key(camera), chunk_index=c, file_index=f)


def episodes_file(root: Path, meta_file_number: int) -> Path:
    c, f = file_location(meta_file_number)
    return root / EPISODES_PATH.format(chunk_index=c, file_index=f)


def _component_names(name: str, shape: Sequence[int]) -> list[str]:
    size = int(np.prod(shape)) if shape else 1
    if size == 1:
        return [name]
    return [f"{name}.{i}" for i in range(size)]


# ---------------------------------------------------------------------------
# schema


def build_features(
    spec: EmbodimentSpec, fps: float, cameras: Sequence[str], crf: int, gop: int
) -> dict[str, dict[str, Any]]:
    """The info.json ``features`` mapping for ``spec`` with the given cameras.

    State fields are flattened to vectors (LeRobot turns 2-D shapes into an
    extension type our plain parquet would not match); the original shapes live in
    the stored embodiment spec and the reader restores them.
    """
    features: dict[str, dict[str, Any]] = {}
    names: list[str] = []
    for f in spec.state_fields:
        names += _component_names(f.name, f.shape)
    features["observation.state"] = {"dtype": "float32", "shape": [spec.state_dim], "names": names}
    for f in spec.state_fields:
        key = state_key(f.name)
        if key in features or f.name in ("images",):
            raise DatasetError(f"observation field {f.name!r} clashes with the column {key!r}; rename it")
        features[key] = {"dtype": "float32", "shape": [f.size], "names": _component_names(f.name, f.shape)}
    for cam in cameras:
        h, w, c = spec.field(f"image_{cam}" if f"image_{cam}" in spec.obs_names else cam).shape
        features[video_key(cam)] = {
            "dtype": "video",
            "shape": [h, w, c],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": "h264",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": c,
                "video.crf": crf,
                "video.g": gop,
                "has_audio": False,
            },
        }
    adim = spec.action.dim
    features["action"] = {"dtype": "float32", "shape": [adim], "names": list(spec.action.layout)}
    features["action.policy"] = {"dtype": "float32", "shape": [adim], "names": list(spec.action.layout)}
    for key, (dtype, shape) in FRAME_FEATURES.items():
        features[key] = {"dtype": dtype, "shape": list(shape), "names": None}
    return features


def data_schema(features: Mapping[str, Mapping[str, Any]]) -> pa.Schema:
    """Arrow schema of a data parquet file: scalars for shape [1], fixed-size lists otherwise."""
    cols = []
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        t = _ARROW[ft["dtype"]]
        size = int(np.prod(ft["shape"]))
        cols.append(pa.field(key, t if list(ft["shape"]) == [1] else pa.list_(t, size)))
    return pa.schema(cols)


def column_to_numpy(column: pa.ChunkedArray | pa.Array, shape: Sequence[int]) -> np.ndarray:
    """A data column back to ``(rows, *shape)`` (scalars to ``(rows,)`` when shape is [1])."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type):
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(arr), *shape)
    return arr.to_numpy(zero_copy_only=False)


def numpy_to_column(values: np.ndarray, dtype: str, shape: Sequence[int]) -> pa.Array:
    values = np.asarray(values, dtype=np.bool_ if dtype == "bool" else dtype)
    if list(shape) == [1]:
        return pa.array(values.reshape(-1))
    size = int(np.prod(shape))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), size)


# ---------------------------------------------------------------------------
# statistics


def array_stats(values: np.ndarray, image: bool = False) -> dict[str, np.ndarray]:
    """min/max/mean/std/count over axis 0 (images: per channel over frames and pixels, in [0, 1])."""
    if image:  # (T, H, W, C) uint8 -> per channel, shaped (C, 1, 1) as LeRobot stores image stats
        x = values.reshape(-1, values.shape[-1]).astype(np.float64) / 255.0
        shape = (values.shape[-1], 1, 1)
    else:
        x = values.reshape(len(values), -1).astype(np.float64)
        shape = (x.shape[1],)
    return {
        "min": x.min(axis=0).reshape(shape),
        "max": x.max(axis=0).reshape(shape),
        "mean": x.mean(axis=0).reshape(shape),
        "std": x.std(axis=0).reshape(shape),
        "count": np.array([len(values)]),
    }


def merge_stats(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combine per-episode statistics exactly (population std).

    Pooled mean/variance of groups a, b (Chan, Golub & LeVeque 1979):
    ``n = na + nb``, ``mean = (na*ma + nb*mb) / n``,
    ``M2 = M2a + M2b + (mb - ma)^2 * na * nb / n`` with ``M2 = std^2 * count``.
    The count of an image feature is its number of frames (each frame weighs the same).
    """
    n = np.zeros(1)
    mean = m2 = lo = hi = None
    for p in parts:
        nb = float(p["count"][0])
        if nb == 0:
            continue
        mb, m2b = np.asarray(p["mean"], np.float64), np.asarray(p["std"], np.float64) ** 2 * nb
        if mean is None:
            n[0], mean, m2 = nb, mb, m2b
            lo, hi = np.asarray(p["min"], np.float64), np.asarray(p["max"], np.float64)
            continue
        na = n[0]
        tot = na + nb
        delta = mb - mean
        mean = mean + delta * nb / tot
        m2 = m2 + m2b + delta**2 * na * nb / tot
        lo, hi = np.minimum(lo, p["min"]), np.maximum(hi, p["max"])
        n[0] = tot
    if mean is None:
        return {}
    return {"min": lo, "max": hi, "mean": mean, "std": np.sqrt(m2 / n[0]), "count": n.astype(np.int64)}


def stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in stats.items()}


# ---------------------------------------------------------------------------
# atomic small-file writes


def write_json(path: Path, data: Any) -> None:
    with atomic_open(path) as f:
        f.write(json.dumps(data, indent=2, allow_nan=False).encode())


def write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_open(path) as f:
        pq.write_table(table, f, compression="snappy")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tasks_table(tasks: Sequence[str]) -> pa.Table:
    """meta/tasks.parquet as LeRobot writes it with pandas: the task text is the index column."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(list(tasks), pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def read_tasks(root: Path) -> list[str]:
    table = pq.read_table(root / TASKS_PATH)
    idx = table.column("task_index").to_pylist()
    text = table.column("task").to_pylist()
    order = sorted(range(len(idx)), key=lambda i: idx[i])
    if [idx[i] for i in order] != list(range(len(idx))):
        raise DatasetError(f"{root / TASKS_PATH}: task_index values are not 0..{len(idx) - 1}")
    return [text[i] for i in order]


def is_finite_number(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
