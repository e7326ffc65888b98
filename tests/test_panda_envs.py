"""Panda tabletop tasks: Gymnasium API, spec, determinism, errors, vector envs, rendering."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import sim  # noqa: F401  (registers the ids)
from common.spec import SpecMismatchError
from sim.panda import TASKS

IDS = sorted(TASKS)
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "task"


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id):
    env = gym.make(env_id, render_mode="rgb_array").unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_observations_follow_spec_and_info(env_id):
    env = gym.make(env_id)
    spec = env.unwrapped.embodiment
    assert spec.name.startswith("panda/")
    assert spec.control_hz == 10.0
    assert spec.action.layout == ("dx", "dy", "dz", "gripper")
    assert set(env.observation_space.spaces) == set(spec.obs_names)
    obs, info = env.reset(seed=3)
    spec.check_observation(obs)
    assert obs in env.observation_space
    assert obs["keypoints"].shape == (len(spec.extra["keypoint_names"]), 3)
    assert spec.extra["keypoint_names"][0] == "pinch"
    np.testing.assert_allclose(obs["keypoints"][0], obs["ee_pos"], atol=1e-6)
    for key in ("success", "progress", "reward_components"):
        assert key in info
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        spec.check_observation(obs)
        assert isinstance(info["success"], bool)
        assert 0.0 <= info["progress"] <= 1.0
        assert np.isclose(reward, sum(info["reward_components"].values()))
        assert -3.0 < reward < 3.0
    bad = dict(obs)
    bad["ee_pos"] = np.zeros(2, np.float32)
    with pytest.raises(SpecMismatchError):
        spec.check_observation(bad)
    env.close()


def test_privileged_fields_marked():
    spec = gym.make("rewardforge/PandaPickPlace-v0").unwrapped.embodiment
    assert spec.field("object_pos").privileged and spec.field("object_quat").privileged
    assert not spec.field("ee_pos").privileged
    drawer = gym.make("rewardforge/PandaDrawerOpen-v0").unwrapped.embodiment
    assert drawer.field("drawer_pos").privileged
    assert "handle" in drawer.extra["keypoint_names"]


def test_yaw_action_layout():
    env = gym.make("rewardforge/PandaReach-v0", yaw=True)
    u = env.unwrapped
    assert u.embodiment.action.layout == ("dx", "dy", "dz", "dyaw", "gripper")
    assert env.action_space.shape == (5,)
    obs, _ = env.reset(seed=0)
    for _ in range(15):
        obs, *_ = env.step(np.array([0, 0, 0, 1.0, 1.0], np.float32))
    # 15 steps at 0.2 rad/step saturate at yaw_limit 1.5 rad; the gripper follows.
    assert abs(obs["ee_yaw"][0] - u.yaw_limit) < 0.05
    assert u.embodiment.differences(gym.make("rewardforge/PandaReach-v0").unwrapped.embodiment)


@pytest.mark.parametrize("env_id", ["rewardforge/PandaPush-v0", "rewardforge/PandaDrawerOpen-v0"])
def test_seeded_determinism(env_id):
    def rollout(seed):
        env = gym.make(env_id)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        traj = [obs]
        for _ in range(8):
            obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            traj.append(obs)
        env.close()
        return traj

    a, b, c = rollout(7), rollout(7), rollout(8)
    for oa, ob in zip(a, b, strict=True):
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k])
    assert not np.array_equal(a[0]["goal_pos"], c[0]["goal_pos"])


def test_reset_randomises_placement_and_physics():
    env = gym.make("rewardforge/PandaPickPlace-v0")
    u = env.unwrapped
    objs, masses = [], []
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        objs.append(obs["object_pos"].copy())
        masses.append(float(u.model.body_mass[u.model.body("object").id]))
        assert abs(obs["object_pos"][2] - u.block_half) < 1e-6  # resting on the table
    assert len({tuple(np.round(o, 4)) for o in objs}) == 4
    assert len(set(masses)) == 4 and all(0.05 <= m <= 0.15 for m in masses)
    fixed = gym.make("rewardforge/PandaPickPlace-v0", randomize_physics=False).unwrapped
    fixed.reset(seed=0)
    assert np.isclose(fixed.model.body_mass[fixed.model.body("object").id], 0.1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_action_raises(bad):
    env = gym.make("rewardforge/PandaReach-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array([0.0, bad, 0.0, 1.0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, np.float32))


def test_make_vec_sync():
    envs = gym.make_vec("rewardforge/PandaReach-v0", num_envs=2, vectorization_mode="sync")
    obs, info = envs.reset(seed=[1, 2])
    assert obs["ee_pos"].shape == (2, 3) and obs["keypoints"].shape == (2, 2, 3)
    assert not np.allclose(obs["goal_pos"][0], obs["goal_pos"][1])
    obs, reward, term, trunc, info = envs.step(envs.action_space.sample())
    assert reward.shape == (2,) and info["success"].shape == (2,)
    envs.close()


def test_render_and_camera_observations():
    env = gym.make(
        "rewardforge/PandaPush-v0",
        render_mode="rgb_array",
        cameras=("front", "handcam_rgb"),
        image_size=64,
    )
    spec = env.unwrapped.embodiment
    assert [f.name for f in spec.image_fields] == ["image_front", "image_handcam_rgb"]
    obs, _ = env.reset(seed=0)
    spec.check_observation(obs)
    for key in ("image_front", "image_handcam_rgb"):
        assert obs[key].shape == (64, 64, 3) and obs[key].dtype == np.uint8
        assert obs[key].std() > 5  # an actual picture, not a blank frame
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 5
    env.close()
    with pytest.raises(ValueError, match="unknown camera"):
        gym.make("rewardforge/PandaReach-v0", cameras=("nope",))


@pytest.mark.parametrize("env_id", IDS)
def test_task_config_matches_registration(env_id):
    name = {
        "rewardforge/PandaReach-v0": "panda_reach",
        "rewardforge/PandaPush-v0": "panda_push",
        "rewardforge/PandaPickPlace-v0": "panda_pick_place",
        "rewardforge/PandaDrawerOpen-v0": "panda_drawer_open",
    }[env_id]
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert set(cfg) == {"env_id", "max_episode_steps", "total_steps", "kwargs"}
    assert cfg["env_id"] == env_id
    assert cfg["max_episode_steps"] == gym.spec(env_id).max_episode_steps
    env = gym.make(env_id, **cfg["kwargs"])
    u = env.unwrapped
    # Every knob in the config is a constructor argument, at its default value.
    import inspect

    params = {}
    for cls in type(u).__mro__:
        if "__init__" in cls.__dict__:
            for p in inspect.signature(cls.__init__).parameters.values():
                if p.default is not inspect.Parameter.empty:
                    params.setdefault(p.name, p.default)
    for key, value in cfg["kwargs"].items():
        assert key in params, key
        default = params[key]
        if isinstance(default, tuple | list):
            assert list(default) == list(value), key
        else:
            assert default == value, key
    env.close()
