"""dm_control suite adapter: Gymnasium API, spec, seeding, truncation, success flag."""

from __future__ import annotations

import numpy as np
import pytest

import sim  # noqa: F401  (registers the ids)
from sim.external import DMC_TASKS, dmc_id
from sim.external.dmc_env import split_state

gym = pytest.importorskip("gymnasium")

STATE_DIMS = {("reacher", "easy"): 6, ("reacher", "hard"): 6, ("manipulator", "bring_ball"): 44}


@pytest.mark.parametrize("domain,task", DMC_TASKS)
def test_check_env_and_spec(domain, task):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(dmc_id(domain, task))
    spec = env.unwrapped.embodiment
    assert spec.name == f"dmc/{domain}-{task}"
    assert spec.field("state").shape == (STATE_DIMS[(domain, task)],)
    assert spec.action.dim == env.action_space.shape[0]
    assert spec.control_hz == pytest.approx(50.0 if domain == "reacher" else 100.0)
    check_env(env.unwrapped, skip_render_check=True, skip_close_check=True)
    obs, info = env.reset(seed=0)
    spec.check_observation(obs)
    assert obs["state"].dtype == np.float32
    assert isinstance(info["success"], bool)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    spec.check_observation(obs)
    assert isinstance(info["success"], bool) and isinstance(reward, float)
    assert not terminated and not truncated
    env.close()


def test_named_parts_match_dm_control():
    env = gym.make(dmc_id("reacher", "easy"))
    obs, _ = env.reset(seed=0)
    parts = split_state(obs["state"], env.unwrapped.embodiment.extra["state_layout"])
    physics = env.unwrapped.physics
    np.testing.assert_allclose(parts["position"], physics.position(), atol=1e-6)
    np.testing.assert_allclose(parts["to_target"], physics.finger_to_target(), atol=1e-6)
    env.close()


def test_action_rescaled_to_bounds():
    env = gym.make(dmc_id("reacher", "easy"))
    env.reset(seed=0)
    env.step(np.array([1.0, -1.0], dtype=np.float32))
    np.testing.assert_allclose(env.unwrapped.physics.data.ctrl, [1.0, -1.0])
    env.step(np.array([5.0, 0.0], dtype=np.float32))  # clipped
    np.testing.assert_allclose(env.unwrapped.physics.data.ctrl, [1.0, 0.0])
    env.close()


def test_seeded_reset_is_reproducible(assert_seeded_replay):
    env = gym.make(dmc_id("reacher", "hard"))
    acts = np.random.default_rng(0).uniform(-1, 1, size=(30, 2)).astype(np.float32)
    assert_seeded_replay(env, 11, acts, other_seed=12)
    env.close()


def test_truncates_at_1000_without_reset_inside():
    env = gym.make(dmc_id("reacher", "easy"))
    env.reset(seed=0)
    zero = np.zeros(2, dtype=np.float32)
    for t in range(1, 1001):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated
        assert truncated == (t == 1000), t
    env.close()


@pytest.mark.parametrize("task", ["easy", "hard"])
def test_reacher_success_when_finger_on_target(task):
    env = gym.make(dmc_id("reacher", task))
    env.reset(seed=0)
    u = env.unwrapped
    physics = u.physics
    physics.data.qvel[:] = 0.0
    # target onto the fingertip -> inside the target
    physics.named.model.geom_pos["target", ["x", "y"]] = physics.named.data.geom_xpos[
        "finger", ["x", "y"]
    ]
    physics.forward()
    assert u.is_success() is True
    _, reward, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["success"] is True and reward == 1.0
    # target far from the fingertip (opposite side of the arena) -> not a success
    physics.named.model.geom_pos["target", ["x", "y"]] = -physics.named.data.geom_xpos[
        "finger", ["x", "y"]
    ]
    physics.forward()
    assert u.is_success() is False
    _, reward, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["success"] is False and reward < 1.0
    env.close()


def test_manipulator_success_when_ball_in_target():
    env = gym.make(dmc_id("manipulator", "bring_ball"))
    env.reset(seed=0)
    u = env.unwrapped
    physics = u.physics
    target = physics.named.data.site_xpos["target_ball"]
    ball = physics.named.data.site_xpos["ball"]
    physics.named.data.qpos["ball_x"] += target[0] - ball[0]
    physics.named.data.qpos["ball_z"] += target[2] - ball[2]
    physics.forward()
    assert u.is_success() is True
    physics.named.data.qpos["ball_x"] += 0.1
    physics.forward()
    assert u.is_success() is False
    env.close()


def test_render_rgb_array_shape():
    env = gym.make(dmc_id("reacher", "easy"), render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 1
    env.close()
