"""The episode format: round trip, append, refusal of bad input, check, and crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.episodes import Dataset, DatasetError, DatasetWriter, check_dataset, cli
from common.episodes import layout as L
from common.spec import ActionSpec, EmbodimentSpec, ObsField

REPO = Path(__file__).resolve().parent.parent
H, W = 24, 32  # non-square, to catch height/width swaps


def make_spec(name="toy/arm", scale=0.05, hz=10.0, with_camera=True, extra_field=False) -> EmbodimentSpec:
    fields = [
        ObsField("ee_pos", (3,), units="m"),
        ObsField("gripper", (1,), units="1"),
        ObsField("keypoints", (2, 3), units="m"),
    ]
    if extra_field:
        fields.append(ObsField("force", (3,), units="N"))
    if with_camera:
        fields.append(ObsField("image_front", (H, W, 3), dtype="uint8", frame="camera", units="px"))
    return EmbodimentSpec(name, hz, ActionSpec(("dx", "dy", "dz", "gripper"), (scale, scale, scale, 1.0)),
                          tuple(fields), (0.0, -1.0, 0.0), (1.0, 1.0, 1.0))


def image(t: int, ep: int = 0) -> np.ndarray:
    """A smooth frame (gradients, a moving soft blob) like a rendered scene."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    blob = 120 * np.exp(-((xx - 4 - 2 * t) ** 2 + (yy - 12) ** 2) / 30.0)
    img = np.stack([40 + 4 * xx + blob, 60 + 5 * yy, 100 + 30 * ep + 0 * xx], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def obs_at(t: int, ep: int = 0) -> dict[str, np.ndarray]:
    return {
        "ee_pos": np.array([0.1 * t, 0.01 * ep, 0.3], np.float32),
        "gripper": np.array([1.0 - 0.1 * t], np.float32),
        "keypoints": np.arange(6, dtype=np.float32).reshape(2, 3) + t,
        "image_front": image(t, ep),
        "ignored_extra": np.zeros(2),
    }


def action_at(t: int) -> np.ndarray:
    return np.array([np.sin(t), np.cos(t), -0.5, 1.0 if t < 3 else -1.0], np.float32)


def write_episode(w: DatasetWriter, ep: int, length: int, *, task="pick the block", source="expert",
                  final=True, intervene_at=(), done=True, truncated=False, success_from=None) -> int:
    w.begin_episode(task, source=source, metadata={"seed": ep})
    for t in range(length):
        last = t == length - 1
        w.add_frame(
            obs_at(t, ep), action_at(t),
            policy_action=np.zeros(4) if t in intervene_at else None,
            intervention=t in intervene_at, reward=float(t) - 0.5,
            success=success_from is not None and t >= success_from,
            done=done and last, truncated=truncated and last,
        )
    return w.end_episode(final_obs=obs_at(length, ep) if final else None)


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "ds"
    with DatasetWriter(root, make_spec()) as w:
        assert write_episode(w, 0, 5, success_from=3) == 0
        assert write_episode(w, 1, 4, source="teleop", task="open the drawer", final=False, intervene_at=(1, 2),
                             truncated=True) == 1
        assert write_episode(w, 2, 6, source="policy", done=False) == 2
    return root


# ---------------------------------------------------------------------------
# round trip


def test_round_trip_keeps_every_column_and_offset(dataset):
    ds = Dataset(dataset)
    assert (ds.num_episodes, ds.num_frames, ds.fps, ds.cameras) == (3, 15, 10.0, ("front",))
    assert ds.tasks == ["pick the block", "open the drawer"]
    assert ds.spec.differences(make_spec()) == []
    ep = ds.episode(1, images=True)
    T = 4
    np.testing.assert_array_equal(ep["observation.ee_pos"], np.stack([obs_at(t, 1)["ee_pos"] for t in range(T)]))
    np.testing.assert_array_equal(ep["observation.keypoints"], np.stack([obs_at(t, 1)["keypoints"] for t in range(T)]))
    assert ep["observation.keypoints"].shape == (T, 2, 3) and ep["observation.gripper"].shape == (T, 1)
    assert ep["observation.state"].shape == (T, 10)
    np.testing.assert_array_equal(ep["observation.state"][:, :3], ep["observation.ee_pos"])
    np.testing.assert_allclose(ep["action"], np.stack([action_at(t) for t in range(T)]))
    np.testing.assert_array_equal(ep["action.policy"][1], np.zeros(4))
    np.testing.assert_array_equal(ep["action.policy"][0], ep["action"][0])
    np.testing.assert_array_equal(ep["intervention"], [False, True, True, False])
    np.testing.assert_allclose(ep["next.reward"], np.arange(T) - 0.5)
    np.testing.assert_array_equal(ep["next.done"], [False, False, False, True])
    np.testing.assert_array_equal(ep["next.truncated"], [False, False, False, True])
    np.testing.assert_array_equal(ep["index"], 5 + np.arange(T))  # episode 0 had 5 frames
    np.testing.assert_array_equal(ep["task_index"], np.ones(T))
    np.testing.assert_allclose(ep["timestamp"], np.arange(T) / 10.0, atol=1e-6)
    assert "final.observation.state" not in ep and "final.observation.images.front" not in ep
    # lossy video: close to the original frames
    frames = ep["observation.images.front"]
    want = np.stack([image(t, 1) for t in range(T)]).astype(int)
    assert frames.shape == (T, H, W, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - want).mean() < 3.0
    ep0 = ds.episode(0, images=["front"])
    np.testing.assert_array_equal(ep0["final.observation.state"][:3], obs_at(5, 0)["ee_pos"])
    assert np.abs(ep0["final.observation.images.front"].astype(int) - image(5, 0)).mean() < 3.0
    assert len(list(ds.frames("front"))) == 15  # final frames left out
    rows = ds.episodes
    assert [r["success"] for r in rows] == [True, False, False]
    assert [r["source"] for r in rows] == ["expert", "teleop", "policy"]
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 5), (5, 9), (9, 15)]
    assert json.loads(rows[2]["metadata"]) == {"seed": 2}


