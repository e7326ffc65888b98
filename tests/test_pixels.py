"""Pixel SAC (DrQ): augmentation, which loss trains the encoder, the target encoder, image replay,
the frozen pretrained encoder option, and a tiny `agent=drq` run on PandaReach whose checkpoint
the deployable Policy loads and acts with."""

import copy

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from policies.config import ConfigError, SACConfig, compose
from policies.pixels import PixelSAC, build_encoder, random_shift
from policies.replay import ReplayBuffer

torch.set_num_threads(1)

SHAPE = (24, 24, 3)


def agent(**kw) -> PixelSAC:
    torch.manual_seed(0)
    cfg = OmegaConf.structured(SACConfig(hidden=[32, 32], cameras=["front"], feature_dim=8, **kw))
    return PixelSAC({"image_front": SHAPE}, 3, 2, cfg)


def batch(b: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"state": torch.randn(b, 3, generator=g),
            "image_front": torch.randint(0, 256, (b, *SHAPE), dtype=torch.uint8, generator=g)}


def update_args(b: int = 8):
    g = torch.Generator().manual_seed(1)
    return (batch(b), torch.rand(b, 2, generator=g) * 2 - 1, torch.randn(b, generator=g), batch(b, seed=2),
            torch.full((b,), 0.99))


def test_random_shift_shifts_each_sample_within_the_pad():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 20, 20, 3), dtype=torch.uint8)  # distinct enough to identify any shift
    y = random_shift(x, 4)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    idx = torch.arange(20)
    found = []
    for b in range(16):
        hits = [(dy, dx) for dy in range(-6, 7) for dx in range(-6, 7)
                if torch.equal(y[b], x[b][(idx + dy).clamp(0, 19)][:, (idx + dx).clamp(0, 19)])]
        assert len(hits) == 1, f"sample {b}: not a replicate-padded shift of its input ({hits})"
        found.append(hits[0])
    assert all(abs(dy) <= 4 and abs(dx) <= 4 for dy, dx in found)  # bounded by the pad
    assert len(set(found)) > 4  # per sample, not one shift for the batch
    assert any(s != (0, 0) for s in found)
    assert torch.equal(random_shift(x, 0), x)


def test_critic_loss_trains_the_encoder_and_the_actor_loss_does_not():
    a = agent()
    b = copy.deepcopy(a)
    enc0 = [p.detach().clone() for p in a.encoder.parameters()]
    args = update_args()
    torch.manual_seed(5)
    a.update(*args, update_actor=True)  # critic + actor + temperature losses, one backward
    torch.manual_seed(5)
    b.update(*args, update_actor=False)  # critic loss only (same augmentation: same seed)
    changed = [not torch.equal(p, q) for p, q in zip(a.encoder.parameters(), enc0, strict=True)]
    assert all(changed), "the critic loss did not reach every encoder parameter"
    for p, q in zip(a.encoder.parameters(), b.encoder.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)  # the actor loss added nothing to the encoder
    assert any(not torch.equal(p, q) for p, q in zip(a.actor.parameters(), b.actor.parameters(), strict=True))

    # and directly: the actor's loss on the features SAC hands it has no path into the encoder
    a.optimizer.zero_grad(set_to_none=True)
    feats = a.encode(batch(), augment=True)
    _, logp = a.actor.sample(feats.detach())
    logp.mean().backward()
    assert all(p.grad is None for p in a.encoder.parameters())


def test_target_encoder_follows_by_polyak():
    a = agent(encoder_tau=0.2)
    for p in a.encoder_target.parameters():  # start the target away from the online encoder
        p.data.add_(0.1)
    before = [p.detach().clone() for p in a.encoder_target.parameters()]
    a.update(*update_args())
    for t0, t1, online in zip(before, a.encoder_target.parameters(), a.encoder.parameters(), strict=True):
        torch.testing.assert_close(t1, t0 + 0.2 * (online - t0))  # phi' <- (1 - tau) phi' + tau phi
    assert all(not p.requires_grad for p in a.encoder_target.parameters())
    state = a.state_dict()
    b = agent(encoder_tau=0.2)
    b.load_state_dict(state)
    for p, q in zip(a.encoder_target.parameters(), b.encoder_target.parameters(), strict=True):
        assert torch.equal(p, q)


