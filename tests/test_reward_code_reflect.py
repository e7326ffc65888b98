"""Reward reflection from training statistics (Eureka) and the failed-trajectory analyser (Auto MC-Reward)."""

import json

import numpy as np
import pytest

import sim
from rewards.base import Transitions
from rewards.code.reflect import (
    ReflectionSettings,
    component_statistics,
    read_metrics,
    training_reflection,
)
from rewards.code.trajectory import AnalyserSettings, analyse_failures, summarise_episode
from rewards.code.view import build_view
from rewards.evaluate import Episode


def _rows(n: int = 10) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append({"step": 50 * (i + 1), "kind": "episode", "episode_return": -5.0, "episode_length": 50,
                     "success": i >= 8, "reward_return": 100.0 + i, "reward/reach": float(i),
                     "reward/bonus": 3.0, "reward/big": 100.0})
        if i == 4:
            rows.append({"step": 250, "kind": "train", "steps_per_s": 10.0})
    rows.append({"step": 500, "kind": "eval", "eval_success_rate": 0.3, "eval_return": -4.0})
    return rows


def test_reflection_reports_component_statistics_over_training_and_advice(tmp_path):
    rows = _rows()
    st = component_statistics(rows, windows=5)
    assert st["episodes"] == 10 and st["steps"] == [100, 200, 300, 400, 500]
    assert st["terms"]["reach"]["mean"] == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert st["success_rate"] == [0.0, 0.0, 0.0, 0.0, 1.0]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = training_reflection(read_metrics(tmp_path), ReflectionSettings(windows=5), title="test run")
    assert "10 episodes" in text and "ending at env steps 100, 200, 300, 400, 500" in text
    assert "- success rate: 0.00, 0.00, 0.00, 0.00, 1.00" in text
    assert "- term reach: 0.5, 2.5, 4.5, 6.5, 8.5 (per-episode min 0, max 9)" in text
    assert "- episode length: 50.0" in text and "step 500: 0.30" in text
    # constant terms are flagged, the reach term that moved is not; "big" dominates the magnitude
    assert "term bonus barely changed" in text and "term big barely changed" in text
    assert "term reach barely changed" not in text
    assert "term big carries 93% of the reward's magnitude" in text
    assert "stayed at zero" not in text


def test_reflection_says_rewrite_when_success_stays_zero():
    rows = [{**r, "success": False} for r in _rows() if r["kind"] == "episode"]
    text = training_reflection(rows)
    assert "success rate stayed at zero throughout" in text and "rewrite the whole function" in text
    assert "no training statistics" in training_reflection([{"kind": "train", "step": 1}])
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        read_metrics("/nonexistent")


def _episode(spec, pinch, obj, goal, success=False, seed=3, progress=None):
    """An episode of T steps from per-step positions s_0..s_T (arrays (T+1, 3))."""
    T = len(pinch) - 1
    names = list(spec.extra["keypoint_names"])

    def obs(i):
        o = {f.name: np.zeros((len(i), *f.shape), np.float32) for f in spec.state_fields}
        o["ee_pos"], o["goal_pos"] = pinch[i], goal[i]
        o["gripper"][:] = 1.0
        kp = {"pinch": pinch[i], "goal": goal[i], "object": obj[i] if obj is not None else None}
        o["keypoints"] = np.stack([kp[n] for n in names], 1)
        if obj is not None:
            o["object_pos"] = obj[i]
        return o

    idx = np.arange(T)
    b = Transitions(obs=obs(idx), action=np.zeros((T, spec.action.dim), np.float32), next_obs=obs(idx + 1),
                    progress=progress, success=np.full(T, success))
    return Episode("policy", seed, b, success)


def test_trajectory_analyser_summarises_failed_episodes():
    env = sim.make("rewardforge/PandaPush-v0")
    spec = env.unwrapped.embodiment
    env.close()
    view = build_view(spec)
    T = 20
    goal = np.tile([0.6, 0.1, 0.02], (T + 1, 1))
    obj = np.tile([0.5, -0.1, 0.02], (T + 1, 1))
    # the gripper comes down onto the block (closest 1 cm at step 8) and stays, but the block never moves
    d = np.concatenate([np.linspace(0.20, 0.01, 9), np.full(T - 8, 0.012)])
    pinch = obj + np.outer(d, [0, 0, 1.0])
    stuck = _episode(spec, pinch, obj, goal, seed=11, progress=np.linspace(0.0, 0.05, T))
    s = summarise_episode(stuck, view)
    assert s["stage"] == "contact" and s["closest_step"] == 8 and s["closest_m"] == pytest.approx(0.01, abs=1e-3)
    assert s["moved_m"] == pytest.approx(0.0) and s["final_goal_m"] == pytest.approx(np.hypot(0.1, 0.2), abs=1e-3)
    # a block pushed 10 cm towards the goal but not there: transport
    obj2 = obj + np.outer(np.linspace(0, 1, T + 1), [0.05, 0.1, 0.0])
    moved = _episode(spec, obj2 + [0, 0, 0.01], obj2, goal, seed=12)
    assert summarise_episode(moved, view)["stage"] == "transport"
    far = _episode(spec, pinch + [0, 0, 0.3], obj, goal, seed=13)
    assert summarise_episode(far, view)["stage"] == "approach"
    done = _episode(spec, pinch, goal.copy(), goal, success=True, seed=14)
    text = analyse_failures([stuck, moved, far, done], view, AnalyserSettings(max_episodes=2))
    assert text.startswith("3 of 4 evaluation episodes failed; stuck at: ")
    assert "contact x1" in text and "transport x1" in text and "approach x1" in text
    assert "reset seed 11" in text and "closest pinch-object distance 1.0 cm at step 8" in text
    assert "the object moved 0.0 cm at most" in text and "final object-goal distance 22.4 cm" in text
    assert "progress max 0.05" in text and "stuck at: contact (the gripper reached the object but never moved it)" in text
    assert "... and 1 more" in text and "reset seed 14" not in text
    assert analyse_failures([done], view) == "All 1 evaluation episodes succeeded."
