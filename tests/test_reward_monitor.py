"""The reward-hacking monitor flags exactly the disagreeing transitions and keeps running counts."""

import numpy as np
import pytest

from rewards import RewardConfigError, RewardOutput
from rewards.monitor import (
    ENSEMBLE_DISAGREEMENT,
    ERROR,
    HIGH_RETURN_FAILURE,
    HIGH_REWARD_FAILURE,
    OK,
    SUCCESS_FALSE_POSITIVE,
    WARN,
    RewardMonitor,
)

F, T = False, True


def test_high_reward_while_the_task_fails_is_flagged_exactly():
    m = RewardMonitor(threshold=0.5)
    out = RewardOutput([0.1, 0.9, 0.95, 0.2, 0.99, 0.6])
    flags = m.update(out, success=np.array([F, F, T, F, T, F]))
    assert flags.reasons[HIGH_REWARD_FAILURE].tolist() == [F, T, F, F, F, T]
    assert flags.any.tolist() == [F, T, F, F, F, T]
    assert not flags.reasons[SUCCESS_FALSE_POSITIVE].any() and not flags.reasons[ENSEMBLE_DISAGREEMENT].any()
    assert flags.checked == (HIGH_REWARD_FAILURE,)  # no detector, no ensemble: only this check ran


def test_named_components_and_the_terms_own_detector_as_reference():
    """Without ground truth the term's success verdict is the reference; a component (``clip``)
    is checked instead of the total reward."""
    m = RewardMonitor(reward_keys=["clip"], threshold=0.5)
    out = RewardOutput([0.0, 0.0, 0.0, 0.0], {"clip": [0.9, 0.9, 0.1, 0.7]}, success=[F, T, F, F])
    flags = m.update(out)
    assert flags.reasons[HIGH_REWARD_FAILURE].tolist() == [T, F, F, T]
    with pytest.raises(RewardConfigError, match=r"monitor.reward_keys names 'keypoints'.*components \['clip'\]"):
        RewardMonitor(reward_keys=["keypoints"]).update(out)


def test_success_false_positives_against_ground_truth():
    m = RewardMonitor(threshold=10.0)  # nothing is "high": only the detector check can fire
    out = RewardOutput(np.zeros(5), success=[T, F, T, T, F])
    flags = m.update(out, success=np.array([F, F, T, F, T]))
    assert flags.reasons[SUCCESS_FALSE_POSITIVE].tolist() == [T, F, F, T, F]  # the false negative is not hacking
    assert flags.any.tolist() == [T, F, F, T, F]


def test_ensemble_disagreement_by_component_name_or_suffix():
    m = RewardMonitor(threshold=10.0, disagreement_threshold=0.25)
    out = RewardOutput(np.zeros(4), {"classifier/prob_std": [0.1, 0.3, 0.5, 0.2], "clip": [1, 1, 1, 1]})
    assert m.update(out).reasons[ENSEMBLE_DISAGREEMENT].tolist() == [F, T, T, F]
    out = RewardOutput(np.zeros(2), {"prob_std": [0.26, 0.24]})
    assert m.update(out).reasons[ENSEMBLE_DISAGREEMENT].tolist() == [T, F]
    assert m.counts[ENSEMBLE_DISAGREEMENT] == 3 and m.checked[ENSEMBLE_DISAGREEMENT] == 6


def test_quantile_rule_uses_recent_values_and_waits_for_history():
    m = RewardMonitor(quantile=0.9, min_history=20, history=50)
    # 10 values: not enough history yet, nothing is high even for a failed 1e6
    early = m.update(RewardOutput([*range(9), 1e6]), success=np.zeros(10, bool))
    assert not early.any.any() and early.cuts["reward"] == float("inf")
    # 100 successful values 0..99 fill the ring buffer (its last 50: 50..99) and flag nothing
    assert not m.update(RewardOutput(np.arange(100.0)), success=np.ones(100, bool)).any.any()
    batch = np.array([60.0, 96.0, 99.5, 120.0])
    flags = m.update(RewardOutput(batch), success=np.zeros(4, bool))
    recent = np.concatenate([np.arange(54.0, 100.0), batch])  # the last 50 values, this batch included
    assert flags.cuts["reward"] == pytest.approx(np.quantile(recent, 0.9))
    assert flags.reasons[HIGH_REWARD_FAILURE].tolist() == (batch > np.quantile(recent, 0.9)).tolist() == [F, F, T, T]


