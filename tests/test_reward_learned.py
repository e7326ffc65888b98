"""Learned rewards: labelled frames, the success-classifier ensemble, its reward term, VIP.

Most classifier checks run on synthetic frames whose label is a visible feature (a red
square = success, a blue one = failure, over a per-episode noisy background), which a
short training run learns reliably. A small set of real Panda reach frames checks the
whole path (collect -> train -> reward term -> VIP) in simulation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import rewards
from common.spec import ActionSpec, EmbodimentSpec, ObsField
from rewards.frames import LabelledFrames, split_by_episode
from rewards.learned import (
    ClassifierReward,
    ClassifierTrainConfig,
    Embedder,
    VIPReward,
    calibrate_threshold,
    load_classifier,
    train_classifier,
)

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
CAM = "handcam_rgb"


def synthetic_frames(n_eps: int, steps: int = 8, size: int = SIZE, seed: int = 0, ep_offset: int = 0) -> LabelledFrames:
    """Episodes over a per-episode noisy background. Half of them "succeed" from a random step
    on (a red 6x6 square appears somewhere); before that, and in the failing half, a blue square."""
    rng = np.random.default_rng(seed)
    frames, success, progress, episode, step = [], [], [], [], []
    for e in range(n_eps):
        bg = rng.integers(40, 90, (size, size, 3))
        t_success = int(rng.integers(2, steps)) if e % 2 == 0 else steps + 1
        for t in range(steps):
            img = np.clip(bg + rng.integers(-10, 11, bg.shape), 0, 255).astype(np.uint8)
            y, x = rng.integers(4, size - 10, 2)
            ok = t >= t_success
            img[y:y + 6, x:x + 6] = (220, 30, 30) if ok else (30, 30, 220)
            frames.append(img)
            success.append(ok)
            progress.append(1.0 if ok else t / steps)
            episode.append(ep_offset + e)
            step.append(t)
    return LabelledFrames(np.stack(frames), np.array(success), np.array(progress), np.array(episode),
                          np.array(step), np.full(len(frames), "synthetic"), camera="front", env_id="synthetic")


def image_spec(camera: str = "front", size: int = SIZE) -> EmbodimentSpec:
    return EmbodimentSpec(
        name="test/images", control_hz=10.0, action=ActionSpec(("dx", "dy", "dz", "gripper"), (0.05, 0.05, 0.05, 1.0)),
        observations=(ObsField("ee_pos", (3,)), ObsField(f"image_{camera}", (size, size, 3), dtype="uint8", frame="camera")),
    )


def transitions(frames: np.ndarray, next_frames: np.ndarray, camera: str = "front") -> rewards.Transitions:
    n = len(frames)
    key = f"image_{camera}"
    return rewards.Transitions(obs={key: frames, "ee_pos": np.zeros((n, 3), np.float32)},
                               action=np.zeros((n, 4), np.float32),
                               next_obs={key: next_frames, "ee_pos": np.zeros((n, 3), np.float32)})


FAST = ClassifierTrainConfig(steps=80, batch_size=32, ensemble=3, hidden=64,
                             encoder={"type": "cnn", "channels": [16, 32, 32], "feature_dim": 32},
                             device="cpu", seed=0)


@pytest.fixture(scope="module")
def synthetic_split():
    return split_by_episode(synthetic_frames(30, seed=0), seed=0)


@pytest.fixture(scope="module")
def synthetic_model(synthetic_split):
    torch.set_num_threads(1)
    train, val, test = synthetic_split
    return train_classifier(train, val, FAST, test=test, progress_bar=False)


# ---------------------------------------------------------------------------
# frames


def test_split_by_episode_has_no_leakage_and_both_labels_everywhere():
    data = synthetic_frames(20, steps=5, seed=3)
    parts = split_by_episode(data, (0.6, 0.2, 0.2), seed=1)
    ids = [set(p.episodes.tolist()) for p in parts]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(data.episodes.tolist())
    assert sum(len(p) for p in parts) == len(data)
    for p in parts:  # stratified: successes and failures in every part
        assert p.success.any() and (~p.success).any()
        for e in p.episodes:  # whole episodes only
            assert (p.episode == e).sum() == (data.episode == e).sum()


def test_frames_save_load_round_trip(tmp_path):
    data = synthetic_frames(3, steps=4)
    path = data.save(tmp_path / "frames.npz")
    back = LabelledFrames.load(path)
    for k in ("frames", "success", "progress", "episode", "step", "source"):
        np.testing.assert_array_equal(getattr(back, k), getattr(data, k))
    assert (back.camera, back.env_id) == ("front", "synthetic")
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="success"):
        LabelledFrames(data.frames, data.success[:-1], data.progress, data.episode, data.step, data.source)


# ---------------------------------------------------------------------------
# calibration


def test_threshold_is_lowest_reaching_precision_target_else_fallback():
    prob = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    label = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
    # prob >= 0.8: 3/3; >= 0.7: 3/4; >= 0.6: 4/5 = 0.8; >= 0.5: 4/6
    assert calibrate_threshold(prob, label, 0.95) == (0.8, "precision_target")
    assert calibrate_threshold(prob, label, 0.8) == (0.6, "precision_target")  # lowest, not the first hit
    assert calibrate_threshold(prob, ~label, 0.95) == (0.5, "fallback")  # never above 1/4 precision
    assert calibrate_threshold(prob, np.zeros(8, bool), 0.95) == (0.5, "fallback")


def test_classifier_separates_held_out_episodes_and_hits_precision_target(synthetic_model, synthetic_split):
    m = synthetic_model.metrics
    assert m["threshold_source"] == "precision_target"
    assert m["validation"]["precision"] >= 0.95
    held = m["held_out"]
    assert held["precision"] > 0.85 and held["recall"] > 0.85, held
    assert m["episodes"]["held_out"] == len(synthetic_split[2].episodes) > 0
    # the metrics are real: recomputed from the model they agree
    _, _, test = synthetic_split
    pred = synthetic_model.predict(test.frames) >= synthetic_model.threshold
    assert np.isclose(np.mean(pred == test.success), held["accuracy"])


def test_ensemble_disagrees_more_on_out_of_distribution_frames(synthetic_model, synthetic_split):
    train = synthetic_split[0]
    in_dist = synthetic_model.member_probs(train.frames).std(axis=0)
    rng = np.random.default_rng(7)
    ood = rng.integers(0, 256, (len(train.frames), SIZE, SIZE, 3)).astype(np.uint8)  # loud noise, no squares
    off = synthetic_model.member_probs(ood).std(axis=0)
    assert off.mean() > 2 * in_dist.mean(), (off.mean(), in_dist.mean())


def test_save_load_round_trip_gives_identical_probabilities(synthetic_model, synthetic_split, tmp_path):
    path = synthetic_model.save(tmp_path / "clf.pt")
    payload = torch.load(path, weights_only=True)  # plain data only: safe to load
    assert payload["threshold"] == synthetic_model.threshold
    back = load_classifier(path)
    frames = synthetic_split[2].frames
    np.testing.assert_array_equal(back.member_probs(frames), synthetic_model.member_probs(frames))
    assert back.threshold == synthetic_model.threshold
    assert back.metrics["held_out"] == synthetic_model.metrics["held_out"]


def test_missing_files_name_the_config_key(tmp_path):
    with pytest.raises(rewards.RewardConfigError, match=r"reward\.params\.checkpoint.*does not exist"):
        rewards.build({"kind": "classifier", "params": {"checkpoint": str(tmp_path / "nope.pt")}})
    with pytest.raises(rewards.RewardConfigError, match=r"reward\.params\.checkpoint is required"):
        rewards.build({"kind": "classifier", "params": {}})
    cfg = ClassifierTrainConfig(encoder={"type": "resnet18", "weights": str(tmp_path / "r18.pth")})
    data = synthetic_frames(4, steps=4)
    with pytest.raises(rewards.RewardConfigError, match=r"encoder\.weights: file .*r18\.pth.* does not exist"):
        train_classifier(data.select_episodes([0, 1]), data.select_episodes([2, 3]), cfg, progress_bar=False)
    with pytest.raises(rewards.RewardConfigError, match=r"encoder\.type='vgg'.*allowed: cnn, open_clip, resnet18"):
        train_classifier(data.select_episodes([0, 1]), data.select_episodes([2, 3]),
                         ClassifierTrainConfig(encoder={"type": "vgg"}), progress_bar=False)
    with pytest.raises(rewards.RewardConfigError, match=r"reward\.params\.mode='soft'.*sparse, prob"):
        ClassifierReward(None, camera="front", mode="soft")  # type: ignore[arg-type]
    with pytest.raises(rewards.RewardConfigError, match=r"reward\.params\.demos.*does not exist"):
        rewards.build({"kind": "vip", "params": {"encoder": {"type": "cnn"}, "demos": str(tmp_path / "d.npz")}})
    demos = data.save(tmp_path / "demos.npz")
    with pytest.raises(rewards.RewardConfigError, match=r"reward\.params\.encoder\.weights: file .*clip\.bin"):
        rewards.build({"kind": "vip", "params": {"encoder": {"type": "open_clip", "weights": str(tmp_path / "clip.bin")},
                                                 "demos": str(demos)}})


def test_frozen_resnet18_from_local_file(tmp_path):
    import torchvision

    from rewards.learned import SuccessClassifier

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    model = SuccessClassifier({"image_size": SIZE, "ensemble": 2, "hidden": 16,
                               "encoder": {"type": "resnet18", "weights": str(weights)}})
    assert not any(p.requires_grad for p in model.shared.parameters())
    path = model.save(tmp_path / "clf.pt")
    assert not any(k.startswith("shared.") for k in torch.load(path, weights_only=True)["state_dict"])  # not copied
    weights.rename(tmp_path / "moved.pth")
    with pytest.raises(rewards.RewardConfigError, match=r"encoder\.weights.*reward\.params\.encoder_weights"):
        load_classifier(path)
    back = load_classifier(path, encoder_weights=str(tmp_path / "moved.pth"))
    frames = synthetic_frames(1, steps=3).frames
    np.testing.assert_allclose(back.member_probs(frames), model.member_probs(frames), atol=1e-6)


# ---------------------------------------------------------------------------
# the reward term


def test_classifier_term_on_a_transitions_batch(synthetic_model, synthetic_split, tmp_path):
    path = synthetic_model.save(tmp_path / "clf.pt")
    spec = image_spec()
    sparse = rewards.build({"kind": "classifier", "params": {"checkpoint": str(path), "device": "cpu"}}, spec)
    prob = rewards.build({"kind": "classifier", "params": {"checkpoint": str(path), "mode": "prob", "device": "cpu"}},
                         spec)
    assert sparse.batched and sparse.requires == ("image_front",) and sparse.render_size == SIZE
    test = synthetic_split[2]
    batch = transitions(np.roll(test.frames, 1, axis=0), test.frames)  # obs differs; next_obs is what counts
    out, outp = sparse(batch), prob(batch)
    expected = synthetic_model.predict(test.frames)
    np.testing.assert_allclose(out.components["prob"], expected, atol=1e-6)
    np.testing.assert_array_equal(out.reward, (expected >= synthetic_model.threshold).astype(np.float32))
    np.testing.assert_array_equal(out.success, expected >= synthetic_model.threshold)
    np.testing.assert_allclose(outp.reward, expected, atol=1e-6)
    assert {"prob", "prob_std", "member0", "member1", "member2"} <= set(out.components)
    assert np.mean(out.success == test.success) > 0.85
    # relabel in chunks gives the same
    np.testing.assert_array_equal(rewards.relabel(sparse, batch, chunk=7).reward, out.reward)
    # a disagreement veto can only remove successes
    vetoed = ClassifierReward(synthetic_model, mode="sparse", max_prob_std=0.0)(batch)
    assert vetoed.success.sum() <= out.success.sum()
    with pytest.raises(rewards.RewardConfigError, match="image_side"):
        rewards.build({"kind": "classifier", "params": {"checkpoint": str(path), "camera": "side"}}, spec)


def test_reward_yamls_build_with_their_default_params(synthetic_model, synthetic_split, tmp_path):
    """Every key in configs/reward/{classifier,vip}.yaml is one the builders accept."""
    import yaml

    path = synthetic_model.save(tmp_path / "clf.pt")
    demos = synthetic_split[0].save(tmp_path / "demos.npz")
    load = lambda name: yaml.safe_load((ROOT / "configs" / "reward" / f"{name}.yaml").read_text())  # noqa: E731
    clf_cfg, vip_cfg, kagi = load("classifier"), load("vip"), load("kagi")
    for cfg in (clf_cfg, vip_cfg, kagi):
        assert {"name", "kind", "scale", "params"} <= set(cfg)
    clf_cfg["params"].update(checkpoint=str(path), device="cpu")
    assert isinstance(rewards.build(clf_cfg, image_spec()), ClassifierReward)
    vip_cfg["params"]["encoder"].update(checkpoint=str(path), device="cpu")
    vip_cfg["params"].update(demos=str(demos), source=None)
    assert isinstance(rewards.build(vip_cfg, image_spec()), VIPReward)
    assert kagi["kind"] == "sparse_override"
    assert kagi["params"]["sparse"]["kind"] == "classifier" and kagi["params"]["dense"]["kind"] == "keypoints"
    assert set(kagi["params"]["sparse"]["params"]) <= set(clf_cfg["params"])


# ---------------------------------------------------------------------------
# VIP


def test_vip_is_a_potential_difference_that_telescopes():
    demos = synthetic_frames(4, steps=6, seed=1)
    term = VIPReward.from_demos(Embedder.random_cnn(SIZE, seed=0), demos, goal_frames=2, gamma=1.0)
    ep = synthetic_frames(1, steps=10, seed=9).frames
    out = term(transitions(ep[:-1], ep[1:]))
    phi = term.potential(ep)
    np.testing.assert_allclose(out.reward, phi[1:] - phi[:-1], rtol=1e-5, atol=1e-6)
    assert np.isclose(out.reward.sum(), phi[-1] - phi[0], atol=1e-5)
    np.testing.assert_allclose(out.components["potential"], phi[1:], rtol=1e-5, atol=1e-6)
    assert term.requires == ("image_front",) and term.batched
    # normalisation: the demos start, on average, at potential -1
    starts = np.stack([demos.episode_frames(int(e)).frames[0] for e in demos.episodes])
    assert np.isclose(term.potential(starts).mean(), -1.0, atol=1e-5)
    discounted = VIPReward(term.embedder, term.goal, gamma=0.9, scale=term.scale)(transitions(ep[:-1], ep[1:]))
    np.testing.assert_allclose(discounted.reward, 0.9 * phi[1:] - phi[:-1], rtol=1e-5, atol=1e-6)


def test_vip_with_the_classifier_encoder_prefers_successful_episodes(synthetic_model, synthetic_split):
    train, _, test = synthetic_split
    demos = train.select_episodes([e for e in train.episodes if train.success[train.episode == e][-1]])
    term = VIPReward.from_demos(Embedder.from_classifier(synthetic_model), demos, goal_frames=2)

    def episode_return(e: int) -> float:
        f = test.episode_frames(e).frames
        return float(term(transitions(f[:-1], f[1:])).reward.sum())

    ok = [episode_return(int(e)) for e in test.episodes if test.success[test.episode == e][-1]]
    fail = [episode_return(int(e)) for e in test.episodes if not test.success[test.episode == e].any()]
    assert ok and fail
    assert min(ok) > max(fail) and np.mean(ok) > np.mean(fail) + 0.5, (ok, fail)


# ---------------------------------------------------------------------------
# real frames from the Panda reach task


@pytest.fixture(scope="module")
def reach_frames():
    from rewards.frames import collect

    # The wrist camera shows success plainly (the goal ball between the fingers); from the front
    # camera at this size the goal is a pixel or two.
    return collect("rewardforge/PandaReach-v0", n_expert=4, n_noisy=2, n_random=3, camera=CAM,
                   image_size=SIZE, seed=0, max_steps=8, progress_bar=False)


def test_collect_labels_panda_frames(reach_frames):
    d = reach_frames
    assert d.frames.shape[1:] == (SIZE, SIZE, 3) and d.frames.dtype == np.uint8
    assert len(d.episodes) == 9 and d.camera == CAM and set(np.unique(d.source)) == {"expert", "noisy", "random"}
    for ep in np.unique(d.episode[d.source == "expert"]):  # the expert reaches within a few steps
        e = d.episode_frames(int(ep))
        assert not e.success[0] and e.success[-1]
        assert e.progress[-1] == 1.0 and e.progress[0] < 0.5
    assert not d.success[d.source == "random"].any()
    assert (d.step[d.episode == 0] == np.arange(9)).all()


def test_vip_random_encoder_gives_expert_episodes_higher_return(reach_frames):
    """Even an untrained CNN embedding ranks the wrist-camera view of the goal between the
    fingers closer to the demos' goal than what random actions reach (held-out episodes)."""
    experts = np.unique(reach_frames.episode[reach_frames.source == "expert"])
    term = VIPReward.from_demos(Embedder.random_cnn(SIZE, seed=0), reach_frames.select_episodes(experts[:2]))

    def episode_return(e: int) -> float:
        f = reach_frames.episode_frames(e).frames
        return float(term(transitions(f[:-1], f[1:], CAM)).reward.sum())

    expert = [episode_return(int(e)) for e in experts[2:]]
    random_ = [episode_return(int(e)) for e in np.unique(reach_frames.episode[reach_frames.source == "random"])]
    assert min(expert) > max(random_), (expert, random_)


