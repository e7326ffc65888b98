"""The statistics the benchmarks report (IQM + stratified-bootstrap CI via rliable) import and add up.

A broken rliable/arch/pandas combination once surfaced only after a 20-minute benchmark;
this catches it in seconds."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_iqm_and_ci():
    iqm_with_ci = _load("sac_success").iqm_with_ci
    runs = np.array([0.0, 0.8, 0.9, 1.0, 1.0, 1.0, 0.9, 0.2])
    iqm, lo, hi = iqm_with_ci(runs, reps=300)
    middle = np.sort(runs)[2:6]  # IQM of 8 runs: mean of the middle four
    assert np.isclose(iqm, middle.mean())
    assert lo <= iqm <= hi and lo >= 0.0 and hi <= 1.0
    iqm_same, lo_same, hi_same = iqm_with_ci(np.full(5, 0.7), reps=100)
    assert np.isclose(iqm_same, 0.7) and np.isclose(lo_same, 0.7) and np.isclose(hi_same, 0.7)


def test_pick_place_stages_follow_the_expert_in_order():
    """rlpd_demos' failure breakdown: the scripted expert passes grasped -> lifted -> success in order;
    an arm that never moves stays at "never grasped"."""
    import sim
    from sim.panda.experts import make_expert

    bench = _load("rlpd_demos")
    env = sim.make("rewardforge/PandaPickPlace-v0", max_episode_steps=60)
    try:
        expert = make_expert(env)
        obs, info = env.reset(seed=3)
        stage, seen = 0, [0]
        for _ in range(60):
            obs, _, _, _, info = env.step(expert(obs))
            stage = bench.episode_stage(env, bool(info["success"]), stage)
            if stage != seen[-1]:
                seen.append(stage)
        assert seen == [0, 1, 2, 3] and bench.STAGES[stage] == "success"
        env.reset(seed=3)
        still = 0
        for _ in range(10):
            _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
            still = bench.episode_stage(env, bool(info["success"]), still)
        assert bench.STAGES[still] == "never grasped"
    finally:
        env.close()


def test_pick_place_goals_split_into_table_and_raised():
    """The final re-evaluation's split by goal family: "table" exactly when the goal is at the
    block's resting height, both families drawn over a few resets, none for a task without a block,
    and the tally counts successes per family."""
    import sim

    bench = _load("rlpd_demos")
    env = sim.make("rewardforge/PandaPickPlace-v0")
    reach = sim.make("rewardforge/PandaReach-v0")
    try:
        kinds = {}
        for ep in range(30):
            env.reset(seed=ep)
            u = env.unwrapped
            kinds[ep] = bench.goal_kind(env)
            assert (kinds[ep] == "table") == bool(abs(u.goal[2] - u.block_half) < 1e-6)
        assert set(kinds.values()) == {"table", "raised"}
        reach.reset(seed=0)
        assert bench.goal_kind(reach) is None
    finally:
        env.close()
        reach.close()
    success = bench.STAGES.index("success")
    tally = bench.tally_by_goal({0: "table", 1: "table", 2: "raised", 3: None}, {0: success, 1: 2, 2: success, 3: success})
    assert tally == {"table": [1, 2], "raised": [1, 1]}


def test_rlpd_demos_can_give_each_seed_its_own_demonstrations(tmp_path):
    bench = _load("rlpd_demos")
    assert bench.demo_seed(2, per_seed=False) == bench.demo_seed(0, per_seed=False) == bench.DEMO_SEED
    assert len({bench.demo_seed(s, per_seed=True) for s in range(3)}) == 3
    from common.episodes import Dataset

    firsts = []
    for s in (0, 1):
        out = bench.record_demos("panda_reach", 1, tmp_path / f"d{s}", None, bench.demo_seed(s, per_seed=True))
        firsts.append(Dataset(out).transitions(images=False)["state"][0])
    assert not np.allclose(firsts[0], firsts[1])  # another seed, another first episode
    again = bench.record_demos("panda_reach", 1, tmp_path / "d0", None, bench.demo_seed(0, per_seed=True))
    np.testing.assert_array_equal(Dataset(again).transitions(images=False)["state"][0], firsts[0])