def test_max_progress_spares_states_near_success():
    m = RewardMonitor(threshold=0.5, max_progress=0.8)
    flags = m.update(RewardOutput([0.9, 0.9, 0.9]), success=np.zeros(3, bool), progress=np.array([0.1, 0.79, 0.95]))
    assert flags.reasons[HIGH_REWARD_FAILURE].tolist() == [T, T, F]


def test_running_counts_summary_and_last_reasons():
    m = RewardMonitor(threshold=0.5)
    m.update(RewardOutput([0.9, 0.1], success=[F, F]), success=np.array([F, F]))  # 1 high+fail
    m.update(RewardOutput([0.1, 0.1, 0.1], success=[F, T, F]), success=np.array([F, F, F]))  # 1 false positive
    s = m.summary()
    assert (s["transitions"], s["flagged"]) == (5, 2)
    assert s["count/high_reward_failure"] == 1 and s["rate/high_reward_failure"] == pytest.approx(1 / 5)
    assert s["count/success_false_positive"] == 1 and s["rate/success_false_positive"] == pytest.approx(1 / 5)
    assert np.isnan(s["rate/ensemble_disagreement"])  # never checkable here
    assert s["last_reasons"] == SUCCESS_FALSE_POSITIVE and s["last_flagged_at"] == 3
    m.reset()
    assert m.summary()["transitions"] == 0 and m.summary()["last_reasons"] == ""


def test_episode_verdicts():
    m = RewardMonitor(threshold=0.5, return_threshold=1.0, episode_min_flags=2)
    # one flagged transition: below episode_min_flags; return 1.5 > 1 and the episode failed
    f1 = m.update_episode(RewardOutput([0.9, 0.3, 0.3]), success=np.array([F, F, F]))
    assert f1.episode and f1.episode_reasons == (HIGH_RETURN_FAILURE,)
    # two flagged transitions, but the episode succeeded at its end: no high_return_failure
    f2 = m.update_episode(RewardOutput([0.9, 0.9, 0.9]), success=np.array([F, F, T]))
    assert f2.episode_reasons == (HIGH_REWARD_FAILURE,)
    f3 = m.update_episode(RewardOutput([0.1, 0.1]), success=np.array([F, F]))
    assert not f3.episode and f3.episode_reasons == ()
    s = m.summary()
    assert (s["episodes"], s["episodes_flagged"]) == (3, 2)
    assert s["episode_count/high_return_failure"] == 1 and s["episode_count/high_reward_failure"] == 1
    assert s["count/high_reward_failure"] == 3


def test_diagnostics_levels_and_string_values():
    m = RewardMonitor(threshold=0.5, warn_rate=0.05, error_rate=0.2, name="mon")
    # 1 of 10 high+failed (10%: WARN); 3 of 10 false positives (30%: ERROR); no ensemble (OK, unchecked)
    succ_pred = np.array([T, T, T] + [F] * 7)
    m.update(RewardOutput([0.0] * 5 + [0.9] + [0.0] * 4, success=succ_pred), success=np.zeros(10, bool))
    diags = {name: (level, msg, values) for name, level, msg, values in m.diagnostics()}
    assert diags["mon: high_reward_failure"][0] == WARN
    assert diags["mon: success_false_positive"][0] == ERROR
    assert diags["mon: ensemble_disagreement"][0] == OK and "not checked" in diags["mon: ensemble_disagreement"][1]
    assert diags["mon"][0] == ERROR and "4 of 10 transitions flagged; last: high_reward_failure" in diags["mon"][1]
    assert diags["mon: success_false_positive"][2]["count"] == "3"
    for _, _, values in diags.values():
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


def test_shape_mismatch_and_config_errors():
    with pytest.raises(ValueError, match=r"success has shape \(2,\), expected \(3,\)"):
        RewardMonitor().update(RewardOutput(np.zeros(3)), success=np.zeros(2, bool))
    with pytest.raises(RewardConfigError, match=r"monitor has unknown keys \['quantil'\]; allowed: reward_keys"):
        RewardMonitor.from_config({"quantil": 0.9})
    with pytest.raises(RewardConfigError, match=r"monitor.quantile=1.0: must be in \(0, 1\)"):
        RewardMonitor.from_config({"quantile": 1.0})
    with pytest.raises(RewardConfigError, match="warn_rate <= error_rate"):
        RewardMonitor(warn_rate=0.5, error_rate=0.1)
    m = RewardMonitor.from_config({"reward_keys": ["clip", "keypoints"], "disagreement_keys": ["prob_std"]})
    assert m.reward_keys == ("clip", "keypoints")
