"""Demonstrations in the replay: RLPD's symmetric sampling (Ball et al. 2023).

A dataset in the project's episode format (common/episodes: scripted demos, teleoperation,
recorded interventions) fills an offline buffer; each training batch then takes
``demo_ratio`` of its transitions from it and the rest from the online buffer (RLPD and
HIL-SERL use half and half). Demo rewards are the stored ones, or, when the run trains on a
reward term, re-scored by that term (so demos and online data share one reward).

A pixel agent (``agent=drq``) reads the recorded camera frames: the dataset must have been
recorded with the agent's cameras at its image size (``rewardforge-record cameras=[front]
image_size=84``), which the spec check enforces, and its buffer stores state and images like the
online one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.spec import EmbodimentSpec
from policies.replay import ReplayBuffer


def load_demo_buffer(path: str, spec: EmbodimentSpec, term: Any = None, scale: float = 1.0,
                     seed: int = 0, extra_capacity: int = 0,
                     pixel_obs: Any = None, success_only: bool = False) -> tuple[ReplayBuffer, dict[str, Any]]:
    """An offline buffer with every transition of the dataset at ``path`` and room for
    ``extra_capacity`` more (interventions added during training); refuses a dataset recorded
    for another embodiment (listing the differences). ``pixel_obs`` (a
    :class:`policies.pixels.PixelObs`): store what a pixel agent reads, images included.
    ``success_only``: only the episodes labelled successful (a demonstrator's failed attempts teach
    the critic, but on the demonstration side of every batch they also pull the actor toward them)."""
    from common.episodes import Dataset

    ds = Dataset(path)
    ds.spec.require_compatible(spec, what=f"demonstration dataset {path}")
    cams = [k.removeprefix("image_") for k in getattr(term, "requires", ()) if k.startswith("image_")]
    if pixel_obs is not None:
        cams = list(dict.fromkeys([*cams, *(n.removeprefix("image_") for n in pixel_obs.image_names)]))
    episodes = [i for i, e in enumerate(ds.episodes) if bool(e["success"])] if success_only else None
    if episodes == []:
        raise ValueError(f"demonstration dataset {path} has no episode labelled successful (demos_success_only=true)")
    tr = ds.transitions(images=cams or False, episodes=episodes)
    n = len(tr["reward"])
    if n == 0:
        raise ValueError(f"demonstration dataset {path} has no transitions")
    reward = np.asarray(tr["reward"], np.float32)
    if term is not None:
        from rewards import Transitions, relabel

        batch = Transitions(obs=tr["obs"], action=tr["action"], next_obs=tr["next_obs"], env_reward=reward,
                            success=tr["success"], episode_step=tr["frame_index"])
        reward = relabel(term, batch).reward
        term.train_mode(True)  # relabel froze running statistics; training updates them again
    if pixel_obs is None:
        obs, next_obs = tr["state"], tr["next_state"]
        buf = ReplayBuffer(n + int(extra_capacity), spec.state_dim, spec.action.dim, num_envs=1, seed=seed + 7)
    else:
        obs, next_obs = pixel_obs(tr["obs"]), pixel_obs(tr["next_obs"])
        buf = ReplayBuffer(n + int(extra_capacity), pixel_obs.state_dim, spec.action.dim, num_envs=1, seed=seed + 7,
                           image_shapes=pixel_obs.image_shapes)

    def row(x: Any, k: int) -> Any:
        return {f: v[k][None] for f, v in x.items()} if isinstance(x, dict) else x[k][None]

    for k in range(n):  # in time order: episode ends make n-step returns stop at boundaries
        buf.add(row(obs, k), tr["action"][k][None], np.float32([reward[k] * scale]),
                row(next_obs, k), tr["terminated"][k][None], tr["truncated"][k][None])
    used = episodes if episodes is not None else range(ds.num_episodes)
    info = {"episodes": len(used), "transitions": n, "interventions": int(np.sum(tr["intervention"])),
            "success_rate": float(np.mean([bool(ds.episodes[i]["success"]) for i in used])) if len(used) else 0.0}
    return buf, info


def demo_rows_in(offline: ReplayBuffer | None, batch_size: int, ratio: float) -> int:
    """How many rows at the end of each of :func:`mixed_sample`'s minibatches are offline ones."""
    if offline is None or ratio <= 0.0 or len(offline) == 0:
        return 0
    return int(round(ratio * batch_size))


def mixed_sample(online: ReplayBuffer, offline: ReplayBuffer | None, batch_size: int, utd: int, ratio: float,
                 n_step: int, gamma: float) -> dict[str, np.ndarray]:
    """``utd`` minibatches of ``batch_size`` stacked along axis 0; with an offline buffer each
    minibatch holds ``round(ratio * batch_size)`` offline transitions and the rest online ones."""
    n_off = demo_rows_in(offline, batch_size, ratio)
    if n_off == 0:  # e.g. no intervention yet
        return online.sample(batch_size * utd, n_step, gamma)
    n_on = batch_size - n_off
    off = offline.sample(n_off * utd, n_step, gamma)
    if n_on == 0:
        return off
    on = online.sample(n_on * utd, n_step, gamma)
    out = {}
    for k in on:
        a, b = on[k].reshape(utd, n_on, *on[k].shape[1:]), off[k].reshape(utd, n_off, *off[k].shape[1:])
        out[k] = np.concatenate([a, b], axis=1).reshape(utd * batch_size, *on[k].shape[1:])
    return out
