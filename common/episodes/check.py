"""Dataset validation (``check``), the human-readable summary, and ``repair``.

``check`` exits 1 and lists every problem when the layout is broken (missing files,
offsets that do not add up, frame counts that disagree with the videos, columns
that do not match the schema, NaN in state or action, episodes not contiguous);
leftovers of an interrupted write are warnings (readers ignore them), which
``repair`` (or the next writer) deletes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from common.episodes import layout as L
from common.episodes import video as V
from common.episodes.reader import Dataset, load_metadata

_REQUIRED_INFO = ("codebase_version", "fps", "features", "data_path", "total_episodes", "total_frames",
                  "total_tasks", "chunks_size", "splits")
_NO_NAN = ("observation.state", "action", "action.policy", "next.reward")


def _check_episode(ds: Dataset, i: int, row: dict[str, Any], problems: list[str]) -> None:
    features = ds.meta.features
    length = int(row["length"])
    where = f"episode {i}"
    if row["dataset_to_index"] - row["dataset_from_index"] != length:
        problems.append(f"{where}: dataset_to_index - dataset_from_index != length {length}")
    c, f = L.file_location(i)
    if (row["data/chunk_index"], row["data/file_index"]) != (c, f):
        problems.append(f"{where}: data file index ({row['data/chunk_index']}, {row['data/file_index']}), expected ({c}, {f})")
    path = L.data_file(ds.root, i)
    if not path.exists():
        problems.append(f"{where}: data file {path.relative_to(ds.root)} is missing")
        return
    table = pq.read_table(path)
    want = L.data_schema(features)
    if table.schema.names != want.names:
        missing = sorted(set(want.names) - set(table.schema.names))
        extra = sorted(set(table.schema.names) - set(want.names))
        problems.append(f"{where}: columns differ from info.json features (missing {missing}, unexpected {extra})")
        return
    for fld in want:
        if not table.schema.field(fld.name).type.equals(fld.type):
            problems.append(f"{where}: column {fld.name!r} is {table.schema.field(fld.name).type}, schema says {fld.type}")
    if table.num_rows != length:
        problems.append(f"{where}: {table.num_rows} frames in {path.relative_to(ds.root)}, metadata says {length}")
        return
    col = {n: L.column_to_numpy(table.column(n), features[n]["shape"]) for n in table.column_names}
    frames = np.arange(length)
    if not np.array_equal(col["frame_index"], frames):
        problems.append(f"{where}: frame_index is not 0..{length - 1}")
    if not np.all(col["episode_index"] == i):
        problems.append(f"{where}: episode_index column holds {sorted(set(col['episode_index'].tolist()))[:5]}")
    if not np.array_equal(col["index"], row["dataset_from_index"] + frames):
        problems.append(f"{where}: index column is not dataset_from_index + frame_index")
    if not np.allclose(col["timestamp"], frames / ds.fps, atol=1e-4):
        problems.append(f"{where}: timestamps are not frame_index / fps ({ds.fps})")
    task_ok = [ds.tasks.index(t) for t in row["tasks"] if t in ds.tasks]
    if len(task_ok) != len(row["tasks"]) or not np.all(np.isin(col["task_index"], task_ok)):
        problems.append(f"{where}: task_index {sorted(set(col['task_index'].tolist()))} does not match its tasks {row['tasks']}")
    for name in (*_NO_NAN, *(L.state_key(f.name) for f in ds.spec.state_fields)):
        if not np.all(np.isfinite(col[name])):
            problems.append(f"{where}: {name} contains NaN or inf")
    for name in ("action", "action.policy"):
        if np.any(np.abs(col[name]) > 1.0 + 1e-5):
            problems.append(f"{where}: {name} leaves [-1, 1] (max |a| = {np.abs(col[name]).max():.3f})")
    parts = [col[L.state_key(f.name)].reshape(length, -1) for f in ds.spec.state_fields]
    if parts and not np.array_equal(np.concatenate(parts, axis=1), col["observation.state"]):
        problems.append(f"{where}: observation.state differs from its observation.<field> columns")
    if row["source"] not in L.SOURCES:
        problems.append(f"{where}: source {row['source']!r} is not one of {', '.join(L.SOURCES)}")
    final = row.get("final/observation.state")
    if final is not None and len(final) != ds.spec.state_dim:
        problems.append(f"{where}: final/observation.state has {len(final)} values, state_dim is {ds.spec.state_dim}")
    for cam in ds.cameras:
        key = L.video_key(cam)
        vpath = L.video_file(ds.root, cam, i)
        if not vpath.exists():
            problems.append(f"{where}: video {vpath.relative_to(ds.root)} is missing")
            continue
        if (row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]) != (c, f):
            problems.append(f"{where}: {key} file index does not match the episode's file")
        if abs(row[f"videos/{key}/from_timestamp"]) > 1e-9 or abs(row[f"videos/{key}/to_timestamp"] - length / ds.fps) > 1e-4:
            problems.append(f"{where}: {key} timestamps {row[f'videos/{key}/from_timestamp']}..{row[f'videos/{key}/to_timestamp']}, expected 0..{length / ds.fps}")
        try:
            info = V.probe(vpath)
        except Exception as err:  # noqa: BLE001 - any decoder failure is a problem to report
            problems.append(f"{where}: cannot decode {vpath.relative_to(ds.root)}: {err}")
            continue
        expect = length + (1 if final is not None else 0)
        if info["frames"] != expect:
            problems.append(f"{where}: {key} has {info['frames']} frames, expected {expect}")
        h, w = features[key]["shape"][:2]
        if (info["height"], info["width"]) != (h, w):
            problems.append(f"{where}: {key} is {info['height']}x{info['width']}, features say {h}x{w}")


def check_dataset(root: str | Path) -> tuple[list[str], list[str]]:
    """Validate a dataset; returns (problems, warnings). No problems means every reader can use it."""
    root = Path(root)
    problems: list[str] = []
    info_path = root / L.INFO_PATH
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as err:
            return [f"{L.INFO_PATH} is not valid JSON: {err}"], []
        missing = [k for k in _REQUIRED_INFO if k not in info]
        if missing:
            return [f"{L.INFO_PATH} lacks {missing}"], []
    try:
        ds = Dataset(root)
    except (L.DatasetError, KeyError, OSError, ValueError) as err:
        return [str(err)], []
    meta = ds.meta
    warnings = [f"leftover from an interrupted write (ignored by readers; `rewardforge-dataset repair` "
                f"deletes it): {p.relative_to(root)}" for p in meta.leftovers]
    if meta.extra_rows:
        warnings.append(f"meta/episodes holds {meta.extra_rows} uncommitted row(s) (ignored; repair removes them)")
    if meta.extra_tasks:
        warnings.append(f"meta/tasks.parquet holds {meta.extra_tasks} uncommitted task(s) (ignored; repair removes them)")
    for p in (L.STATS_PATH, L.TASKS_PATH):
        if not (root / p).exists():
            problems.append(f"{p} is missing")
    for key in ("observation.state", "action", "action.policy", *L.FRAME_FEATURES):
        if key not in ds.info["features"]:
            problems.append(f"features lack {key!r}")
    if ds.info["features"].get("observation.state", {}).get("shape") != [ds.spec.state_dim]:
        problems.append(f"observation.state shape in features differs from the spec's state_dim {ds.spec.state_dim}")
    n = ds.num_episodes
    if ds.info.get("splits") != ({"train": f"0:{n}"} if n else {}):
        problems.append(f"splits {ds.info.get('splits')} do not cover the {n} episodes")
    expected_from = 0
    for i, row in enumerate(ds.episodes):
        if row["dataset_from_index"] != expected_from:
            problems.append(f"episode {i}: dataset_from_index {row['dataset_from_index']}, expected {expected_from} (episodes must be contiguous)")
        expected_from = row["dataset_to_index"]
        _check_episode(ds, i, row, problems)
    if expected_from != ds.num_frames:
        problems.append(f"episodes hold {expected_from} frames, info.json total_frames says {ds.num_frames}")
    return problems, warnings


def format_summary(s: dict[str, Any]) -> str:
    rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.1f}%"
    ret = "n/a" if s["mean_return"] is None else f"{s['mean_return']:.3f}"
    cams = ", ".join(f"{c} {h}x{w}" for c, (h, w) in s["cameras"].items()) or "none"
    lines = [
        f"dataset      {s['root']}",
        f"embodiment   {s['embodiment']} at {s['fps']:g} fps",
        f"episodes     {s['episodes']} ({s['frames']} frames, mean length {s['mean_length']:.1f})",
        f"success      {rate}   mean return {ret}",
        f"sources      {', '.join(f'{k} {v}' for k, v in sorted(s['sources'].items())) or 'none'}",
        f"interventions {s['intervention_frames']} frames in {s['episodes_with_interventions']} episodes",
        f"cameras      {cams}",
        f"final obs    {s['final_observations']} of {s['episodes']} episodes",
        f"tasks        {'; '.join(s['tasks']) or 'none'}",
        f"size         {s['size_mb']:.2f} MiB",
    ]
    return "\n".join(lines)


def repair(root: str | Path) -> int:
    """Delete leftovers of an interrupted write; returns how many files and rows went."""
    from common.episodes.writer import DatasetWriter

    meta = load_metadata(root)
    count = len(meta.leftovers) + meta.extra_rows + meta.extra_tasks
    DatasetWriter(root, meta.spec).close()  # opening a writer repairs
    return count
