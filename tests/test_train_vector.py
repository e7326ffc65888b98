"""Parallel envs (gymnasium vector env, same-step autoreset): the true final observation is stored, not the
reset observation, and episodes are counted per env."""

import numpy as np
import pytest

from policies.config import compose
from policies.train import Trainer

TOY_TASK = "env_id: policies.toy_env:rftoy/PointReach-v0\nmax_episode_steps: 20\nkwargs: {}\n"


@pytest.mark.parametrize(("mode", "overlap"), [("sync", False), ("async", False), ("sync", True)])
def test_vector_envs_store_final_observations(tmp_path, mode, overlap):
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    cfg = compose([f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", f"run_dir={tmp_path / 'r'}",
                   "num_envs=3", f"vector_mode={mode}", f"overlap_env_step={overlap}", "total_steps=300", "warmup_steps=150", "eval_every=0",
                   "eval_episodes=1", "checkpoint_every=0", "video=false", "progress=false", "agent.hidden=[16]", "agent.batch_size=32"])
    trainer = Trainer(cfg)
    try:
        trainer.train()
        buf = trainer.buffer
        n = buf.ptr
        assert n == 100 and trainer.step == 300
        assert trainer.num_updates == 153  # 3 per vector step from env step 150 on (both orders)
        # position moves at most step_size * sqrt(2) per step; a reset observation would jump
        jump = np.linalg.norm(buf.next_obs[:n, :, :2] - buf.obs[:n, :, :2], axis=-1)
        assert jump.max() <= 0.1 * np.sqrt(2) + 1e-5
        assert buf.episode_end[:n].sum() >= 15  # 20-step episodes in 3 envs over 100 steps
        ends = [r for r in trainer.rows if r["kind"] == "episode"]
        assert len(ends) == buf.episode_end[:n].sum() and all(r["episode_length"] <= 20 for r in ends)
        # after an episode ends, the next row of that env starts a new one (obs jumps are allowed there only)
        t, e = np.nonzero(buf.episode_end[: n - 1])
        assert np.any(np.linalg.norm(buf.obs[t + 1, e, :2] - buf.next_obs[t, e, :2], axis=-1) > 0.15)
    finally:
        trainer.close()
