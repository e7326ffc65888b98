"""MuJoCo tasks and adapters for outside benchmarks, all behind the Gymnasium API.

Contract every env here keeps (the training loop, reward terms and the ROS bridge
rely on it):

* ``env.unwrapped.embodiment`` is a :class:`common.spec.EmbodimentSpec`;
  observations are dicts whose keys, shapes and dtypes follow it, and
  ``observation_space`` is the matching ``gymnasium.spaces.Dict``.
* Actions are float32 vectors in [-1, 1]^dim, meaning what ``embodiment.action`` says.
* ``info["success"]`` (bool) is present after ``reset`` and every ``step``;
  ``info["reward_components"]`` (dict of floats) where the reward has parts.
* ``render_mode="rgb_array"`` renders uint8 frames for videos.

Importing this package registers the Gymnasium ids; nothing heavy is imported
until an env is made.
"""

from __future__ import annotations

import os

# Headless rendering by default (this project runs on servers); a user may override.
os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402

from sim.external import register as _register_external  # noqa: E402
from sim.panda import register as _register_panda  # noqa: E402

_register_panda()
_register_external()


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """Make a registered env, with a clear error listing the ids we know."""
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.NameNotFound as err:
        known = sorted(k for k in gym.registry if k.startswith("rewardforge/"))
        raise ValueError(f"unknown env id {env_id!r}; registered ids: {known}") from err
