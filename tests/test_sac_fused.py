"""The hand-written SAC gradients (policies/fused.py) against autograd's, on the same batch and noise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from policies import fused
from policies.config import compose
from policies.sac import SAC

OBS, ACT, B = 9, 3, 64


@contextlib.contextmanager
def scripted_noise(eps_obs: torch.Tensor, eps_next: torch.Tensor) -> Iterator[None]:
    """Make both implementations draw the same reparameterisation noise.

    The autograd update samples a' ~ pi(.|s') first and a~ ~ pi(.|s) second, (B, A) each; the
    manual one samples both at once as rows [s; s']. Any other call is a test error."""
    real = torch.randn_like

    def fake(t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if t.shape == (2 * B, ACT):
            return torch.cat([eps_obs, eps_next]).to(t.dtype)
        if t.shape == (B, ACT):
            return queue.pop(0).to(t.dtype)
        return real(t, *args, **kwargs)

    queue = [eps_next, eps_obs]
    torch.randn_like = fake
    try:
        yield
    finally:
        torch.randn_like = real


def _pair(overrides: list[str]) -> tuple[SAC, SAC]:
    cfg = compose(["task=panda_reach", *overrides]).agent
    torch.manual_seed(0)
    manual = SAC(OBS, ACT, cfg)
    auto = SAC(OBS, ACT, cfg)
    auto._manual = False
    auto.load_state_dict(manual.state_dict())
    assert manual._manual, "the config should qualify for the manual backward"
    return manual, auto


def _batch(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, OBS, generator=g), torch.rand(B, ACT, generator=g) * 2 - 1, torch.randn(B, generator=g),
            torch.randn(B, OBS, generator=g), torch.full((B,), 0.99))


def _grads(agent: SAC) -> dict[str, torch.Tensor]:
    named = {f"actor.{k}": p for k, p in agent.actor.named_parameters()}
    named.update({f"critic.{k}": p for k, p in agent.critic.named_parameters()})
    named["log_alpha"] = agent.log_alpha
    return {k: p.grad.clone() if p.grad is not None else None for k, p in named.items()}


@pytest.mark.parametrize("overrides", [
    [],
    ["agent.critic_ensemble=5", "agent.target_subset=2", "agent.actor_q=mean", "agent.hidden=[32,16,24]"],
    ["agent=rlpd", "agent.critic_ensemble=4", "agent.hidden=[32,16,24]"],  # LayerNorm critics, subset of 2
    ["agent.critic_layer_norm=true"],
])
def test_manual_gradients_equal_autograd(overrides: list[str]) -> None:
    _assert_same_updates(*_pair(overrides))


def test_manual_gradients_equal_autograd_with_a_standardised_state() -> None:
    """obs_norm: fused.update standardises the state itself (the networks do it inside forward)."""
    manual, auto = _pair(["agent=rlpd", "agent.critic_ensemble=3", "agent.hidden=[32,16]"])
    g = torch.Generator().manual_seed(5)
    mean, std = torch.randn(OBS, generator=g), torch.rand(OBS, generator=g) * 3 + 0.1
    for agent in (manual, auto):
        agent.set_obs_norm(mean, std)
    _assert_same_updates(manual, auto)


def _assert_same_updates(manual: SAC, auto: SAC) -> None:
    g = torch.Generator().manual_seed(1)
    eps_obs, eps_next = torch.randn(B, ACT, generator=g), torch.randn(B, ACT, generator=g)
    for step in range(3):  # several steps: Adam state and the target critic move identically
        batch = _batch(step)
        for agent in (manual, auto):
            torch.manual_seed(10 + step)  # the target subset draw (randperm) is the same for both
            with scripted_noise(eps_obs, eps_next):
                m = agent.update(*batch)
            agent.last_metrics = m
        gm, ga = _grads(manual), _grads(auto)
        assert gm.keys() == ga.keys()
        for k in ga:
            assert ga[k] is not None and gm[k] is not None, k
            torch.testing.assert_close(gm[k], ga[k], rtol=1e-4, atol=1e-5, msg=f"step {step}: gradient of {k}")
        for k in ("critic_loss", "q_mean", "actor_loss", "alpha", "entropy"):
            torch.testing.assert_close(manual.last_metrics[k], auto.last_metrics[k], rtol=1e-5, atol=1e-6)
    for pm, pa in zip(manual.critic_target.parameters(), auto.critic_target.parameters(), strict=True):
        torch.testing.assert_close(pm, pa, rtol=1e-5, atol=1e-6)


def test_critic_only_update_leaves_the_actor_alone() -> None:
    manual, auto = _pair([])
    actor_before = [p.clone() for p in manual.actor.parameters()]
    alpha_before = manual.log_alpha.detach().clone()
    eps = torch.randn(B, ACT)
    for agent in (manual, auto):
        torch.manual_seed(3)
        with scripted_noise(eps, eps):
            agent.update(*_batch(0), update_actor=False)
    for p, q in zip(manual.actor.parameters(), actor_before, strict=True):
        assert torch.equal(p, q)
    assert torch.equal(manual.log_alpha.detach(), alpha_before)
    for pm, pa in zip(manual.critic.parameters(), auto.critic.parameters(), strict=True):
        torch.testing.assert_close(pm.grad, pa.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_bf16_manual_gradients_as_accurate_as_autocast(layer_norm: bool) -> None:
    """bf16 products round differently in the two implementations; measured against the fp32
    gradient, the manual one must be about as accurate as autocast's (relative Frobenius error)."""
    ln = [f"agent.critic_layer_norm={str(layer_norm).lower()}"]
    manual, auto = _pair(["agent.precision=bf16", *ln])
    ref = _pair(ln)[1]
    eps_obs, eps_next = torch.randn(B, ACT), torch.randn(B, ACT)
    for agent in (manual, auto, ref):
        torch.manual_seed(5)
        with scripted_noise(eps_obs, eps_next):
            agent.update(*_batch(0))
    gm, ga, g32 = _grads(manual), _grads(auto), _grads(ref)
    for k in g32:
        norm = g32[k].norm()
        err_manual, err_auto = (gm[k] - g32[k]).norm() / norm, (ga[k] - g32[k]).norm() / norm
        assert err_manual < 2 * err_auto + 0.01, (k, float(err_manual), float(err_auto))


def test_unsupported_configs_use_autograd() -> None:
    cfg = compose(["task=panda_reach", "agent=rlpd"]).agent  # LayerNorm critics: manual
    assert fused.supported(cfg) and SAC(OBS, ACT, cfg)._manual
    cfg = compose(["task=panda_reach", "agent.actor_layer_norm=true"]).agent
    assert not fused.supported(cfg) and not SAC(OBS, ACT, cfg)._manual
    cfg = compose(["task=panda_reach", "agent.backward=autograd"]).agent
    assert fused.supported(cfg) and not SAC(OBS, ACT, cfg)._manual
