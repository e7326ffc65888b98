"""The training loop with a reward term: every stored transition carries the term's reward for *that*
transition, batched terms see whole batches (flushed at episode ends), and no transition is learned from
before it is scored. Image-reading terms get their camera rendered."""

import numpy as np
import pytest

from policies.config import ConfigError, compose
from policies.train import Trainer
from rewards import RewardOutput, RewardTerm, register

TOY_TASK = "env_id: policies.toy_env:rftoy/PointReach-v0\nmax_episode_steps: 20\nkwargs: {}\n"


class StepIndex(RewardTerm):
    """reward = episode_step + 100 * next x: ties each reward to its own transition, so a
    misaligned store (a reward written to the wrong row) is visible."""

    name = "step_index"
    requires = ("position",)
    batched = True
    calls: list[int] = []
    nan = False

    def compute(self, batch):
        StepIndex.calls.append(len(batch))
        r = batch.episode_step + 100.0 * batch.next_obs["position"][:, 0]
        if StepIndex.nan:
            r = r.copy()
            r[0] = np.nan
        return RewardOutput(r, {"x": batch.next_obs["position"][:, 0]})


@register("test_step_index")
def _build(params, spec):
    term = StepIndex()
    term.batched = bool(params.get("batched", True))
    return term


def toy_cfg(tmp_path, *extra):
    (tmp_path / "cfg" / "task").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    return compose([f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", f"run_dir={tmp_path / 'r'}",
                    "total_steps=200", "warmup_steps=100", "eval_every=0", "eval_episodes=1", "checkpoint_every=0",
                    "video=false", "progress=false", "agent.hidden=[16]", "agent.batch_size=16",
                    "reward.kind=test_step_index", "reward.name=test_step_index", *extra])


@pytest.mark.parametrize(("num_envs", "batched"), [(1, True), (2, True), (2, False)])
def test_stored_rewards_belong_to_their_transitions(tmp_path, num_envs, batched):
    StepIndex.calls, StepIndex.nan = [], False
    cfg = toy_cfg(tmp_path, f"num_envs={num_envs}", "reward.relabel_batch=8", "reward.scale=0.5",
                  f"+reward.params.batched={batched}")
    trainer = Trainer(cfg)
    try:
        trainer.train()
        buf, n = trainer.buffer, trainer.buffer.ptr
        stream = trainer.reward_stream
        assert n * num_envs + stream.waiting == trainer.step == 200  # scored or still held, none lost
        # rebuild episode_step per env column from the stored episode ends
        step_in_ep = np.zeros((n, num_envs))
        for t in range(1, n):
            step_in_ep[t] = np.where(buf.episode_end[t - 1], 0, step_in_ep[t - 1] + 1)
        x_next = buf.next_obs[:n, :, 0]
        np.testing.assert_allclose(buf.reward[:n], 0.5 * (step_in_ep + 100.0 * x_next), rtol=1e-5, atol=1e-4)
        if batched:  # held back up to relabel_batch transitions; episode ends flush early
            assert max(StepIndex.calls) <= 8 and max(StepIndex.calls) > num_envs
        else:
            assert set(StepIndex.calls) == {num_envs}
        episodes = [r for r in trainer.rows if r["kind"] == "episode"]
        assert episodes and all("reward_return" in r and "reward/x" in r for r in episodes)
        # the logged return is the term's (unscaled) reward summed over the episode
        first = episodes[0]
        L = first["episode_length"]
        col = 0 if num_envs == 1 else None
        if col is not None:
            assert first["reward_return"] == pytest.approx(2 * buf.reward[:L, 0].sum(), rel=1e-4)
    finally:
        trainer.close()


def test_nonfinite_reward_stops_with_the_term_name_or_is_zeroed(tmp_path):
    StepIndex.calls, StepIndex.nan = [], True
    try:
        trainer = Trainer(toy_cfg(tmp_path))
        try:
            with pytest.raises(FloatingPointError, match=r"'test_step_index'.*reward.nonfinite=zero"):
                trainer.train()
        finally:
            trainer.close()
        trainer = Trainer(toy_cfg(tmp_path / "b", "reward.nonfinite=zero"))
        try:
            trainer.train()
            assert trainer.reward_stream.nonfinite_count >= 1
            assert np.isfinite(trainer.buffer.reward[: trainer.buffer.ptr]).all()
        finally:
            trainer.close()
    finally:
        StepIndex.nan = False


class SeesFrames(RewardTerm):
    name = "sees_frames"
    requires = ("image_front",)
    batched = True
    render_size = 24
    shapes: list[tuple] = []

    def compute(self, batch):
        img = batch.next_obs["image_front"]
        SeesFrames.shapes.append(img.shape)
        return RewardOutput(img.reshape(len(img), -1).mean(1) / 255.0)


@register("test_sees_frames")
def _build_frames(params, spec):
    return SeesFrames()


def test_image_terms_get_their_camera_and_the_policy_stays_state_based(tmp_path):
    SeesFrames.shapes = []
    cfg = compose(["task=panda_reach", f"run_dir={tmp_path / 'r'}", "total_steps=60", "warmup_steps=60",
                   "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false", "progress=false",
                   "reward.kind=test_sees_frames", "reward.relabel_batch=16", "task.max_episode_steps=30"])
    trainer = Trainer(cfg)
    try:
        trainer.train()
        assert SeesFrames.shapes and all(s[1:] == (24, 24, 3) for s in SeesFrames.shapes)
        assert sum(s[0] for s in SeesFrames.shapes) == 60  # every transition scored (episode ends at 30, 60)
        assert not trainer.spec.image_fields  # eval env and checkpoint spec: state only
        r = trainer.buffer.reward[: trainer.buffer.ptr, 0]
        assert np.all((r > 0) & (r < 1)) and r.std() > 0  # real frames, not blank
    finally:
        trainer.close()


def test_reward_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"reward.kind='nope'.*allowed values: .*keypoints"):
        compose(["reward.kind=nope"])
    with pytest.raises(ConfigError, match=r"reward.nonfinite='skip'.*error, zero"):
        compose(["reward.nonfinite=skip"])
    cfg = toy_cfg(tmp_path, "reward.kind=test_sees_frames")  # the toy env renders no cameras
    with pytest.raises(ConfigError, match="cannot be made with"):
        Trainer(cfg)


def test_hacking_monitor_counts_reach_the_training_log(tmp_path):
    StepIndex.calls, StepIndex.nan = [], False
    # reward = step index: high late in every episode, whether or not the point reached the goal
    trainer = Trainer(toy_cfg(tmp_path, "log_every=50", "+reward.monitor_params.min_history=20"))
    try:
        trainer.train()
        rows = [r for r in trainer.rows if r["kind"] == "train"]
        assert rows and all("monitor/flag_rate" in r for r in rows)
        assert rows[-1]["monitor/transitions"] == 200 - trainer.reward_stream.waiting
        assert rows[-1]["monitor/flagged"] > 0 and rows[-1]["monitor/rate/high_reward_failure"] > 0
    finally:
        trainer.close()
    trainer = Trainer(toy_cfg(tmp_path / "off", "log_every=50", "reward.monitor=false"))
    try:
        trainer.train()
        assert not any("monitor/flag_rate" in r for r in trainer.rows)
    finally:
        trainer.close()
