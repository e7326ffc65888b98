"""RLPD-style demonstrations: a dataset in the episode format seeds an offline buffer, and every
minibatch takes exactly demo_ratio of its transitions from it."""

import numpy as np
import pytest

from common.episodes import DatasetWriter
from policies.config import ConfigError, compose
from policies.demos import load_demo_buffer, mixed_sample
from policies.replay import ReplayBuffer
from policies.toy_env import point_reach_spec
from policies.train import Trainer

TOY_TASK = "env_id: policies.toy_env:rftoy/PointReach-v0\nmax_episode_steps: 20\nkwargs: {}\n"
DEMO_REWARD = 7.0  # no online toy transition has this reward


def write_demos(root, episodes=3, length=10, failed=()):
    spec = point_reach_spec()
    rng = np.random.default_rng(0)
    with DatasetWriter(root, spec, fps=10) as w:
        for i in range(episodes):
            w.begin_episode("reach the goal", source="expert")
            for t in range(length):
                obs = {"position": rng.uniform(-1, 1, 2).astype(np.float32), "goal": np.zeros(2, np.float32)}
                w.add_frame(obs, rng.uniform(-1, 1, 2).astype(np.float32), reward=DEMO_REWARD,
                            success=t == length - 1, done=t == length - 1)
            w.end_episode(success=i not in failed)
    return spec


def test_mixed_batches_hold_the_demo_ratio(tmp_path):
    spec = write_demos(tmp_path / "demos")
    demo, info = load_demo_buffer(str(tmp_path / "demos"), spec)
    assert info["episodes"] == 3 and info["transitions"] == 30 and len(demo) == 30
    online = ReplayBuffer(100, spec.state_dim, spec.action.dim)
    for _ in range(50):
        online.add(np.zeros((1, 4), np.float32), np.zeros((1, 2), np.float32), np.float32([-1.0]),
                   np.zeros((1, 4), np.float32), np.array([False]), np.array([False]))
    b = mixed_sample(online, demo, batch_size=16, utd=3, ratio=0.5, n_step=1, gamma=0.99)
    r = b["reward"].reshape(3, 16)
    assert (r == DEMO_REWARD).sum(1).tolist() == [8, 8, 8]  # every minibatch half and half
    assert (mixed_sample(online, demo, 16, 1, 0.25, 1, 0.99)["reward"] == DEMO_REWARD).sum() == 4
    assert (mixed_sample(online, None, 16, 1, 0.5, 1, 0.99)["reward"] == DEMO_REWARD).sum() == 0


def test_demos_success_only_leaves_failed_episodes_out(tmp_path):
    spec = write_demos(tmp_path / "demos", episodes=4, length=5, failed=(1, 2))
    demo, info = load_demo_buffer(str(tmp_path / "demos"), spec, success_only=True)
    assert info["episodes"] == 2 and len(demo) == 10 and info["success_rate"] == 1.0
    from common.episodes import Dataset

    kept = Dataset(tmp_path / "demos").transitions(episodes=[0, 3])["state"]
    np.testing.assert_array_equal(demo.obs[:10, 0], kept)  # episodes 0 and 3, in order
    _, all_info = load_demo_buffer(str(tmp_path / "demos"), spec)
    assert all_info["episodes"] == 4 and all_info["success_rate"] == 0.5
    write_demos(tmp_path / "failed", episodes=2, length=3, failed=(0, 1))
    with pytest.raises(ValueError, match="no episode labelled successful"):
        load_demo_buffer(str(tmp_path / "failed"), spec, success_only=True)


def test_training_with_demos_and_refusing_foreign_ones(tmp_path):
    write_demos(tmp_path / "demos")
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    base = [f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", "total_steps=150", "warmup_steps=100",
            "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false", "progress=false",
            "agent.hidden=[16]", "agent.batch_size=16"]
    trainer = Trainer(compose([*base, f"run_dir={tmp_path / 'r'}", f"demos={tmp_path / 'demos'}"]))
    try:
        seen = []
        update = trainer.agent.update
        trainer.agent.update = lambda *a, **k: (seen.append(a[2].numpy().copy()), update(*a, **k))[1]
        trainer.train()
        assert len(seen) == 51 and all((r == DEMO_REWARD).sum() == 8 for r in seen)
    finally:
        trainer.close()
    # demonstrations of another robot are refused, naming the differences
    from common.spec import ActionSpec, EmbodimentSpec, ObsField

    other = EmbodimentSpec("other/arm", 20.0, ActionSpec(("dx",), (0.1,)), (ObsField("q", (3,)),))
    with DatasetWriter(tmp_path / "foreign", other, fps=20) as w:
        w.begin_episode("x", source="teleop")
        w.add_frame({"q": np.zeros(3, np.float32)}, np.zeros(1, np.float32), done=True)
        w.end_episode(success=False)
    with pytest.raises(ConfigError, match=r"demos=.*refuses to run.*control rate"):
        Trainer(compose([*base, f"run_dir={tmp_path / 'r2'}", f"demos={tmp_path / 'foreign'}"]))
    with pytest.raises(ConfigError, match="demo_ratio"):
        compose([*base, "demo_ratio=1.5"])


