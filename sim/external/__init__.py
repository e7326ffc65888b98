"""Outside benchmark adapters: Meta-World v3 and the dm_control suite.

``register()`` only records Gymnasium ids with string entry points; metaworld and
dm_control are imported when an env is made, so ``import sim`` stays cheap.

Ids:

* ``rewardforge/MetaWorld-<task>`` for the tasks in ``METAWORLD_TASKS``, e.g.
  ``rewardforge/MetaWorld-reach-v3`` (500 steps), and the generic
  ``rewardforge/MetaWorld-v3`` taking ``task="<any v3 task>"``;
* ``rewardforge/DMC-<domain>-<task>`` for ``DMC_TASKS``, e.g.
  ``rewardforge/DMC-reacher-easy`` (1000 steps), and the generic ``rewardforge/DMC``
  taking ``domain=..., task=...``.

See ``sim.external.metaworld_env`` and ``sim.external.dmc_env`` for observation,
action and success definitions.
"""

from __future__ import annotations

import gymnasium as gym

METAWORLD_TASKS = ("reach-v3", "push-v3", "pick-place-v3", "drawer-open-v3", "button-press-v3")
DMC_TASKS = (("reacher", "easy"), ("reacher", "hard"), ("manipulator", "bring_ball"))

METAWORLD_ENTRY = "sim.external.metaworld_env:MetaWorldEnv"
DMC_ENTRY = "sim.external.dmc_env:DMCEnv"


def _register(env_id: str, entry_point: str, max_episode_steps: int, kwargs: dict) -> None:
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id,
        entry_point=entry_point,
        max_episode_steps=max_episode_steps,
        kwargs=kwargs,
    )


def metaworld_id(task: str) -> str:
    return f"rewardforge/MetaWorld-{task}"


def dmc_id(domain: str, task: str) -> str:
    return f"rewardforge/DMC-{domain}-{task}"


def register() -> None:
    """Register the benchmark adapter ids with Gymnasium (idempotent)."""
    for task in METAWORLD_TASKS:
        _register(metaworld_id(task), METAWORLD_ENTRY, 500, {"task": task})
    _register("rewardforge/MetaWorld-v3", METAWORLD_ENTRY, 500, {})
    for domain, task in DMC_TASKS:
        _register(dmc_id(domain, task), DMC_ENTRY, 1000, {"domain": domain, "task": task})
    _register("rewardforge/DMC", DMC_ENTRY, 1000, {})
