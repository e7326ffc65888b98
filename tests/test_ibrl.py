"""IBRL (agent.ibrl=true): the behaviour-cloned policy stays, frozen, as a second proposal; the agent
acts and bootstraps with whichever of the two actions its critics value more, and its checkpoint
acts the same way when deployed."""

import numpy as np
import pytest
import torch

from policies.checkpoint import export_policy, load_policy
from policies.config import ConfigError, compose
from policies.networks import CloneEnsemble, TanhGaussianActor, better_of
from policies.train import Trainer
from tests.test_train_demos import TOY_TASK, write_demos


def _base(tmp_path, *extra):
    write_demos(tmp_path / "demos", episodes=4, length=10)
    (tmp_path / "cfg" / "task").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    return [f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", "warmup_steps=20",
            "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false", "progress=false",
            "agent.hidden=[16]", "agent.batch_size=16", f"demos={tmp_path / 'demos'}", "bc_steps=20",
            "agent.ibrl=true", *extra]


def test_better_of_takes_the_higher_valued_proposal_per_row():
    a_rl, a_il = torch.zeros(3, 2), torch.ones(3, 2)
    q_rl = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 2.0]])  # (N=2 critics, B=3)
    q_il = torch.tensor([[4.0, 0.0, 2.0], [0.5, 6.0, 2.0]])
    act, il = better_of(q_rl, q_il, a_rl, a_il, "min")  # mins: rl 1, 5, 2; il 0.5, 0, 2
    assert il.tolist() == [False, False, False] and torch.equal(act, a_rl)
    act, il = better_of(q_rl, q_il, a_rl, a_il, "mean")  # means: rl 2, 5, 2; il 2.25, 3, 2 (a tie keeps RL)
    assert il.tolist() == [True, False, False]
    assert torch.equal(act, torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))


def test_ibrl_keeps_the_clone_frozen_acts_by_q_and_deploys_the_same_rule(tmp_path):
    trainer = Trainer(compose([*_base(tmp_path), "total_steps=60", f"run_dir={tmp_path / 'r'}"]))
    try:
        agent, clone = trainer.agent, []
        freeze = agent.set_reference
        agent.set_reference = lambda *others: (clone.extend(p.detach().clone() for p in agent.actor.parameters()), freeze(*others))
        trainer.train()  # cloning, then warm-up and 40 learning steps
        # the reference is the clone as it was when cloning ended, and stays so while the actor learns
        assert clone and all(torch.equal(c, r) for c, r in zip(clone, agent.reference.parameters(), strict=True))
        ref_now = [p.detach().clone() for p in agent.reference.parameters()]
        before_actor = [p.detach().clone() for p in agent.actor.parameters()]
        trainer.learn(5, {})
        assert all(torch.equal(a, b) for a, b in zip(ref_now, agent.reference.parameters(), strict=True))
        assert any(not torch.equal(a, b) for a, b in zip(before_actor, agent.actor.parameters(), strict=True))
        # acting: per row the action of the proposal with the higher min-Q (SAC's actor_q=min). The
        # actor has learnt to please the critics on every row of this toy (the RL action wins); pushed
        # off by shifting its mean action, the clone wins
        obs = torch.from_numpy(np.random.default_rng(3).uniform(-1, 1, (64, 4)).astype(np.float32))
        wins = []
        for shift in (0.0, 2.0, -2.0):
            with torch.no_grad():
                agent.actor.net[-1].bias[:2] += shift
                a_rl, a_il = agent.actor.act(obs, True), agent.reference.act(obs, True)
                v_rl, v_il = agent.critic(obs, a_rl).min(0).values, agent.critic(obs, a_il).min(0).values
            torch.testing.assert_close(agent.act(obs, deterministic=True), torch.where((v_il > v_rl)[:, None], a_il, a_rl))
            wins.append(int((v_il > v_rl).sum()))
            with torch.no_grad():
                agent.actor.net[-1].bias[:2] -= shift
        assert wins[0] == 0 and max(wins) > 0, wins
        # the TD target takes the better of the two as well: its share is logged
        metrics = {}
        trainer.learn(1, metrics)
        assert 0.0 <= float(metrics["il_share"]) <= 1.0
        # deployed (full checkpoint and policy-only export) the policy acts by the same rule
        path = trainer.save_checkpoint("ibrl.pt")
        export_policy(path, tmp_path / "exported.pt")
        for p in (path, tmp_path / "exported.pt"):
            policy = load_policy(p)
            rows = {"position": obs[:, :2].numpy(), "goal": obs[:, 2:].numpy()}
            np.testing.assert_allclose(policy.act_batch(rows), agent.act(obs, deterministic=True).numpy(), atol=1e-6)
    finally:
        trainer.close()