def test_log_prob_matches_sampling_and_bc_clones_the_demonstrator(tmp_path):
    import torch

    from policies.networks import TanhGaussianActor

    torch.manual_seed(0)
    actor = TanhGaussianActor(4, 2, (32,))
    obs = torch.randn(64, 4)
    a, logp = actor.sample(obs)
    torch.testing.assert_close(actor.log_prob(obs, a), logp, rtol=1e-3, atol=2e-3)  # same density

    # demonstrator: a = clip(2 (goal - position)), a function of the state BC must learn
    spec = point_reach_spec()
    rng = np.random.default_rng(1)
    with DatasetWriter(tmp_path / "demos", spec, fps=10) as w:
        for _ in range(10):
            w.begin_episode("reach", source="expert")
            for t in range(20):
                pos, goal = rng.uniform(-1, 1, 2).astype(np.float32), rng.uniform(-1, 1, 2).astype(np.float32)
                w.add_frame({"position": pos, "goal": goal}, np.clip(2 * (goal - pos), -1, 1).astype(np.float32),
                            done=t == 19)
            w.end_episode(success=True)
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    cfg = compose([f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", f"run_dir={tmp_path / 'r'}",
                   "total_steps=1", "warmup_steps=1", "eval_every=0", "eval_episodes=1", "checkpoint_every=0",
                   "video=false", "progress=false", "agent.hidden=[64,64]", "agent.batch_size=64",
                   f"demos={tmp_path / 'demos'}", "bc_steps=1200"])
    trainer = Trainer(cfg)
    try:
        batch = trainer.demo_buffer.sample(200)
        x = torch.from_numpy(batch["obs"])

        def err():
            return float(((trainer.agent.act(x, deterministic=True).numpy() - batch["action"]) ** 2).mean())

        before = err()
        trainer.train()
        assert trainer.bc_losses[-1] < trainer.bc_losses[0]
        assert err() < 0.25 * before, (before, err())
        assert not trainer.agent.optimizer.state  # RL starts with fresh Adam moments (pretrain_bc says why)
        assert any(r["kind"] == "bc" for r in trainer.rows)
    finally:
        trainer.close()


@pytest.mark.parametrize("mode", ["policy", "random"])
def test_warmup_acts_with_the_actor_plus_noise_or_uniformly(tmp_path, mode):
    """warmup_actions=policy: warm-up transitions hold the actor's deterministic action plus
    warmup_noise (after cloning, the online buffer starts with the cloned policy's behaviour);
    random: uniform actions, unrelated to the actor."""
    import torch

    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    cfg = compose([f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", f"run_dir={tmp_path / 'r'}",
                   "total_steps=300", "warmup_steps=1000", "eval_every=0", "eval_episodes=1", "checkpoint_every=0",
                   "video=false", "progress=false", "agent.hidden=[16]", f"warmup_actions={mode}",
                   "warmup_noise=0.05"])
    trainer = Trainer(cfg)
    try:
        trainer.train()
        buf = trainer.buffer
        n = len(buf)
        assert n == 300 and trainer.agent.optimizer.state == {}  # nothing learnt during warm-up
        obs, action = buf.obs[:n, 0], buf.action[:n, 0]
        residual = action - trainer.agent.act(torch.from_numpy(obs), deterministic=True).numpy()
        if mode == "policy":
            assert 0.035 < residual.std() < 0.065, residual.std()
            assert np.abs(action).max() <= 1.0
        else:
            assert residual.std() > 0.4 and action.min() < -0.9 and action.max() > 0.9
    finally:
        trainer.close()


def test_obs_norm_standardises_with_the_demos_and_travels_in_the_checkpoint(tmp_path):
    import torch

    from policies.checkpoint import load_policy
    from policies.networks import TanhGaussianActor

    write_demos(tmp_path / "demos", episodes=4, length=10)
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    base = [f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", "total_steps=40", "warmup_steps=20",
            "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false", "progress=false",
            "agent.hidden=[16]", "agent.batch_size=16", f"demos={tmp_path / 'demos'}", "bc_steps=20"]
    trainer = Trainer(compose([*base, f"run_dir={tmp_path / 'r'}", "obs_norm=demos"]))
    try:
        states = trainer.demo_buffer.obs[: len(trainer.demo_buffer), 0]
        for net in (trainer.agent.actor, trainer.agent.critic, trainer.agent.critic_target):
            np.testing.assert_allclose(net.obs_norm.shift.numpy(), states.mean(0), atol=1e-6)
            # the demos' goal is constant: its std is floored, so the scale stays finite
            np.testing.assert_allclose(net.obs_norm.scale.numpy(), np.maximum(states.std(0, ddof=1), 1e-2), rtol=1e-5)
        trainer.train()
        obs = {"position": np.float32([0.3, -0.2]), "goal": np.float32([-0.5, 0.1])}
        flat = torch.from_numpy(np.concatenate([obs["position"], obs["goal"]])[None])
        want = trainer.agent.act(flat, deterministic=True).numpy()[0]
        policy = load_policy(tmp_path / "r" / "checkpoints" / "final.pt")
        np.testing.assert_allclose(policy(obs), want, atol=1e-6)  # the deployed policy standardises too
        raw = trainer.agent.actor.net(flat)[:, :2].tanh().detach().numpy()[0]  # the same weights, unstandardised
        assert np.abs(raw - want).max() > 1e-3
        # a checkpoint from before the standardisation existed (no buffers) loads as the identity
        old = {k: v for k, v in trainer.agent.actor.state_dict().items() if not k.startswith("obs_norm.")}
        actor = TanhGaussianActor(4, 2, (16,))
        actor.load_state_dict(old)
        assert not actor.obs_norm.active
        np.testing.assert_allclose(actor.act(flat, True).detach().numpy()[0], raw, atol=1e-6)
    finally:
        trainer.close()
    with pytest.raises(ConfigError, match="obs_norm=demos .* needs demos="):
        Trainer(compose([*base[:-2], f"run_dir={tmp_path / 'r2'}", "obs_norm=demos"]))