def test_image_replay_keeps_uint8_and_aligns_images_with_states(tmp_path):
    buf = ReplayBuffer(100, 1, 1, num_envs=2, seed=0, image_shapes={"image_front": (4, 4, 3)})
    assert buf.images["image_front"].dtype == np.uint8
    for t in range(30):  # image value = state value = time step (and +1 for s'), per env column
        ends = np.array([t % 7 == 6, False])
        s = np.array([[t], [t + 100]], np.float32)
        img = np.stack([np.full((4, 4, 3), t % 256), np.full((4, 4, 3), (t + 100) % 256)]).astype(np.uint8)
        buf.add({"state": s, "image_front": img}, np.zeros((2, 1)), np.ones(2), {"state": s + 1, "image_front": img + 1},
                ends, np.zeros(2, bool))
    for n in (1, 3):
        out = buf.sample(64, n_step=n)
        assert out["obs_image_front"].dtype == np.uint8 and out["obs_image_front"].shape == (64, 4, 4, 3)
        np.testing.assert_array_equal(out["obs_image_front"][:, 0, 0, 0], out["obs"][:, 0])
        np.testing.assert_array_equal(out["next_obs_image_front"][:, 0, 0, 0], out["next_obs"][:, 0])
    buf.save(tmp_path / "r.npz")
    other = ReplayBuffer(100, 1, 1, num_envs=2, seed=0, image_shapes={"image_front": (4, 4, 3)})
    other.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(other.next_images["image_front"], buf.next_images["image_front"])
    with pytest.raises(ValueError, match="images"):
        ReplayBuffer(100, 1, 1, num_envs=2).load(tmp_path / "r.npz")
    assert buf.nbytes_per_transition() == 4 * (2 + 1 + 1) + 2 + 2 * 48


