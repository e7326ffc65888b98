"""Panda tabletop tasks: reach, push, pick-and-place, drawer opening.

Gymnasium ids (registered with string entry points, so ``import sim`` stays cheap):

============================== ================================ =================
id                             class                            max_episode_steps
============================== ================================ =================
rewardforge/PandaReach-v0      sim.panda.tasks:PandaReachEnv    50
rewardforge/PandaPush-v0       sim.panda.tasks:PandaPushEnv     100
rewardforge/PandaPickPlace-v0  sim.panda.tasks:PandaPickPlaceEnv 120
rewardforge/PandaDrawerOpen-v0 sim.panda.tasks:PandaDrawerOpenEnv 100
============================== ================================ =================

``env.unwrapped.embodiment`` is the task's :class:`common.spec.EmbodimentSpec`;
``sim.panda.experts.make_expert(env)`` gives a scripted policy ``obs -> action``.
"""

from __future__ import annotations

TASKS: dict[str, tuple[str, int]] = {
    "rewardforge/PandaReach-v0": ("sim.panda.tasks:PandaReachEnv", 50),
    "rewardforge/PandaPush-v0": ("sim.panda.tasks:PandaPushEnv", 100),
    "rewardforge/PandaPickPlace-v0": ("sim.panda.tasks:PandaPickPlaceEnv", 120),
    "rewardforge/PandaDrawerOpen-v0": ("sim.panda.tasks:PandaDrawerOpenEnv", 100),
}


def register() -> None:
    """Register the Panda task ids with Gymnasium (idempotent)."""
    import gymnasium as gym

    for env_id, (entry_point, steps) in TASKS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=steps)