def test_actor_freeze_steps_hold_the_actor_while_the_critics_learn(tmp_path):
    """actor_freeze_steps=k: the first k learning steps update only the critics (the cloned actor
    and the temperature stay exactly as cloned); from step k+1 the actor learns too."""
    import torch

    write_demos(tmp_path / "demos", episodes=4, length=10)
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    base = [f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", "warmup_steps=20",
            "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false", "progress=false",
            "agent.hidden=[16]", "agent.batch_size=16", f"demos={tmp_path / 'demos'}", "bc_steps=10",
            "actor_freeze_steps=30", "agent.fused_update=false"]

    def snapshot(trainer):
        a = trainer.agent
        return ([p.detach().clone() for p in a.actor.parameters()], [p.detach().clone() for p in a.critic.parameters()],
                a.log_alpha.detach().clone())

    trainer = Trainer(compose([*base, "total_steps=20", f"run_dir={tmp_path / 'r'}"]))
    try:
        trainer.train()  # cloning, then 20 warm-up env steps (the last one learns): the online buffer has data
        actor0, critic0, alpha0 = snapshot(trainer)
        trainer.learn(30 - trainer.num_updates, {})  # learning steps up to 30, all inside the freeze
        actor1, critic1, alpha1 = snapshot(trainer)
        assert all(torch.equal(x, y) for x, y in zip(actor0, actor1, strict=True)) and torch.equal(alpha0, alpha1)
        assert any(not torch.equal(x, y) for x, y in zip(critic0, critic1, strict=True))
        trainer.learn(2, {})  # past the freeze: the actor and the temperature learn
        actor2, _, alpha2 = snapshot(trainer)
        assert any(not torch.equal(x, y) for x, y in zip(actor1, actor2, strict=True)) and not torch.equal(alpha1, alpha2)
    finally:
        trainer.close()
    with pytest.raises(ConfigError, match="actor_freeze_steps"):
        compose([*base[:-2], "actor_freeze_steps=-1", f"run_dir={tmp_path / 'r2'}"])


def test_actor_lr_warmup_makes_the_first_actor_steps_small(tmp_path):
    """Adam with fresh moments moves each weight by ~lr on its first step whatever the gradient;
    actor_lr_warmup=N scales the actor's learning rate by k/N on its k-th update (after the freeze),
    so the first step after cloning moves the actor's weights by at most ~lr/N. The critics'
    learning rate is untouched."""
    write_demos(tmp_path / "demos", episodes=4, length=10)
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    base = [f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", "warmup_steps=20", "total_steps=20",
            "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false", "progress=false",
            "agent.hidden=[16]", "agent.batch_size=16", f"demos={tmp_path / 'demos'}", "bc_steps=10",
            "actor_freeze_steps=5", "agent.lr=1e-3"]
    moved = {}
    for ramp in (0, 100):
        trainer = Trainer(compose([*base, f"actor_lr_warmup={ramp}", f"run_dir={tmp_path / f'r{ramp}'}"]))
        try:
            trainer.train()
            trainer.learn(5 - trainer.num_updates, {})  # to the end of the freeze
            before = [p.detach().clone() for p in trainer.agent.actor.parameters()]
            trainer.learn(1, {})  # the actor's first update
            moved[ramp] = max(float((p.detach() - b).abs().max()) for p, b in zip(trainer.agent.actor.parameters(), before, strict=True))
            groups = trainer.agent.optimizer.param_groups
            assert groups[0]["lr"] == 1e-3  # critics
            assert groups[1]["lr"] == pytest.approx(1e-3 if ramp == 0 else 1e-3 / ramp)
            trainer.learn(9, {})
            assert groups[1]["lr"] == pytest.approx(1e-3 if ramp == 0 else 1e-3 * 10 / ramp)
        finally:
            trainer.close()
    assert moved[0] > 0.5e-3 and moved[100] < 1.5e-5, moved
