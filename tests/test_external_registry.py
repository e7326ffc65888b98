"""Registration of the outside-benchmark ids stays cheap; task configs point at real ids."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import sim  # noqa: F401
from sim.external import DMC_TASKS, METAWORLD_TASKS, dmc_id, metaworld_id

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "metaworld_reach": "rewardforge/MetaWorld-reach-v3",
    "metaworld_push": "rewardforge/MetaWorld-push-v3",
    "metaworld_pick_place": "rewardforge/MetaWorld-pick-place-v3",
    "metaworld_drawer_open": "rewardforge/MetaWorld-drawer-open-v3",
    "metaworld_button_press": "rewardforge/MetaWorld-button-press-v3",
    "dmc_reacher_easy": "rewardforge/DMC-reacher-easy",
    "dmc_reacher_hard": "rewardforge/DMC-reacher-hard",
    "dmc_manipulator_bring_ball": "rewardforge/DMC-manipulator-bring_ball",
}


def test_ids_registered_with_string_entry_points():
    ids = [metaworld_id(t) for t in METAWORLD_TASKS] + [dmc_id(d, t) for d, t in DMC_TASKS]
    ids += ["rewardforge/MetaWorld-v3", "rewardforge/DMC"]
    for env_id in ids:
        spec = gym.spec(env_id)
        assert isinstance(spec.entry_point, str), env_id
        assert spec.max_episode_steps == (500 if "MetaWorld" in env_id else 1000)


def test_import_sim_does_not_import_benchmarks():
    code = (
        "import sys, sim, gymnasium as gym\n"
        "assert 'rewardforge/MetaWorld-reach-v3' in gym.registry\n"
        "bad = [m for m in ('metaworld', 'dm_control') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.mark.parametrize("name,env_id", sorted(CONFIGS.items()))
def test_task_config(name, env_id):
    cfg = yaml.safe_load((ROOT / "configs" / "task" / f"{name}.yaml").read_text())
    assert set(cfg) == {"env_id", "max_episode_steps", "total_steps", "kwargs"}
    assert isinstance(cfg["total_steps"], int) and cfg["total_steps"] > 0
    assert cfg["env_id"] == env_id
    spec = gym.spec(env_id)
    assert cfg["max_episode_steps"] == spec.max_episode_steps
    entry = spec.entry_point
    module, cls = entry.split(":")
    params = inspect.signature(getattr(__import__(module, fromlist=[cls]), cls)).parameters
    for key, value in cfg["kwargs"].items():
        assert key in params, f"{name}: unknown kwarg {key}"
        assert params[key].default == value, f"{name}: {key} default differs from config"


def test_generic_ids_take_a_task_name():
    env = gym.make("rewardforge/MetaWorld-v3", task="door-open-v3")
    assert env.unwrapped.embodiment.name == "metaworld/door-open-v3"
    env.close()
    env = gym.make("rewardforge/DMC", domain="cartpole", task="swingup")
    obs, info = env.reset(seed=0)
    env.unwrapped.embodiment.check_observation(obs)
    env.close()