def test_real_frames_classifier_and_vip_smoke(reach_frames, tmp_path):
    """collect -> train -> checkpoint -> classifier and VIP terms built against the env's own spec."""
    import sim

    torch.set_num_threads(1)
    train, val, test = split_by_episode(reach_frames, (0.6, 0.2, 0.2), seed=0)
    model = train_classifier(train, val, dataclasses.replace(FAST, steps=30), test=test, progress_bar=False)
    assert model.metrics["held_out"]["n_frames"] == len(test) and model.camera == CAM
    path = model.save(tmp_path / "clf.pt")
    demos_path = reach_frames.save(tmp_path / "demos.npz")
    env = sim.make("rewardforge/PandaReach-v0", cameras=(CAM,), image_size=SIZE)
    spec = env.unwrapped.embodiment
    env.close()
    clf = rewards.build({"kind": "classifier", "params": {"checkpoint": str(path), "device": "cpu"}}, spec)
    vip = rewards.build({"kind": "vip", "params": {"encoder": {"type": "classifier", "checkpoint": str(path),
                                                               "device": "cpu"},
                                                   "demos": str(demos_path), "source": "expert", "goal_frames": 3}},
                        spec)
    assert vip.requires == clf.requires == (f"image_{CAM}",)
    assert vip.render_size == clf.render_size == SIZE
    e = reach_frames.episode_frames(int(reach_frames.episodes[0]))
    batch = transitions(e.frames[:-1], e.frames[1:], CAM)
    out = vip(batch)
    phi = vip.potential(e.frames)
    assert np.isclose(out.reward.sum(), phi[-1] - phi[0], atol=1e-5)
    c = clf(batch)
    assert c.success is not None and set(np.unique(c.reward)) <= {0.0, 1.0}


def test_train_classifier_cli_writes_checkpoint_report_and_plot(tmp_path, capsys):
    from rewards.train_classifier import main

    frames = synthetic_frames(12, steps=6, seed=2).save(tmp_path / "frames.npz")
    assert main(["--frames", str(frames), "--out", str(tmp_path / "run"), "--steps", "10", "--batch-size", "8",
                 "--ensemble", "2", "--hidden", "16", "--device", "cpu", "--no-progress"]) == 0
    assert "held-out precision" in capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert {"threshold", "validation", "held_out", "episodes"} <= set(report)
    assert sum(report["episodes"].values()) == 12
    assert (tmp_path / "run" / "probability.png").stat().st_size > 1000
    assert load_classifier(tmp_path / "run" / "classifier.pt").threshold == report["threshold"]
    assert main(["--frames", str(tmp_path / "none.npz"), "--out", str(tmp_path / "run2")]) == 2
    assert "--frames" in capsys.readouterr().err