def test_frozen_pretrained_encoder_from_a_local_file(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pt"
    net = resnet18(weights=None)  # random weights standing in for pretrained ones: nothing is downloaded
    torch.save(net.state_dict(), weights)
    a = agent(encoder="resnet18", encoder_weights=str(weights))
    trunk = a.encoder.cams["image_front"].trunk
    torch.testing.assert_close(trunk.body[0].weight, net.conv1.weight)  # the file's weights, loaded
    frozen = [p.detach().clone() for p in trunk.parameters()]
    head = [p.detach().clone() for p in a.encoder.cams["image_front"].head.parameters()]
    bn_stats = trunk.body[1].running_mean.clone()
    a.encoder.train()
    a.update(*update_args())
    assert all(torch.equal(p, q) for p, q in zip(trunk.parameters(), frozen, strict=True))
    assert torch.equal(trunk.body[1].running_mean, bn_stats) and not trunk.training  # BatchNorm stays frozen
    assert all(not torch.equal(p, q) for p, q in
               zip(a.encoder.cams["image_front"].head.parameters(), head, strict=True))  # the projection learns
    in_optimizer = {id(p) for g in a.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in trunk.parameters())


def test_missing_weights_file_names_the_config_key(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match=r"agent\.encoder_weights=.*nope\.pt"):
        compose(["task=panda_reach", "agent=drq", "agent.encoder=resnet18", f"agent.encoder_weights={missing}"])
    with pytest.raises(ConfigError, match="agent.encoder_weights"):
        compose(["task=panda_reach", "agent=drq", "agent.encoder=resnet18"])
    with pytest.raises(ConfigError, match="agent.encoder_weights"):
        build_encoder({"encoder": "resnet18", "encoder_weights": str(missing)}, {"image_front": SHAPE}, 3)
    with pytest.raises(ConfigError, match="agent.encoder="):
        compose(["task=panda_reach", "agent=drq", "agent.encoder=vit"])


def test_tiny_drq_run_on_panda_reach_and_the_policy_acts_on_images(tmp_path):
    import sim
    from policies.checkpoint import export_policy, load, load_policy
    from policies.train import run

    cfg = compose(["task=panda_reach", "agent=drq", f"run_dir={tmp_path / 'run'}", "task.max_episode_steps=20",
                   "total_steps=160", "warmup_steps=120", "eval_every=0", "eval_episodes=1", "checkpoint_every=0",
                   "progress=false", "video=false", "agent.image_size=32", "agent.hidden=[32,32]",
                   "agent.batch_size=16", "agent.feature_dim=16", "agent.buffer_size=1000"])
    result = run(cfg)
    assert result["env_steps"] == 160
    ckpt = load(result["checkpoint"])
    assert ckpt["embodiment"]["observations"][-1]["name"] == "image_front"
    assert tuple(ckpt["embodiment"]["observations"][-1]["shape"]) == (32, 32, 3)
    assert ckpt["agent"]["encoder_updates"] == 41  # one DrQ update per env step from step 120 on

    env = sim.make("rewardforge/PandaReach-v0", cameras=["front"], image_size=32)
    try:
        policy = load_policy(result["checkpoint"], expect=env.unwrapped.embodiment)
        obs, _ = env.reset(seed=3)
        a = policy(obs)
        assert a.shape == (4,) and np.all(np.abs(a) <= 1.0)
        np.testing.assert_allclose(policy.act_batch({k: v[None] for k, v in obs.items()})[0], a, rtol=1e-5, atol=1e-6)
        dark = dict(obs, image_front=np.zeros_like(obs["image_front"]))
        assert not np.allclose(policy(dark), a)  # the action depends on the image
        with pytest.raises(ValueError, match="image_front"):
            policy({k: v for k, v in obs.items() if k != "image_front"})
        export_policy(result["checkpoint"], tmp_path / "deploy.pt")
        np.testing.assert_allclose(load_policy(tmp_path / "deploy.pt")(obs), a, rtol=1e-6)
    finally:
        env.close()
    state_only = sim.make("rewardforge/PandaReach-v0")
    with pytest.raises(ValueError, match="image_front"):
        load_policy(result["checkpoint"], expect=state_only.unwrapped.embodiment)
    state_only.close()


def test_drq_learns_from_recorded_pixel_demonstrations(tmp_path):
    """RLPD / HIL-SERL from pixels: recorded camera frames fill the demonstration buffer, half of each
    batch comes from it, BC pretraining reads the images; a recording at another image size is refused."""
    from common.episodes import Dataset
    from policies.config import ConfigError
    from policies.train import Trainer
    from sim import record as R

    def rec(out, size):
        cfg, choice = R.compose(["task=panda_reach", "episodes=2", "task.max_episode_steps=8", "cameras=[front]",
                                 f"image_size={size}", f"out={out}", "progress=false"])
        R.record(cfg, choice)

    rec(tmp_path / "demos", 32)
    base = ["task=panda_reach", "agent=drq", "task.max_episode_steps=8", "total_steps=24", "warmup_steps=16",
            "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "progress=false", "video=false",
            "agent.image_size=32", "agent.hidden=[32,32]", "agent.batch_size=8", "agent.feature_dim=16",
            "agent.buffer_size=200", "bc_steps=30", "demo_ratio=0.5"]
    trainer = Trainer(compose([*base, f"run_dir={tmp_path / 'run'}", f"demos={tmp_path / 'demos'}"]))
    try:
        demo = trainer.demo_buffer
        assert len(demo) == 16 and set(demo.image_shapes) == {"image_front"}
        frames = Dataset(tmp_path / "demos").episode(0, images=True)["observation.images.front"]
        np.testing.assert_array_equal(demo.images["image_front"][:8, 0], frames)  # the recorded frames, in order
        assert demo.images["image_front"][:16].std() > 0
        trainer.train()
        assert trainer.bc_losses[-1] < trainer.bc_losses[0]  # BC read the demo images and learned
        assert trainer.num_updates > 0
    finally:
        trainer.close()

    rec(tmp_path / "demos48", 48)
    with pytest.raises(ConfigError, match=r"demos=.*image_front.*shape"):
        Trainer(compose([*base, f"run_dir={tmp_path / 'run2'}", f"demos={tmp_path / 'demos48'}"]))
