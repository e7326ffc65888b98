"""Operational-space controller and workspace box of the Panda tasks."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import sim  # noqa: F401


def _run_osc(u, target, yaw=0.0, seconds=1.5, every=None):
    m, d = u.model, u.data
    k = every or u.ctrl_every
    for _ in range(int(seconds / m.opt.timestep) // k):
        d.ctrl[:7] = u.osc.torques(d, np.asarray(target, float), yaw)
        mujoco.mj_step(m, d, k)
    mujoco.mj_forward(m, d)


@pytest.mark.parametrize(
    "target,yaw",
    [((0.6, 0.2, 0.1), 0.0), ((0.35, -0.25, 0.3), 0.5), ((0.7, -0.1, 0.05), -0.8)],
)
def test_osc_reaches_target_pointing_down(target, yaw):
    env = gym.make("rewardforge/PandaReach-v0")
    env.reset(seed=0)
    u = env.unwrapped
    _run_osc(u, target, yaw)
    assert np.linalg.norm(u.ee_pos - target) < 0.005  # 5 mm after 1.5 s
    assert abs(u.ee_yaw - yaw) < 0.02
    z_axis = u.data.site_xmat[u.model.site("pinch").id].reshape(3, 3)[:, 2]
    assert z_axis[2] < -0.999  # fingers point straight down


def test_env_steps_track_commanded_target():
    env = gym.make("rewardforge/PandaReach-v0")
    obs, _ = env.reset(seed=1)
    start = obs["ee_pos"].copy()
    for _ in range(6):  # 6 steps of +x at 0.05 m/step = 0.30 m, then let it settle
        obs, *_ = env.step(np.array([1.0, 0.0, 0.0, 1.0], np.float32))
    expected = start + np.array([0.30, 0.0, 0.0])
    expected = np.clip(expected, env.unwrapped.ws_low, env.unwrapped.ws_high)
    np.testing.assert_allclose(env.unwrapped.target, expected, atol=1e-6)
    for _ in range(5):
        obs, *_ = env.step(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
    assert np.linalg.norm(obs["ee_pos"] - expected) < 0.01
    assert np.linalg.norm(obs["ee_vel"]) < 0.05


@pytest.mark.parametrize("axis,sign", [(0, 1), (0, -1), (1, 1), (2, -1), (2, 1)])
def test_workspace_box_clips_target(axis, sign):
    env = gym.make("rewardforge/PandaReach-v0")
    u = env.unwrapped
    env.reset(seed=0)
    action = np.zeros(4, np.float32)
    action[axis], action[3] = sign, 1.0
    for _ in range(25):
        obs, *_ = env.step(action)
    bound = (u.ws_high if sign > 0 else u.ws_low)[axis]
    assert u.target[axis] == pytest.approx(bound)
    assert np.all(u.target >= u.ws_low) and np.all(u.target <= u.ws_high)
    assert abs(obs["ee_pos"][axis] - bound) < 0.015  # arrived, did not pass it
    spec = u.embodiment
    assert spec.workspace_low == tuple(u.ws_low) and spec.workspace_high == tuple(u.ws_high)


def test_custom_workspace_and_bad_box():
    env = gym.make(
        "rewardforge/PandaReach-v0", workspace_low=(0.4, -0.1, 0.2), workspace_high=(0.5, 0.1, 0.3)
    )
    env.reset(seed=0)
    for _ in range(10):
        obs, *_ = env.step(np.array([-1.0, -1.0, -1.0, 1.0], np.float32))
    np.testing.assert_allclose(env.unwrapped.target, (0.4, -0.1, 0.2))
    with pytest.raises(ValueError, match="workspace"):
        gym.make("rewardforge/PandaReach-v0", workspace_low=(0.5, 0, 0), workspace_high=(0.4, 1, 1))


def test_gripper_command_opens_and_closes():
    env = gym.make("rewardforge/PandaReach-v0")
    obs, _ = env.reset(seed=0)
    assert obs["gripper"][0] > 0.95
    for _ in range(5):
        obs, *_ = env.step(np.array([0, 0, 0, -1.0], np.float32))
    assert obs["gripper"][0] < 0.1
    for _ in range(5):
        obs, *_ = env.step(np.array([0, 0, 0, 1.0], np.float32))
    assert obs["gripper"][0] > 0.95