def test_transitions_shift_next_obs_and_split_terminated_truncated(dataset):
    tr = Dataset(dataset).transitions(images=True)
    assert tr["action"].shape == (15, 4) and tr["obs"]["keypoints"].shape == (15, 2, 3)
    # within episode 0: next_obs is the following frame; its last uses the stored final observation
    np.testing.assert_array_equal(tr["next_obs"]["ee_pos"][:4], tr["obs"]["ee_pos"][1:5])
    np.testing.assert_array_equal(tr["next_obs"]["ee_pos"][4], obs_at(5, 0)["ee_pos"])
    np.testing.assert_array_equal(tr["next_state"][:4], tr["state"][1:5])
    assert np.abs(tr["next_obs"]["image_front"][4].astype(int) - image(5, 0)).mean() < 3.0
    # episode 1 stored no final observation: the last next_obs repeats obs and says so
    np.testing.assert_array_equal(tr["next_obs"]["ee_pos"][8], tr["obs"]["ee_pos"][8])
    assert tr["next_obs_missing"].tolist() == [False] * 8 + [True] + [False] * 6
    # episode 0 terminated, 1 was truncated by its time limit, 2 stopped without a done flag (truncated)
    assert np.flatnonzero(tr["terminated"]).tolist() == [4]
    assert np.flatnonzero(tr["truncated"]).tolist() == [8, 14]
    assert np.flatnonzero(tr["intervention"]).tolist() == [6, 7]
    assert tr["success"].tolist()[:5] == [False, False, False, True, True]


def test_stats_pool_episodes_exactly(dataset):
    ds = Dataset(dataset)
    actions = np.concatenate([ds.episode(i)["action"] for i in range(3)]).astype(np.float64)
    st = ds.stats["action"]
    np.testing.assert_allclose(st["mean"], actions.mean(0), atol=1e-6)
    np.testing.assert_allclose(st["std"], actions.std(0), atol=1e-6)
    np.testing.assert_allclose(st["max"], actions.max(0))
    assert st["count"] == [15]
    img = np.asarray(ds.stats["observation.images.front"]["mean"])
    assert img.shape == (3, 1, 1) and 0.0 < img.min() < img.max() < 1.0