def test_ibrl_resumes_with_its_reference_and_refuses_what_it_cannot_do(tmp_path):
    base = _base(tmp_path, "checkpoint_every=30")
    trainer = Trainer(compose([*base, "total_steps=30", f"run_dir={tmp_path / 'r'}"]))
    try:
        trainer.train()
        ref = [p.detach().clone() for p in trainer.agent.reference.parameters()]
    finally:
        trainer.close()
    # the benchmark's final re-evaluation scores the policy and each proposal alone on the same episodes
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "rlpd_demos.py"
    spec = importlib.util.spec_from_file_location("rlpd_demos", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    success, stages, parts, by_goal = bench.final_success(tmp_path / "r", compose([*base, "total_steps=30"]).task, 2)
    assert by_goal == {}  # the toy task has no block goal to split by
    assert set(parts) == {"clone", "actor"} and all(0.0 <= v <= 1.0 for v in [success, *parts.values()])
    assert sum(stages.values()) == 2
    resumed = Trainer(compose([*base, "total_steps=40", f"run_dir={tmp_path / 'r'}"]))
    try:
        assert resumed.try_resume()
        assert all(torch.equal(a, b) for a, b in zip(ref, resumed.agent.reference.parameters(), strict=True))
    finally:
        resumed.close()
    no_demos = [o for o in base if not o.startswith("demos=")]
    with pytest.raises(ConfigError, match="agent.ibrl=true .* needs demos="):
        compose([*no_demos, f"run_dir={tmp_path / 'r2'}"])
    with pytest.raises(ConfigError, match="bc_steps > 0"):
        compose([*base, "bc_steps=0", f"run_dir={tmp_path / 'r3'}"])
    from omegaconf import OmegaConf

    from policies.distributed import DistributedConfig, validate_distributed

    with pytest.raises(ConfigError, match="agent.ibrl"):
        validate_distributed(OmegaConf.structured(DistributedConfig), compose([*base, f"run_dir={tmp_path / 'r4'}"]))



def test_bc_ensemble_proposes_the_mean_of_its_clones_and_keeps_them_through_checkpoints(tmp_path):
    base = _base(tmp_path, "bc_ensemble=3", "checkpoint_every=30", "bc_steps=300")
    import shutil

    from common.episodes import DatasetWriter
    from policies.toy_env import point_reach_spec

    shutil.rmtree(tmp_path / "demos")  # demos a clone can learn: the action points from the position to the goal
    rng = np.random.default_rng(1)
    with DatasetWriter(tmp_path / "demos", point_reach_spec(), fps=10) as w:
        for _ in range(4):
            w.begin_episode("reach the goal", source="expert")
            for t in range(10):
                pos, goal = rng.uniform(-1, 1, 2).astype(np.float32), rng.uniform(-1, 1, 2).astype(np.float32)
                w.add_frame({"position": pos, "goal": goal}, np.clip(goal - pos, -1, 1).astype(np.float32),
                            reward=0.0, success=t == 9, done=t == 9)
            w.end_episode(success=True)
    trainer = Trainer(compose([*base, "total_steps=30", f"run_dir={tmp_path / 'r'}"]))
    try:
        agent, cloned = trainer.agent, []
        freeze = agent.set_reference
        agent.set_reference = lambda *others: (cloned.append([p.detach().clone() for p in agent.actor.parameters()]),
                                               freeze(*others))
        trainer.train()
        ref = agent.reference
        assert isinstance(ref, CloneEnsemble) and len(ref.members) == 3
        # member 0 is the actor as cloning left it; the others are clones of their own, not copies of it
        assert all(torch.equal(c, r) for c, r in zip(cloned[0], ref.members[0].parameters(), strict=True))
        first = [torch.cat([p.flatten() for p in m.parameters()]) for m in ref.members]
        assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
        assert not any(p.requires_grad for p in ref.parameters())
        # each extra clone learnt the demos: its cloning loss is below a fresh actor's
        t = {k: torch.from_numpy(v) for k, v in trainer.demo_buffer.sample(256).items()}
        fresh, _ = agent.new_clone()
        with torch.no_grad():
            errors = [float(m.action_error(t["obs"], t["action"])) for m in [fresh, *ref.members]]
        assert max(errors[1:]) < 0.8 * errors[0], errors
        # the proposal is the mean of the members' deterministic actions
        obs = torch.from_numpy(np.random.default_rng(4).uniform(-1, 1, (32, 4)).astype(np.float32))
        torch.testing.assert_close(ref.act(obs, False), torch.stack([m.act(obs, True) for m in ref.members]).mean(0))
        expected = agent.act(obs, deterministic=True).numpy()
        cloned_actions = ref.act(obs, True).numpy()
    finally:
        trainer.close()
    # checkpoint, policy-only export and resume all bring the three clones back
    path = tmp_path / "r" / "checkpoints" / "final.pt"
    export_policy(path, tmp_path / "exported.pt")
    rows = {"position": obs[:, :2].numpy(), "goal": obs[:, 2:].numpy()}
    for p in (path, tmp_path / "exported.pt"):
        policy = load_policy(p)
        assert isinstance(policy.actor.reference, CloneEnsemble) and len(policy.actor.reference.members) == 3
        np.testing.assert_allclose(policy.act_batch(rows), expected, atol=1e-6)
    resumed = Trainer(compose([*base, "total_steps=40", f"run_dir={tmp_path / 'r'}"]))
    try:
        assert resumed.try_resume()
        np.testing.assert_allclose(resumed.agent.reference.act(obs, True).numpy(), cloned_actions, atol=1e-6)
    finally:
        resumed.close()
    # one clone (the default) stays a plain actor; extra clones without IBRL, or none at all, are refused
    single = Trainer(compose([*_base(tmp_path), "total_steps=25", f"run_dir={tmp_path / 'r1'}"]))
    try:
        single.train()
        assert isinstance(single.agent.reference, TanhGaussianActor)
    finally:
        single.close()
    with pytest.raises(ConfigError, match="bc_ensemble=2 .* agent.ibrl=true"):
        compose([*base, "bc_ensemble=2", "agent.ibrl=false", f"run_dir={tmp_path / 'r5'}"])
    with pytest.raises(ConfigError, match="bc_ensemble"):
        compose([*base, "bc_ensemble=0", f"run_dir={tmp_path / 'r6'}"])
