"""The deployable policy: one observation dict in, one action vector in [-1, 1]^A out.

This is what evaluation, the ROS policy node and benchmarks load
(:func:`policies.checkpoint.load_policy`); it carries the embodiment spec it was
trained for and reads observations through it (``common.spec.flatten_state``).
A pixel checkpoint (``agent.cameras`` set, policies/pixels.py) adds its image encoder:
the observation dict then also holds the ``image_<camera>`` uint8 arrays of its spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from common.spec import EmbodimentSpec, flatten_state
from policies.networks import (
    CloneEnsemble,
    EnsembleCritic,
    ProposalSelector,
    TanhGaussianActor,
    reference_from_state,
)
from policies.pixels import PixelEncoder, PixelObs, build_encoder, to_device


class Policy:
    def __init__(self, actor: TanhGaussianActor | CloneEnsemble | ProposalSelector, embodiment: EmbodimentSpec, device: str | torch.device = "cpu",
                 step: int = 0, config: Mapping[str, Any] | None = None, check_observations: bool = True,
                 encoder: PixelEncoder | None = None) -> None:
        self.actor = actor.to(device).eval()
        self.embodiment, self.device, self.step = embodiment, torch.device(device), step
        self.config = dict(config or {})
        self.check_observations = check_observations
        self.encoder = encoder.to(device).eval() if encoder is not None else None
        self.pixel_obs: PixelObs | None = None
        if encoder is not None:
            agent = self.config.get("agent", {})
            self.pixel_obs = PixelObs(embodiment, agent.get("cameras", ()), agent.get("state_fields"))

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any], device: str | torch.device = "cpu",
                        check_observations: bool = True) -> Policy:
        agent_cfg = ckpt["config"].get("agent", {})
        actor = _actor(ckpt)
        if "reference" in ckpt["agent"]:  # IBRL: the higher-valued of the actor's and the frozen clone's actions
            actor = _ibrl_actor(ckpt, actor)
        spec = EmbodimentSpec.from_dict(ckpt["embodiment"])
        encoder = None
        if agent_cfg.get("cameras"):  # a pixel policy: its encoder (frozen trunks included) is in the checkpoint
            reads = PixelObs(spec, agent_cfg["cameras"], agent_cfg.get("state_fields"))
            encoder = build_encoder(agent_cfg, reads.image_shapes, reads.state_dim, from_checkpoint=True)
            encoder.load_state_dict(ckpt["agent"]["encoder"])
        return cls(actor, spec, device, int(ckpt["step"]), ckpt["config"], check_observations, encoder)

    def _features(self, obs: Mapping[str, np.ndarray], batched: bool) -> torch.Tensor:
        if self.encoder is None:
            x = torch.from_numpy(flatten_state(self.embodiment, obs)).to(self.device)
            return x if batched else x.unsqueeze(0)
        x = self.pixel_obs(obs)
        return self.encoder(to_device(x if batched else {k: v[None] for k, v in x.items()}, self.device))

    @torch.inference_mode()
    def __call__(self, obs: Mapping[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """Action (float32, shape (A,), in [-1, 1]) for one observation dict following the spec."""
        if self.check_observations:
            self.embodiment.check_observation(obs)
        return self.actor.act(self._features(obs, batched=False), deterministic)[0].cpu().numpy()

    @torch.inference_mode()
    def act_batch(self, obs: Mapping[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """Actions (B, A) for a batch of observations (each value with a leading batch axis)."""
        return self.actor.act(self._features(obs, batched=True), deterministic).cpu().numpy()


def _actor(ckpt: Mapping[str, Any]) -> TanhGaussianActor:
    """The checkpoint's actor network (``ckpt["agent"]["actor"]``)."""
    a = ckpt["config"].get("agent", {})
    net = TanhGaussianActor(ckpt["obs_dim"], ckpt["act_dim"], tuple(a.get("hidden", (256, 256))),
                            bool(a.get("actor_layer_norm", False)))
    net.load_state_dict(ckpt["agent"]["actor"])
    return net


def _ibrl_actor(ckpt: Mapping[str, Any], actor: TanhGaussianActor) -> ProposalSelector:
    """The acting rule of an IBRL checkpoint (agent.ibrl=true): the actor, the frozen clone and the critics."""
    a = ckpt["config"].get("agent", {})
    hidden = tuple(a.get("hidden", (256, 256)))
    critic = EnsembleCritic(ckpt["obs_dim"], ckpt["act_dim"], int(a.get("critic_ensemble", 2)), hidden,
                            bool(a.get("critic_layer_norm", False)))
    critic.load_state_dict(ckpt["agent"]["critic"])
    reference = reference_from_state(ckpt["agent"]["reference"], ckpt["obs_dim"], ckpt["act_dim"], hidden,
                                     bool(a.get("actor_layer_norm", False)))  # one clone, or bc_ensemble of them
    return ProposalSelector(actor, reference, critic, str(a.get("actor_q", "min")))