def test_layout_follows_lerobot_v3(dataset):
    info = json.loads((dataset / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 15, 2)
    assert info["splits"] == {"train": "0:3"}
    feats = info["features"]
    assert feats["observation.images.front"]["dtype"] == "video"
    assert feats["observation.images.front"]["shape"] == [H, W, 3]
    assert feats["observation.keypoints"]["shape"] == [6]
    assert feats["action"]["names"] == ["dx", "dy", "dz", "gripper"]
    assert info["rewardforge"]["format"] == "rewardforge.episodes/1"
    assert EmbodimentSpec.from_dict(info["rewardforge"]["embodiment"]).differences(make_spec()) == []
    schema = pq.read_schema(dataset / "data/chunk-000/file-002.parquet")
    assert schema.field("action").type == pa.list_(pa.float32(), 4)
    assert schema.field("next.reward").type == pa.float32() and schema.field("index").type == pa.int64()
    ep_cols = pq.read_schema(dataset / "meta/episodes/chunk-000/file-000.parquet").names
    for col in ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                "dataset_to_index", "videos/observation.images.front/from_timestamp",
                "videos/observation.images.front/to_timestamp", "stats/action/mean", "success", "source"):
        assert col in ep_cols
    assert (dataset / "videos/observation.images.front/chunk-000/file-002.mp4").exists()
    pd = pytest.importorskip("pandas")
    tasks = pd.read_parquet(dataset / "meta/tasks.parquet")
    assert tasks.index.name == "task" and int(tasks.loc["open the drawer"].task_index) == 1


# ---------------------------------------------------------------------------
# append, discard, refusals


def test_append_continues_indices_and_refuses_other_embodiments(dataset):
    with DatasetWriter(dataset, make_spec()) as w:
        assert w.num_episodes == 3
        assert write_episode(w, 3, 2, task="open the drawer") == 3
    ds = Dataset(dataset)
    assert (ds.num_episodes, ds.num_frames, ds.tasks) == (4, 17, ["pick the block", "open the drawer"])
    assert (ds.episodes[3]["dataset_from_index"], ds.episodes[3]["dataset_to_index"]) == (15, 17)
    assert check_dataset(dataset) == ([], [])
    with pytest.raises(DatasetError) as err:
        DatasetWriter(dataset, make_spec(scale=0.02, extra_field=True))
    assert "action scale" in str(err.value) and "'force'" in str(err.value)
    with pytest.raises(DatasetError, match="fps: dataset has 10.0"):
        DatasetWriter(dataset, make_spec(), fps=20)
    with pytest.raises(DatasetError, match="cameras: dataset has"):
        DatasetWriter(dataset, make_spec(), cameras=[])


def test_discard_leaves_no_trace_and_reuses_the_index(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root, make_spec()) as w:
        write_episode(w, 0, 3)
        w.begin_episode("x", source="policy")
        w.add_frame(obs_at(0), action_at(0))
        w.discard_episode()
        assert not w.recording
        assert write_episode(w, 1, 2) == 1
        w.begin_episode("left open", source="policy")
        w.add_frame(obs_at(0), action_at(0))
    # close() dropped the unfinished episode
    ds = Dataset(root)
    assert ds.num_episodes == 2 and ds.num_frames == 5 and ds.tasks == ["pick the block"]
    assert check_dataset(root) == ([], [])


