"""SAC internals: ensemble shapes, the fused update leaves the critic gradient equal to the critic loss alone,
and SAC learns the point-mass reach task far better than random within a short budget."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from policies.config import SACConfig, compose
from policies.sac import SAC
from policies.train import run

TOY_TASK = "env_id: policies.toy_env:rftoy/PointReach-v0\nmax_episode_steps: 50\nkwargs: {}\n"

torch.set_num_threads(1)  # as the training config does; 2 threads on a busy 2-core box crawl


@pytest.fixture
def toy_overrides(tmp_path):
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    return [f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", f"run_dir={tmp_path / 'run'}",
            "progress=false"]


def make_agent(**over):
    cfg = OmegaConf.merge(OmegaConf.structured(SACConfig), over)
    return SAC(5, 2, cfg)


def batch(b=32, obs_dim=5, act_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, obs_dim, generator=g), torch.rand(b, act_dim, generator=g) * 2 - 1,
            torch.randn(b, generator=g), torch.randn(b, obs_dim, generator=g), torch.full((b,), 0.99))


def test_ensemble_shapes_and_subset():
    agent = make_agent(critic_ensemble=10, target_subset=2, critic_layer_norm=True, hidden=[32, 32])
    o, a, *_ = batch()
    assert agent.critic(o, a).shape == (10, 32)
    assert agent.critic(o, a, members=agent._target_members()).shape == (2, 32)
    # member i of the batched ensemble equals the same weights applied alone
    idx = torch.tensor([3])
    torch.testing.assert_close(agent.critic(o, a, members=idx)[0], agent.critic(o, a)[3])
    m = agent.update(*batch())
    assert set(m) >= {"critic_loss", "actor_loss", "alpha", "q_mean"}


def test_fused_and_sequential_critic_gradients_match():
    """The actor term must not leak into the critic's gradient: compare the fused loss's critic grad
    with the critic loss's grad computed by hand."""
    torch.manual_seed(0)
    agent = make_agent(hidden=[32, 32])
    o, a, r, o2, d = batch()
    alpha = agent.log_alpha.detach().exp()
    with torch.no_grad():
        na, nlp = agent.actor.sample(o2)
        y = r + d * (agent.critic_target(o2, na).min(0).values - alpha * nlp)
    critic_loss = 0.5 * (agent.critic(o, a) - y).pow(2).mean(1).sum()
    pi, lp = agent.actor.sample(o)
    actor_loss = (alpha * lp - agent.critic(o, pi, detach=True).min(0).values).mean()
    g_alone = torch.autograd.grad(critic_loss, list(agent.critic.parameters()), retain_graph=True)
    g_fused = torch.autograd.grad(critic_loss + actor_loss, list(agent.critic.parameters()))
    for x, z in zip(g_alone, g_fused, strict=True):
        torch.testing.assert_close(x, z)


@pytest.mark.parametrize("fused", [True, False])
def test_update_gives_the_critic_only_the_critic_loss_gradient(fused):
    """Run SAC.update itself (the autograd implementation: tests/test_sac_fused.py holds the
    hand-written one to it) and compare the critic's gradient with dL_Q/dtheta computed by hand
    from a copy taken before the update (same RNG state, so the same target actions)."""
    import copy

    torch.manual_seed(0)
    agent = make_agent(hidden=[32, 32], fused_update=fused, backward="autograd")
    ref = copy.deepcopy(agent)
    o, a, r, o2, d = batch()
    grads = []

    def spy(loss):
        agent.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads.append([p.grad.clone() if p.grad is not None else None for p in agent.critic.parameters()])
        agent.optimizer.step()

    agent._step = spy
    state = torch.get_rng_state()
    agent.update(o, a, r, o2, d, update_actor=True)
    torch.set_rng_state(state)
    alpha = ref.log_alpha.detach().exp()
    with torch.no_grad():
        na, nlp = ref.actor.sample(o2)
        y = r + d * (ref.critic_target(o2, na).min(0).values - alpha * nlp)
    expected = torch.autograd.grad(0.5 * (ref.critic(o, a) - y).pow(2).mean(1).sum(), list(ref.critic.parameters()))
    for got, want in zip(grads[0], expected, strict=True):
        torch.testing.assert_close(got, want)
    if not fused:  # the actor's step must leave the critic without gradient
        assert all(g is None for g in grads[1])


def test_polyak_and_alpha_move():
    agent = make_agent(hidden=[32, 32], tau=0.5)
    before_t = [p.clone() for p in agent.critic_target.parameters()]
    la = agent.log_alpha.item()
    for s in range(3):
        agent.update(*batch(seed=s))
    assert any(not torch.equal(b, p) for b, p in zip(before_t, agent.critic_target.parameters(), strict=True))
    assert agent.log_alpha.item() != la


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sac_learns_point_reach(toy_overrides, precision):
    cfg = compose([*toy_overrides, f"agent.precision={precision}", "total_steps=2500", "warmup_steps=300", "eval_every=0", "eval_episodes=10",
                   "agent.hidden=[64,64]", "video=false", "checkpoint_every=0"])
    result = run(cfg)
    # a random policy: return about -45 over 50 steps, success rarely
    assert result["final_eval_return"] > -25, result
    assert result["final_eval_success"] >= 0.3, result
    returns = result["train_returns"]
    assert np.mean(returns[-10:]) > np.mean(returns[:10]) + 10


