"""The deployable policy: one observation dict in, one action vector in [-1, 1]^A out.

This is what evaluation, the ROS policy node and benchmarks load
(:func:`policies.checkpoint.load_policy`); it carries the embodiment spec it was
trained for and reads observations through it (``common.spec.flatten_state``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from common.spec import EmbodimentSpec, flatten_state
from policies.networks import TanhGaussianActor


class Policy:
    def __init__(self, actor: TanhGaussianActor, embodiment: EmbodimentSpec, device: str | torch.device = "cpu",
                 step: int = 0, config: Mapping[str, Any] | None = None, check_observations: bool = True) -> None:
        self.actor = actor.to(device).eval()
        self.embodiment, self.device, self.step = embodiment, torch.device(device), step
        self.config = dict(config or {})
        self.check_observations = check_observations

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any], device: str | torch.device = "cpu",
                        check_observations: bool = True) -> Policy:
        agent_cfg = ckpt["config"].get("agent", {})
        actor = TanhGaussianActor(ckpt["obs_dim"], ckpt["act_dim"], tuple(agent_cfg.get("hidden", (256, 256))),
                                  bool(agent_cfg.get("actor_layer_norm", False)))
        actor.load_state_dict(ckpt["agent"]["actor"])
        return cls(actor, EmbodimentSpec.from_dict(ckpt["embodiment"]), device, int(ckpt["step"]), ckpt["config"],
                   check_observations)

    @torch.inference_mode()
    def __call__(self, obs: Mapping[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """Action (float32, shape (A,), in [-1, 1]) for one observation dict following the spec."""
        if self.check_observations:
            self.embodiment.check_observation(obs)
        x = torch.from_numpy(flatten_state(self.embodiment, obs)).to(self.device).unsqueeze(0)
        return self.actor.act(x, deterministic)[0].cpu().numpy()

    @torch.inference_mode()
    def act_batch(self, obs: Mapping[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """Actions (B, A) for a batch of observations (each value with a leading batch axis)."""
        x = torch.from_numpy(flatten_state(self.embodiment, obs)).to(self.device)
        return self.actor.act(x, deterministic).cpu().numpy()
