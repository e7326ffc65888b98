"""The README's main path on the real task, shortened: train on Panda reach, then load the
checkpoint as a deployable policy and drive a fresh env with it."""

import json

import numpy as np
import pytest

import sim
from common.spec import SpecMismatchError
from policies.checkpoint import load_policy
from policies.config import compose
from policies.train import run


def test_panda_reach_run_writes_everything_and_the_policy_deploys(tmp_path):
    cfg = compose(["task=panda_reach", f"run_dir={tmp_path / 'run'}", "total_steps=400", "warmup_steps=200",
                   "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "progress=false",
                   "agent.hidden=[64,64]", "agent.batch_size=64"])
    result = run(cfg)
    run_dir = tmp_path / "run"
    assert result["env_steps"] == 400
    for name in ("config.yaml", "metrics.csv", "metrics.jsonl", "learning_curve.png", "checkpoints/final.pt"):
        assert (run_dir / name).stat().st_size > 0, name
    video = run_dir / "eval_video.mp4"
    assert video.stat().st_size > 10_000  # 50 rendered 240x320 frames, not an empty container
    episodes = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "episode" for r in episodes) == 400 // 50

    env = sim.make("rewardforge/PandaReach-v0")
    policy = load_policy(run_dir / "checkpoints" / "final.pt", expect=env.unwrapped.embodiment)
    obs, _ = env.reset(seed=123)
    for _ in range(5):
        action = policy(obs)
        assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
        obs, *_ = env.step(action)
    env.close()

    other = sim.make("rewardforge/PandaPush-v0")
    with pytest.raises(SpecMismatchError, match="panda/push"):
        load_policy(run_dir / "checkpoints" / "final.pt", expect=other.unwrapped.embodiment)
    other.close()