def test_bad_input_is_refused_with_what_is_wrong(tmp_path):
    root = tmp_path / "ds"
    w = DatasetWriter(root, make_spec())
    with pytest.raises(DatasetError, match="before begin_episode"):
        w.add_frame(obs_at(0), action_at(0))
    with pytest.raises(DatasetError, match="source must be one of expert, noisy, teleop"):
        w.begin_episode("task", source="human")
    w.begin_episode("task")
    bad = obs_at(0)
    bad["ee_pos"] = np.array([np.nan, 0, 0])
    with pytest.raises(DatasetError, match="'ee_pos' contains NaN"):
        w.add_frame(bad, action_at(0))
    bad = obs_at(0)
    bad["keypoints"] = np.zeros(6)
    del bad["gripper"]
    with pytest.raises(DatasetError, match=r"missing 'gripper'.*'keypoints' has shape \(6,\)"):
        w.add_frame(bad, action_at(0))
    bad = obs_at(0)
    bad["image_front"] = bad["image_front"].astype(np.float32)
    with pytest.raises(DatasetError, match="image_front"):
        w.add_frame(bad, action_at(0))
    with pytest.raises(DatasetError, match=r"outside \[-1, 1\]"):
        w.add_frame(obs_at(0), np.array([2.0, 0, 0, 0]))
    with pytest.raises(DatasetError, match="expected \\(4,\\)"):
        w.add_frame(obs_at(0), np.zeros(3))
    with pytest.raises(DatasetError, match="reward of frame 0"):
        w.add_frame(obs_at(0), action_at(0), reward=float("inf"))
    with pytest.raises(DatasetError, match="no frames"):
        w.end_episode()
    # a second writer on the same dataset is refused while the first is open
    with pytest.raises(DatasetError, match="already open for writing"):
        DatasetWriter(root, make_spec())
    w.close()
    DatasetWriter(root, make_spec()).close()
    # odd image sizes cannot be H.264/yuv420p video; unknown cameras are named
    odd = EmbodimentSpec("odd", 10.0, ActionSpec(("a",), (1.0,)),
                         (ObsField("image_front", (25, 32, 3), dtype="uint8"),))
    with pytest.raises(ValueError, match="needs even height and width"):
        DatasetWriter(tmp_path / "odd", odd)
    with pytest.raises(DatasetError, match=r"cameras \['wrist'\] are not image fields"):
        DatasetWriter(tmp_path / "cam", make_spec(), cameras=["wrist"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        DatasetWriter(tmp_path / "junk", make_spec())


# ---------------------------------------------------------------------------
# check


def test_check_finds_broken_datasets(dataset, capsys):
    assert check_dataset(dataset) == ([], [])
    cli.main(["check", str(dataset)])
    out = capsys.readouterr().out
    assert "episodes     3 (15 frames" in out and "teleop 1" in out and "check: OK" in out
    cli.main(["summary", "--json", str(dataset)])
    s = json.loads(capsys.readouterr().out)
    assert s["success_rate"] == pytest.approx(1 / 3) and s["intervention_frames"] == 2
    assert s["cameras"] == {"front": [H, W]}

    # a missing video, a truncated data file, NaN in an action
    (dataset / "videos/observation.images.front/chunk-000/file-000.mp4").unlink()
    path1 = dataset / "data/chunk-000/file-001.parquet"
    pq.write_table(pq.read_table(path1).slice(0, 3), path1)
    path2 = dataset / "data/chunk-000/file-002.parquet"
    t = pq.read_table(path2)
    act = t.column("action").combine_chunks().flatten().to_numpy().copy()
    act[0] = np.nan
    t = t.set_column(t.schema.get_field_index("action"), "action",
                     pa.FixedSizeListArray.from_arrays(pa.array(act), 4))
    pq.write_table(t, path2)
    problems, _ = check_dataset(dataset)
    text = "\n".join(problems)
    assert "episode 0: video videos/observation.images.front/chunk-000/file-000.mp4 is missing" in text
    assert "episode 1: 3 frames in data/chunk-000/file-001.parquet, metadata says 4" in text
    assert "episode 2: action contains NaN" in text
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check", str(dataset)])
    assert exit_.value.code == 1
    assert "3 problem(s)" in capsys.readouterr().err


def test_check_counts_video_frames(dataset):
    # replace episode 2's video with a shorter one
    from common.episodes.video import VideoStream

    s = VideoStream(dataset / "short.mp4", 10.0)
    for t in range(3):
        s.append(image(t))
    s.close()
    os.replace(dataset / "short.mp4", dataset / "videos/observation.images.front/chunk-000/file-002.mp4")
    problems, _ = check_dataset(dataset)
    assert problems == ["episode 2: observation.images.front has 3 frames, expected 7"]  # 6 + the final frame
    assert check_dataset(dataset.parent / "nothing")[0] == [f"{dataset.parent / 'nothing'} is not a dataset: meta/info.json is missing"]


# ---------------------------------------------------------------------------
# crash safety


def test_interrupted_commit_leaves_the_previous_dataset(dataset, monkeypatch):
    """Killed after the episode's files and metadata rows are written but before info.json."""
    real = L.write_json

    def die_on_info(path, data):
        if Path(path).name == "info.json":
            raise KeyboardInterrupt("killed before the commit point")
        real(path, data)

    w = DatasetWriter(dataset, make_spec())
    monkeypatch.setattr(L, "write_json", die_on_info)
    with pytest.raises(KeyboardInterrupt):
        write_episode(w, 3, 3, task="a brand new task")
    monkeypatch.setattr(L, "write_json", real)
    w._episode = None  # the "dead" process is gone, and its lock with it
    w._release_lock()

    ds = Dataset(dataset)
    assert (ds.num_episodes, ds.num_frames, len(ds.tasks)) == (3, 15, 2)
    problems, warnings = check_dataset(dataset)
    assert problems == []
    assert any("data/chunk-000/file-003.parquet" in x for x in warnings)
    assert any("uncommitted row" in x for x in warnings) and any("uncommitted task" in x for x in warnings)
    with DatasetWriter(dataset, make_spec()) as w2:  # opening repairs
        assert write_episode(w2, 3, 2) == 3
    assert check_dataset(dataset) == ([], [])
    ds = Dataset(dataset)
    assert ds.num_frames == 17 and ds.tasks == ["pick the block", "open the drawer"]


_CHILD = r"""
import sys, time
import numpy as np
sys.path.insert(0, {tests!r})
from test_episodes import make_spec, obs_at, action_at
from common.episodes import DatasetWriter
w = DatasetWriter({root!r}, make_spec())
ep = w.num_episodes
while True:
    w.begin_episode("loop", source="policy")
    for t in range(6):
        w.add_frame(obs_at(t, ep), action_at(t), reward=1.0)
        print("frame", ep, t, flush=True)
        time.sleep(0.01)
    w.end_episode(final_obs=obs_at(6, ep))
    print("committed", ep, flush=True)
    ep += 1
"""


def _run_and_kill(root: Path, stop) -> int:
    """Start a writer loop in a subprocess, SIGKILL it when ``stop(line)`` says so; return committed count."""
    code = _CHILD.format(tests=str(REPO / "tests"), root=str(root))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=env)
    committed, deadline = 0, time.monotonic() + 45
    try:
        for line in proc.stdout:
            if line.startswith("committed"):
                committed = int(line.split()[1]) + 1
            if stop(line) or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    return committed


def test_sigkilled_writer_loses_only_the_episode_in_progress(tmp_path):
    root = tmp_path / "crash"
    # killed mid-episode: exactly the committed episodes remain
    n = _run_and_kill(root, lambda line: line.strip() == "frame 2 3")
    assert n == 2
    ds = Dataset(root)
    assert ds.num_episodes == 2 and ds.num_frames == 12
    problems, _ = check_dataset(root)
    assert problems == []
    # killed at random moments (maybe inside end_episode): committed or one more, never broken
    rng = random.Random(0)
    for _ in range(3):
        start = Dataset(root).num_episodes
        t_kill = time.monotonic() + rng.uniform(0.05, 0.6)
        n = max(start, _run_and_kill(root, lambda line, t_kill=t_kill: line.startswith("frame") and time.monotonic() > t_kill))
        got = Dataset(root).num_episodes
        assert start <= got and got - n in (0, 1), (start, n, got)
        assert check_dataset(root)[0] == []
    # appending afterwards works and cleans up
    with DatasetWriter(root, make_spec()) as w:
        k = w.num_episodes
        assert write_episode(w, k, 2) == k
    assert check_dataset(root) == ([], [])
    ds = Dataset(root)
    assert ds.num_episodes == k + 1
    assert ds.episode(k)["index"][0] == ds.num_frames - 2
