"""rewardforge-record: seeded scripted-expert episodes of a Panda task into a checked dataset."""

from __future__ import annotations

import numpy as np
import pytest

from common.episodes import Dataset, check_dataset
from sim import record as R


def _record(tmp_path, *overrides: str):
    cfg, choice = R.compose(["task=panda_reach", "task.max_episode_steps=12", "progress=false",
                             f"out={tmp_path / 'ds'}", *overrides])
    return R.record(cfg, choice)


def test_expert_episodes_are_seeded_labelled_and_appendable(tmp_path):
    s = _record(tmp_path, "episodes=2", "seed=3")
    assert s["episodes"] == 2 and s["frames"] == 24 and s["sources"] == {"expert": 2}
    assert s["frames_per_s"] > 0 and s["tasks"] == [R.TASK_TEXT["reach"]]
    ds = Dataset(tmp_path / "ds")
    assert check_dataset(ds.root) == ([], [])
    assert ds.spec.name == "panda/reach" and ds.cameras == ()
    first = ds.episode(0)
    # the label is success at any step, and each frame carries the env's success flag
    assert ds.episodes[0]["success"] == bool(first["next.success"].any())
    assert first["next.truncated"][-1] and first["next.done"][-1] and not first["next.done"][:-1].any()
    assert "final.observation.state" in first
    # the reach expert moves toward the goal: the distance shrinks over the episode
    dist = np.linalg.norm(first["observation.ee_pos"] - first["observation.goal_pos"], axis=1)
    assert dist[-1] < 0.5 * dist[0]

    # same seed, same episode; noise changes the actions and the source
    s2 = _record(tmp_path / "again", "episodes=1", "seed=3")
    np.testing.assert_array_equal(Dataset(s2["root"]).episode(0)["action"], first["action"])
    s3 = _record(tmp_path, "episodes=1", "seed=3", "noise=0.3")  # appends to the first dataset
    ds = Dataset(tmp_path / "ds")
    assert ds.num_episodes == 3 and ds.episodes[2]["source"] == "noisy"
    noisy = ds.episode(2)["action"]
    assert not np.allclose(noisy, first["action"]) and np.abs(noisy).max() <= 1.0
    assert s3["sources"] == {"expert": 2, "noisy": 1}


def test_after_success_ends_episodes_truncated_k_steps_after_the_first_success(tmp_path):
    _record(tmp_path / "full", "episodes=1", "seed=3", "task.max_episode_steps=40")
    full = Dataset(tmp_path / "full" / "ds").episode(0)
    first = int(np.argmax(full["next.success"]))
    assert full["next.success"][first] and first + 3 < 39  # the reach expert succeeds well before the limit
    _record(tmp_path / "cut", "episodes=1", "seed=3", "task.max_episode_steps=40", "after_success=2")
    ds = Dataset(tmp_path / "cut" / "ds")
    cut = ds.episode(0)
    assert len(cut["action"]) == first + 3  # the first success step plus 2 more
    np.testing.assert_array_equal(cut["action"], full["action"][: first + 3])
    # a time-limit-like end: learners bootstrap through it
    assert cut["next.truncated"][-1] and cut["next.done"][-1] and ds.episodes[0]["success"]
    assert not ds.transitions()["terminated"].any()


def test_an_episode_that_succeeds_then_loses_the_block_is_labelled_a_success(tmp_path):
    """Pick-and-place seed 50002: the expert places the block at step ~21, then it creeps out of
    the grip and the episode ends out of the goal. Evaluation counts that episode a success, so the
    recorder's label (what demos_success_only filters on) does too."""
    cfg, choice = R.compose(["task=panda_pick_place", "progress=false", "episodes=1", "seed=50002",
                             f"out={tmp_path / 'ds'}"])
    s = R.record(cfg, choice)
    ep = Dataset(tmp_path / "ds").episode(0)
    assert ep["next.success"].any() and not ep["next.success"][-1]
    assert Dataset(tmp_path / "ds").episodes[0]["success"] and s["recorded_successes"] == 1


def test_camera_frames_are_stored_as_video(tmp_path):
    _record(tmp_path, "episodes=1", "task.max_episode_steps=6", "cameras=[front]", "image_size=32")
    ds = Dataset(tmp_path / "ds")
    assert ds.cameras == ("front",) and check_dataset(ds.root) == ([], [])
    ep = ds.episode(0, images=True)
    frames = ep["observation.images.front"]
    assert frames.shape == (6, 32, 32, 3) and frames.std() > 5  # a rendered scene, not blank
    assert ep["final.observation.images.front"].shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("episodes=0", "episodes=0: must be an integer >= 1"),
        ("noise=-1", "noise=-1.0: must be >= 0"),
        ("after_success=-1", "after_success=-1: must be >= 0 or null"),
        ("image_size=33", "image_size=33: must be an even number"),
        ("episdes=3", "valid keys: task, episodes"),
        ("task=no_such_task", "no_such_task"),
    ],
)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(R.RecordConfigError, match=message):
        R.compose([override])


def test_main_prints_summary(tmp_path, capsys):
    R.main(["task=panda_reach", "task.max_episode_steps=5", "episodes=1", "progress=false", f"out={tmp_path / 'm'}"])
    out = capsys.readouterr().out
    assert "episodes     1 (5 frames" in out and "frames/s" in out
    with pytest.raises(SystemExit) as exit_:
        R.main(["episodes=0"])
    assert exit_.value.code == 2
