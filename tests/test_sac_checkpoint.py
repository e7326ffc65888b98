"""Checkpoint round trip (weights, optimiser, config, spec), Policy loading, refusal on a different spec."""

import dataclasses

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from common.spec import SpecMismatchError
from policies import checkpoint
from policies.config import SACConfig
from policies.sac import SAC
from policies.toy_env import PointReachEnv, point_reach_spec

torch.set_num_threads(1)  # as the training config does; 2 threads on a busy 2-core box crawl


def trained_agent():
    torch.manual_seed(0)
    cfg = OmegaConf.structured(SACConfig(hidden=[32, 32]))
    agent = SAC(4, 2, cfg)
    for _ in range(3):
        agent.update(torch.randn(16, 4), torch.rand(16, 2) * 2 - 1, torch.randn(16), torch.randn(16, 4),
                     torch.full((16,), 0.99))
    return agent, OmegaConf.create({"agent": OmegaConf.to_container(cfg), "seed": 0})


def test_round_trip_and_policy(tmp_path):
    agent, cfg = trained_agent()
    spec = point_reach_spec()
    path = tmp_path / "ckpt" / "a.pt"
    checkpoint.save(path, agent, cfg, spec, step=123, extra={"note": "x"})
    assert path.exists() and not list(path.parent.glob("*.tmp"))

    ckpt = checkpoint.load(path)
    assert ckpt["step"] == 123 and ckpt["config"]["agent"]["hidden"] == [32, 32]
    assert ckpt["embodiment"] == spec.to_dict() and ckpt["extra"] == {"note": "x"}

    other = SAC(4, 2, OmegaConf.structured(SACConfig(hidden=[32, 32])))
    other.load_state_dict(ckpt["agent"])
    for a, b in zip(agent.optimizer.state_dict()["state"].values(), other.optimizer.state_dict()["state"].values(),
                    strict=True):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"])
    for p, q in zip(agent.critic_target.parameters(), other.critic_target.parameters(), strict=True):
        torch.testing.assert_close(p, q)

    policy = checkpoint.load_policy(path, expect=spec)
    env = PointReachEnv()
    obs, _ = env.reset(seed=0)
    action = policy(obs)
    assert action.shape == (2,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)
    x = torch.from_numpy(np.concatenate([obs["position"], obs["goal"]]))[None]
    np.testing.assert_allclose(action, agent.act(x, deterministic=True)[0].numpy(), rtol=1e-6)
    assert policy.step == 123 and policy.embodiment == spec
    with pytest.raises(SpecMismatchError, match="missing 'goal'"):
        policy({"position": obs["position"]})


def test_refuses_a_different_embodiment(tmp_path):
    agent, cfg = trained_agent()
    path = tmp_path / "a.pt"
    checkpoint.save(path, agent, cfg, point_reach_spec(step_size=0.1), step=1)
    with pytest.raises(SpecMismatchError, match="action scale"):
        checkpoint.load_policy(path, expect=point_reach_spec(step_size=0.05))
    renamed = dataclasses.replace(point_reach_spec(), name="panda/reach")
    with pytest.raises(SpecMismatchError, match="refuses to run on 'panda/reach'"):
        checkpoint.load_policy(path, expect=renamed)


def test_rejects_foreign_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a rewardforge.sac/1 checkpoint"):
        checkpoint.load(path)
