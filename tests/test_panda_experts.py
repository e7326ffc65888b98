"""Each scripted expert solves its task (a few seeds here; 50-seed rates in the docs)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sim  # noqa: F401
from sim.panda.experts import make_expert

SEEDS = {
    "rewardforge/PandaReach-v0": range(100, 110),
    "rewardforge/PandaPush-v0": range(100, 106),
    "rewardforge/PandaPickPlace-v0": range(100, 106),
    "rewardforge/PandaDrawerOpen-v0": range(100, 106),
}


@pytest.mark.parametrize("env_id", sorted(SEEDS))
def test_expert_succeeds(env_id):
    env = gym.make(env_id)
    expert = make_expert(env)
    results, progress = [], []
    for seed in SEEDS[env_id]:
        obs, info = env.reset(seed=seed)
        expert.reset()
        assert not info["success"]
        first_progress = info["progress"]
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(expert(obs))
            done = terminated or truncated or info["success"]
        results.append(info["success"])
        progress.append((first_progress, info["progress"]))
    assert np.mean(results) >= 0.8, results
    # Ground-truth progress rises from its start to 1 on success.
    assert all(
        end == 1.0 and start < 0.5 for (start, end), s in zip(progress, results, strict=True) if s
    )
    env.close()


def test_random_policy_does_not_succeed_at_push():
    env = gym.make("rewardforge/PandaPush-v0")
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    for _ in range(30):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
    assert not info["success"] and info["progress"] < 1.0
