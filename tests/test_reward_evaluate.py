"""The reward evaluation command: statistics on synthetic rewards, and end to end on panda_reach."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rewards import RewardConfigError, RewardOutput, RewardTerm, Transitions, build, register
from rewards.evaluate import (
    EpicSettings,
    Episode,
    EvalConfigError,
    collect,
    compose,
    epic_distance,
    evaluate,
    format_table,
    make_env,
    make_policies,
    pearson_distance,
    rankdata,
    run,
    spearman,
    success_detection,
)
from rewards.monitor import RewardMonitor

REPO = Path(__file__).resolve().parent.parent
FAST = ["task=panda_reach", "episodes=2", "max_episode_steps=15", "policies.noise=[0.5]", "epic.samples=8",
        "progress=false"]


# ---------------------------------------------------------------------------
# custom terms registered for these tests


class FnTerm(RewardTerm):
    """A reward given as a function of the batch (synthetic rewards)."""

    def __init__(self, fn, name="fn"):
        self.fn, self.name = fn, name

    def compute(self, batch):
        return RewardOutput(self.fn(batch))


@register("test_neg_progress")
def _neg_progress(params, spec):
    """Deliberately bad: more progress, less reward (reads ground truth, as only a test may)."""
    return FnTerm(lambda b: -b.progress, "neg_progress")


@register("test_random")
def _random(params, spec):
    rng = np.random.default_rng(int(params.get("seed", 0)))
    return FnTerm(lambda b: rng.normal(size=len(b)), "random")


class GoalDistance(RewardTerm):
    """-|ee - goal| with a success detector: success when the fingertip is within ``radius``."""

    name = "goal_distance"

    def __init__(self, radius):
        self.radius = radius

    def compute(self, batch):
        d = np.linalg.norm(batch.next_obs["ee_pos"] - batch.next_obs["goal_pos"], axis=-1)
        return RewardOutput(-d, {"distance": d}, success=d < self.radius)


@register("test_goal_distance")
def _goal_distance(params, spec):
    return GoalDistance(float(params.get("radius", 0.05)))


class ImageMean(RewardTerm):
    """Reads a camera: reward = mean pixel value; remembers the image shapes it saw."""

    name = "image_mean"
    requires = ("image_front",)
    render_size = 16
    seen: list = []

    def compute(self, batch):
        img = batch.next_obs["image_front"]
        ImageMean.seen.append(img.shape)
        return RewardOutput(img.reshape(len(img), -1).mean(axis=1))


@register("test_image_mean")
def _image_mean(params, spec):
    return ImageMean()


# ---------------------------------------------------------------------------
# statistics


def test_spearman_ranks_and_ties():
    x = np.array([3.0, 1.0, 2.0, 2.0, 10.0])
    np.testing.assert_allclose(rankdata(x), [4, 1, 2.5, 2.5, 5])
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)  # any increasing map
    assert spearman(x, -x**3) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.ones(5)))  # undefined for a constant
    assert spearman([1, 2, np.nan, 4], [1, 2, 3, 4]) == pytest.approx(1.0)  # NaN pairs dropped
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)


def _synthetic(n=400, seed=0):
    rng = np.random.default_rng(seed)
    s, a, s2 = rng.normal(size=(n, 3)), rng.uniform(-1, 1, (n, 2)), rng.normal(size=(n, 3))
    return Transitions(obs={"x": s}, action=a, next_obs={"x": s2})


def _base(b):
    return np.sin(b.next_obs["x"][:, 0]) + b.obs["x"][:, 1] * b.action[:, 0] - 0.5 * b.next_obs["x"][:, 2] ** 2


def test_epic_is_zero_for_affine_maps_and_shaping_and_large_for_other_rewards():
    data, gamma = _synthetic(), 0.9
    settings = EpicSettings(gamma=gamma, samples=16, max_transitions=300)
    phi = lambda x: 3.0 * np.cos(2 * x[:, 0]) + x[:, 1] * x[:, 2]  # noqa: E731 - a potential
    base = FnTerm(_base)
    affine = FnTerm(lambda b: 2.5 * _base(b) + 7.0)
    shaped = FnTerm(lambda b: _base(b) + gamma * phi(b.next_obs["x"]) - phi(b.obs["x"]))
    other = FnTerm(lambda b: np.cos(3 * b.next_obs["x"][:, 1]) * b.action[:, 1])
    negated = FnTerm(lambda b: -_base(b))

    assert epic_distance(base, affine, data, settings) < 1e-6
    assert epic_distance(base, shaped, data, settings) < 1e-6
    # the shaping is not small: without canonicalisation the rewards look different
    assert pearson_distance(_base(data), shaped(data).reward) > 0.2
    assert epic_distance(base, other, data, settings) > 0.5
    assert epic_distance(base, negated, data, settings) > 0.95
    # the distance of a (positively) scaled, shaped copy stays 0 with a different sample set
    assert epic_distance(affine, shaped, data, EpicSettings(gamma=gamma, samples=5), seed=3) < 1e-6


def test_epic_rejects_a_mismatched_discount():
    """Shaping with gamma=0.9 is not removed by a canonicalisation with gamma=0.5 (the
    discount is a real setting, not decoration)."""
    data = _synthetic()
    phi = lambda x: 3.0 * np.cos(2 * x[:, 0])  # noqa: E731
    shaped = FnTerm(lambda b: _base(b) + 0.9 * phi(b.next_obs["x"]) - phi(b.obs["x"]))
    assert epic_distance(FnTerm(_base), shaped, data, EpicSettings(gamma=0.5, samples=16)) > 0.1


def test_success_detection_rates_on_known_counts():
    """4 ground-truth failures of which 1 detected as success (FPR 1/4), 2 successes of which
    1 detected (TPR 1/2); episode level: success at any step."""
    def episode(pred, truth):
        n = len(pred)
        batch = Transitions(obs={"x": np.zeros((n, 1))}, action=np.zeros((n, 1)), next_obs={"x": np.zeros((n, 1))},
                            success=np.array(truth))
        return Episode("p", 0, batch, bool(np.any(truth))), RewardOutput(np.zeros(n), success=np.array(pred))

    (e1, o1), (e2, o2) = episode([1, 0, 0], [0, 0, 1]), episode([0, 1, 0], [0, 1, 0])
    d = success_detection([o1, o2], [e1, e2])
    t = d["transitions"]
    assert (t["tp"], t["fp"], t["fn"], t["tn"]) == (1, 1, 1, 3)
    assert t["false_positive_rate"] == pytest.approx(0.25) and t["true_positive_rate"] == pytest.approx(0.5)
    assert d["episodes"]["true_positive_rate"] == 1.0
    assert success_detection([RewardOutput(np.zeros(3))], [e1]) is None


# ---------------------------------------------------------------------------
# end to end on panda_reach


@pytest.fixture(scope="module")
def reach_episodes():
    cfg = compose(FAST)
    env = make_env(cfg, build(cfg.reward))
    try:
        eps = collect(env, make_policies(env, True, [0.5], True, seed=0), episodes=2, seed=0, progress=False)
    finally:
        env.close()
    return eps


def test_rollouts_are_seeded_and_labelled(reach_episodes):
    assert [e.policy for e in reach_episodes] == ["expert"] * 2 + ["noisy_0.5"] * 2 + ["random"] * 2
    assert [e.seed for e in reach_episodes] == [0, 1] * 3  # the same initial states per type
    e = reach_episodes[0]
    assert len(e.batch) == 15 and e.batch.episode_step.tolist() == list(range(15))
    np.testing.assert_array_equal(e.batch.obs["ee_pos"][1:], e.batch.next_obs["ee_pos"][:-1])
    assert reach_episodes[0].success and not reach_episodes[-1].success  # the expert reaches, random does not
    np.testing.assert_array_equal(reach_episodes[0].batch.obs["goal_pos"], reach_episodes[2].batch.obs["goal_pos"])
    assert not np.allclose(reach_episodes[2].batch.action, reach_episodes[0].batch.action)  # noise is applied


def test_task_reward_tracks_progress_and_bad_terms_do_not(reach_episodes):
    settings = EpicSettings(samples=8)
    monitor = lambda: RewardMonitor(quantile=0.8, min_history=10)  # noqa: E731
    good, _ = evaluate(build({"kind": "task"}), reach_episodes, epic=settings, monitor=monitor())
    assert good["overall"]["spearman_reward_progress"] > 0.8
    assert good["overall"]["spearman_return_success"] > 0.5
    assert good["overall"]["epic_to_task"] < 1e-6
    assert good["policies"]["expert"]["success_rate"] == 1.0 and good["policies"]["random"]["success_rate"] == 0.0
    assert good["success_detection"] is None
    assert good["monitor"]["flagged"] == 0  # its highest rewards are successes

    bad, _ = evaluate(build({"kind": "test_neg_progress"}), reach_episodes, epic=settings, monitor=monitor())
    assert bad["overall"]["spearman_reward_progress"] < -0.99
    # its highest rewards are the random policy's failures: the monitor catches the hacking
    flagged = {k: p["monitor_flagged"] for k, p in bad["policies"].items()}
    assert bad["monitor"]["flagged"] > 0 and flagged["random"] > flagged["expert"]
    assert bad["overall"]["spearman_return_success"] < 0
    assert bad["overall"]["epic_to_task"] > 0.8
    noise, _ = evaluate(build({"kind": "test_random"}), reach_episodes, epic=settings)
    assert abs(noise["overall"]["spearman_reward_progress"]) < 0.3
    assert 0.5 < noise["overall"]["epic_to_task"] < 0.9


def test_compositions_sum_and_normalize(reach_episodes):
    settings = EpicSettings(samples=8)
    # sum: 2 x task + 0.5 x (-progress) still mostly the task reward
    summed = build({"kind": "sum", "params": {"terms": {"task": {"kind": "task", "weight": 2.0},
                                                        "bad": {"kind": "test_neg_progress", "weight": 0.5}}}})
    rep, outs = evaluate(summed, reach_episodes, epic=settings)
    assert set(outs[0].components) >= {"task", "bad"}
    assert rep["overall"]["spearman_reward_progress"] > 0.5
    assert 0.0 < rep["overall"]["epic_to_task"] < 0.4
    # normalize: statistics fitted on the rollouts, then a positive affine map of the task reward
    norm = build({"kind": "normalize", "params": {"term": {"kind": "task"}}})
    rep, outs = evaluate(norm, reach_episodes, epic=settings)
    assert norm.count == sum(len(e.batch) for e in reach_episodes)  # one fitting pass, then frozen
    r = np.concatenate([o.reward for o in outs])
    assert abs(r.mean()) < 1e-4 and r.std() == pytest.approx(1.0, abs=1e-3)
    assert rep["overall"]["epic_to_task"] < 1e-6


def test_success_fpr_on_a_term_with_a_known_rule(reach_episodes):
    """The term says success within 10 cm of the goal, the task within 3 cm: its false
    positives are exactly the transitions in the 3-10 cm band."""
    rep, _ = evaluate(build({"kind": "test_goal_distance", "params": {"radius": 0.10}}), reach_episodes,
                      epic=EpicSettings(samples=4))
    nxt = np.concatenate([e.batch.next_obs["ee_pos"] - e.batch.next_obs["goal_pos"] for e in reach_episodes])
    d = np.linalg.norm(nxt, axis=1)
    truth = np.concatenate([e.batch.success for e in reach_episodes])
    fp = int(np.sum((d < 0.10) & ~truth))
    assert fp > 0 and not np.any(truth & (d >= 0.10))  # the band is populated; no true positive is missed
    det = rep["success_detection"]["transitions"]
    assert det["fp"] == fp
    assert det["false_positive_rate"] == pytest.approx(fp / np.sum(~truth))
    assert det["true_positive_rate"] == 1.0


def test_command_end_to_end_writes_report_and_plots(tmp_path, capsys):
    out = tmp_path / "eval"
    report = run(compose([*FAST, "reward=task_dense", f"output_dir={out}", "monitor.min_history=10",
                          "monitor.quantile=0.8"]))
    data = json.loads((out / "report.json").read_text())
    assert data["task"] == "rewardforge/PandaReach-v0" and data["term"] == "task_dense"
    assert set(data["policies"]) == {"expert", "noisy_0.5", "random"}
    assert data["overall"]["spearman_reward_progress"] > 0.8
    assert data["epic"]["coverage_transitions"] == 6 * 15
    for png in ("reward_vs_time.png", "reward_vs_progress.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["monitor"]["transitions"] == 90 and data["monitor"]["episodes"] == 6
    # the honest task reward: its top 20% are successes, so nothing is flagged
    assert data["monitor"]["flagged"] == 0 and data["monitor"]["rate/high_reward_failure"] == 0.0
    assert data["monitor_diagnostics"][0][0] == "reward_monitor"
    table = format_table(report)
    assert "expert" in table and "rho(r,prog)" in table and table.splitlines()[-1].startswith("all")


def test_image_terms_get_their_camera_at_their_size(tmp_path):
    ImageMean.seen.clear()
    report = run(compose(["task=panda_reach", "episodes=1", "max_episode_steps=3", "policies.expert=false",
                          "policies.noise=[]", "reward.kind=test_image_mean", "epic.enabled=false", "plots=false",
                          "progress=false", f"output_dir={tmp_path}"]))
    assert report["requires"] == ["image_front"]
    assert ImageMean.seen and all(s[1:] == (16, 16, 3) for s in ImageMean.seen)
    assert report["plots"] == []
    assert report["epic"] == {"enabled": False} and "epic_to_task" not in report["overall"]


# ---------------------------------------------------------------------------
# config errors


@pytest.mark.parametrize(("override", "pattern"), [
    ("episodes=0", r"episodes=0: must be an integer >= 1"),
    ("epic.gamma=2", r"epic.gamma=2.0: must be in \[0, 1\]"),
    ("policies.noise=[-0.1]", r"policies.noise=\[-0.1\]: must be a list of noise std devs > 0"),
    ("epic.sample=3", r"unknown config key 'epic.sample' \(did you mean 'epic.samples'\?\)"),
    ("monitor.quantile=1.5", r"monitor.quantile=1.5: must be in \(0, 1\)"),
    ("max_episode_steps=0", r"max_episode_steps=0: must be >= 1 or null"),
])
def test_bad_config_values_name_the_key(override, pattern):
    with pytest.raises(EvalConfigError, match=pattern):
        compose([override])


def test_no_policy_and_unknown_kind_and_missing_expert_fail_clearly(tmp_path):
    with pytest.raises(EvalConfigError, match="enable at least one of expert, noise, random"):
        compose(["policies.expert=false", "policies.noise=[]", "policies.random=false"])
    with pytest.raises(RewardConfigError, match=r"reward.kind='nope' is not a reward kind; allowed: .*task"):
        run(compose(["reward.kind=nope", f"output_dir={tmp_path}"]))
    cfg = compose(["episodes=1", f"output_dir={tmp_path}", "progress=false"])
    cfg.task.env_id = "policies.toy_env:rftoy/PointReach-v0"
    cfg.task.kwargs = {}
    with pytest.raises(EvalConfigError, match=r"has no scripted expert.*policies.expert=false and policies.noise=\[\]"):
        run(cfg)


def test_random_only_on_a_task_without_progress(tmp_path):
    """A task without info["progress"] still evaluates (progress statistics undefined, not a crash)."""
    cfg = compose(["episodes=2", "policies.expert=false", "policies.noise=[]", "epic.samples=4", "plots=false",
                   f"output_dir={tmp_path}", "progress=false"])
    cfg.task.env_id, cfg.task.kwargs, cfg.max_episode_steps = "policies.toy_env:rftoy/PointReach-v0", {}, 10
    report = run(cfg)
    assert np.isnan(report["overall"]["spearman_reward_progress"])
    assert report["overall"]["epic_to_task"] < 1e-6
    assert json.loads((tmp_path / "report.json").read_text())["overall"]["spearman_reward_progress"] is None


def test_command_line_errors_are_short(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for arg, expect in (("episodes=0", "episodes=0: must be an integer >= 1"),
                        ("epic.sample=3", "did you mean 'epic.samples'")):
        p = subprocess.run([sys.executable, "-m", "rewards.evaluate", arg, f"output_dir={tmp_path}"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, p.stderr
        assert "config error:" in p.stderr and expect in p.stderr
        assert "Traceback" not in p.stderr
