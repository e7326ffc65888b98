"""Checkpoints: weights + optimiser + resolved config + embodiment spec, written atomically.

Format (one ``torch.save`` dict, loadable with ``weights_only=True``)::

    {"format": "rewardforge.sac/1", "step": int, "obs_dim": int, "act_dim": int,
     "agent": {"actor", "critic", "critic_target": state dicts, "log_alpha": tensor,
               "optimizer": Adam state dict, "num_updates": int,
               pixel agents also "encoder", "encoder_target": state dicts, "encoder_updates": int},
     "config": resolved config as plain dict, "embodiment": EmbodimentSpec.to_dict(),
     "extra": {...}}

:func:`export_policy` writes the same format with only ``agent.actor`` (and a pixel
policy's ``agent.encoder``: a deployable policy, ~10x smaller); :func:`load_policy` reads either.

A killed process never leaves a half-written file: we write ``<name>.tmp`` and
``os.replace`` it over the target (atomic on POSIX).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from common.atomic import atomic_open
from common.spec import EmbodimentSpec

FORMAT = "rewardforge.sac/1"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_open(path) as f:
        torch.save(obj, f)


def _plain(cfg: DictConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def save(path: str | os.PathLike, agent: Any, cfg: DictConfig | Mapping[str, Any] | None,
         embodiment: EmbodimentSpec, step: int, extra: Mapping[str, Any] | None = None,
         include_optimizer: bool = True) -> None:
    """Write a checkpoint of ``agent`` (a :class:`policies.sac.SAC`) trained on ``embodiment``."""
    state = agent.state_dict()
    if not include_optimizer:
        state.pop("optimizer")
    atomic_torch_save({
        "format": FORMAT, "step": int(step), "obs_dim": agent.obs_dim, "act_dim": agent.act_dim,
        "agent": state, "config": _plain(cfg), "embodiment": embodiment.to_dict(), "extra": dict(extra or {}),
    }, path)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict (tensors and plain Python only; no code is unpickled)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint (format={ckpt.get('format') if isinstance(ckpt, dict) else None!r})")
    return ckpt


def load_policy(path: str | os.PathLike, expect: EmbodimentSpec | None = None, device: str = "cpu",
                check_observations: bool = True):
    """Load the deterministic policy of a checkpoint. With ``expect`` (the spec of the env or
    robot it will drive), refuse a checkpoint trained for a different embodiment with
    :class:`common.spec.SpecMismatchError` listing every difference."""
    from policies.policy import Policy

    ckpt = load(path)
    trained_for = EmbodimentSpec.from_dict(ckpt["embodiment"])
    if expect is not None:
        trained_for.require_compatible(expect, what=f"checkpoint {os.fspath(path)}")
    return Policy.from_checkpoint(ckpt, device=device, check_observations=check_observations)


def export_policy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write a policy-only copy of checkpoint ``src`` (actor weights, config, spec) to ``dst``:
    what a robot computer needs, without optimiser state, and without critics unless the policy
    chooses its actions by them (IBRL: the frozen clone and the critics come along)."""
    ckpt = load(src)
    keep = ("actor", "encoder") + (("reference", "critic") if "reference" in ckpt["agent"] else ())
    ckpt["agent"] = {k: ckpt["agent"][k] for k in keep if k in ckpt["agent"]}  # encoder: pixels; IBRL acts with Q
    ckpt["extra"] = {**ckpt.get("extra", {}), "exported_from": os.fspath(src)}
    atomic_torch_save(ckpt, dst)