def _hold_heavy_demos(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Demonstrations shaped like a scripted pick-and-place: most frames hold still with the
    gripper shut (a = [0, 0, -1]), a few move proportionally toward a goal with the gripper open."""
    obs = rng.uniform(-1, 1, (n, 5)).astype(np.float32)
    moving = obs[:, 4] > 0.6  # ~20% of frames; the last entry says which phase
    act = np.zeros((n, 3), np.float32)
    act[:, 2] = -1.0
    act[moving, :2] = np.clip(2.0 * (obs[moving, 2:4] - obs[moving, :2]), -1, 1)
    act[moving, 2] = 1.0
    return torch.from_numpy(obs), torch.from_numpy(act)


def test_bc_mse_fits_the_demonstrated_mean_better_than_likelihood():
    """Why bc_loss=mse is the default: on hold-heavy demonstrations the likelihood shrinks the spread
    and leaves the deterministic action (what evaluation runs) further from the demonstrator's."""
    rng = np.random.default_rng(0)
    obs, act = _hold_heavy_demos(4000, rng)
    test_obs, test_act = _hold_heavy_demos(1000, rng)
    errors = {}
    for loss in ("mse", "nll"):
        torch.manual_seed(0)
        agent = SAC(5, 3, OmegaConf.merge(OmegaConf.structured(SACConfig), {"hidden": [64, 64]}))
        for _ in range(600):
            idx = torch.from_numpy(rng.integers(0, len(obs), 128))
            agent.bc_update(obs[idx], act[idx], loss=loss)
        with torch.no_grad():
            errors[loss] = float((agent.act(test_obs, deterministic=True) - test_act).pow(2).mean())
    assert errors["mse"] < 0.1, errors
    assert errors["mse"] < 0.5 * errors["nll"], errors
    with pytest.raises(ValueError, match="bc loss"):
        agent.bc_update(obs[:4], act[:4], loss="l1")


@pytest.mark.parametrize("backward", ["manual", "autograd"])
def test_bc_weight_pulls_the_actor_toward_the_demo_rows(backward):
    """With bc_weight the actor imitates the batch's last ``demo_rows`` rows while SAC learns; without
    it, nothing in SAC's losses knows the demonstrated actions (the critic is the only path)."""
    rng = np.random.default_rng(0)
    obs, act = _hold_heavy_demos(2000, rng)
    errors = {}
    for w in (0.0, 5.0):
        torch.manual_seed(0)
        cfg = OmegaConf.merge(OmegaConf.structured(SACConfig), {"hidden": [64, 64], "bc_weight": w, "backward": backward})
        agent = SAC(5, 3, cfg)
        for _ in range(300):
            idx = torch.from_numpy(rng.integers(0, len(obs), 64))
            o, a = obs[idx], act[idx]
            rew = torch.from_numpy(rng.normal(size=64).astype(np.float32))  # a reward unrelated to the demos
            metrics = agent.update(o, a, rew, o, torch.full((64,), 0.99), demo_rows=32)
        assert ("bc_loss" in metrics) == (w > 0)
        with torch.no_grad():
            errors[w] = float((agent.act(obs[:500], deterministic=True) - act[:500]).pow(2).mean())
    assert errors[5.0] < 0.5 * errors[0.0], errors


def test_bc_scale_fixed_imitates_when_q_is_near_zero():
    """The TD3+BC scale (bc_weight x mean |Q|) vanishes while |Q| is near 0, as it is when RL starts
    from zero-initialised critics; ``bc_scale=fixed`` keeps the imitation term at bc_weight."""
    rng = np.random.default_rng(0)
    obs, act = _hold_heavy_demos(2000, rng)
    errors = {}
    for scale in ("q", "fixed"):
        torch.manual_seed(0)
        cfg = OmegaConf.merge(OmegaConf.structured(SACConfig),
                              {"hidden": [64, 64], "bc_weight": 5.0, "bc_scale": scale, "init_alpha": 0.01,
                               "backward": "autograd"})
        agent = SAC(5, 3, cfg)
        for _ in range(1000):
            idx = torch.from_numpy(rng.integers(0, len(obs), 64))
            o, a = obs[idx], act[idx]
            # zero reward and no bootstrap: every critic target is 0, so |Q| stays near 0
            agent.update(o, a, torch.zeros(64), o, torch.zeros(64), demo_rows=32)
        with torch.no_grad():
            errors[scale] = float((agent.act(obs[:500], deterministic=True) - act[:500]).pow(2).mean())
    assert errors["fixed"] < 0.6 * errors["q"], errors  # measured: 0.06 vs 0.12


def test_bc_target_proposal_pulls_the_actor_to_the_frozen_proposal_on_online_states():
    """agent.bc_target=proposal: the BC term imitates IBRL's frozen proposal (here the mean of the
    actor's copy and a second clone) on every state of the batch, with no demo rows at all."""
    gaps = {}
    for target in ("demos", "proposal"):
        torch.manual_seed(0)
        agent = make_agent(hidden=[32, 32], ibrl=True, bc_weight=20.0, bc_scale="fixed", bc_target=target)
        other, _ = agent.new_clone()
        agent.set_reference([other])
        o, a, r, o2, d = batch(b=64, seed=1)
        with torch.no_grad():
            before = agent.actor.action_error(o, agent.reference.act(o, True))
        for _ in range(60):
            m = agent.update(o, a, r, o2, d, demo_rows=0)
        with torch.no_grad():
            gaps[target] = float(agent.actor.action_error(o, agent.reference.act(o, True)) / before)
        assert ("bc_loss" in m) == (target == "proposal")  # no demo rows: only the proposal gives a BC term
    assert gaps["proposal"] < 0.15 and gaps["proposal"] < 0.5 * gaps["demos"], gaps  # Q alone moves it too, less
    with pytest.raises(Exception, match="bc_target=proposal .* agent.ibrl=true"):
        compose(["agent.bc_target=proposal", "agent.ibrl=false", "task=panda_reach"])
