"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications").

Options from the sample-efficient SAC line of work:
* critic ensemble of N with a random subset of M for the target minimum
  (REDQ, Chen et al. 2021; RLPD, Ball et al. 2023; SERL uses N=10, M=2),
* LayerNorm in the critic (RLPD),
* update-to-data ratio: ``utd`` critic updates per env step, the actor once
  after the last of them (RLPD),
* n-step returns (the replay buffer supplies R^(n) and gamma^m (1 - terminated)),
* a frozen imitation policy as a second proposal for acting and for the TD target
  (IBRL, Hu et al. 2023; ``ibrl=true``, :meth:`SAC.set_reference`).

Everything in :meth:`SAC.update` stays on the device as tensors: no ``.item()``
per step; metrics are returned as tensors and read out only when logged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from policies import fused
from policies.networks import (
    CloneEnsemble,
    EnsembleCritic,
    ProposalSelector,
    TanhGaussianActor,
    reference_from_state,
)


class SAC:
    def __init__(self, obs_dim: int, act_dim: int, cfg: Any, device: torch.device | str = "cpu") -> None:
        if isinstance(cfg, DictConfig):  # plain attributes: DictConfig lookups cost ~40 us each, per update
            cfg = SimpleNamespace(**OmegaConf.to_container(cfg, resolve=True))
        self.cfg, self.device = cfg, torch.device(device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        hidden = tuple(int(h) for h in cfg.hidden)
        self.actor = TanhGaussianActor(obs_dim, act_dim, hidden, cfg.actor_layer_norm).to(self.device)
        self.critic = EnsembleCritic(obs_dim, act_dim, cfg.critic_ensemble, hidden, cfg.critic_layer_norm).to(self.device)
        self.critic_target = EnsembleCritic(obs_dim, act_dim, cfg.critic_ensemble, hidden, cfg.critic_layer_norm).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(float(cfg.init_alpha), device=self.device).log().requires_grad_(cfg.autotune_alpha)
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)
        # One Adam over three parameter groups: parameters without a gradient this step
        # (the actor on critic-only updates) are skipped by Adam, so one optimiser step
        # serves critic-only and full updates alike, as one fused multi-tensor kernel.
        groups = [
            {"params": list(self.critic.parameters()), "lr": cfg.critic_lr or cfg.lr},
            {"params": list(self.actor.parameters()), "lr": cfg.actor_lr or cfg.lr},
        ]
        if cfg.autotune_alpha:
            groups.append({"params": [self.log_alpha], "lr": cfg.alpha_lr or cfg.lr})
        groups += self._extra_param_groups()
        self.optimizer = torch.optim.Adam(groups, fused=self.device.type in ("cpu", "cuda"))
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self._num_updates = 0
        self._all_members = cfg.target_subset >= cfg.critic_ensemble
        precision = cfg.precision
        if precision == "auto":  # bf16 where it is native (AVX512-BF16/AMX CPUs, CUDA with bf16)
            from common.hardware import auto_precision

            precision = auto_precision(self.device.type)
        self.precision = precision
        self._bf16 = precision == "bf16"
        self._manual = getattr(cfg, "backward", "autograd") == "manual" and fused.supported(cfg)
        self.reference: TanhGaussianActor | CloneEnsemble | None = None  # IBRL's frozen imitation policy (set_reference)
        self._selector: ProposalSelector | None = None

    def _extra_param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups a subclass adds (an image encoder trained through the critic loss, as in
        DrQ). Called once from ``__init__``, after the actor and critics exist."""
        return []

    def set_obs_norm(self, mean: Tensor, std: Tensor) -> None:
        """Standardise the state input of the actor and every critic alike (networks.ObsNorm)."""
        for net in (self.actor, self.critic, self.critic_target):
            net.obs_norm.set(mean.to(self.device), std.to(self.device))

    def set_reference(self, others: Sequence[TanhGaussianActor] = ()) -> None:
        """Freeze a copy of the actor as it is now (after behaviour cloning) as IBRL's imitation
        policy: from here on the agent acts, and bootstraps its TD target, with whichever of the
        actor's and this copy's actions the critics value more (networks.ProposalSelector).
        ``others``: further clones of the same demos (``bc_ensemble``); the imitation policy is
        then the mean action of the copy and them (networks.CloneEnsemble)."""
        clone = copy.deepcopy(self.actor)
        reference = CloneEnsemble([clone, *(copy.deepcopy(o) for o in others)]) if others else clone
        self._use_reference(reference.to(self.device).requires_grad_(False).eval())

    def _use_reference(self, reference: TanhGaussianActor | CloneEnsemble) -> None:
        self.reference = reference
        self._selector = ProposalSelector(self.actor, reference, self.critic, self.cfg.actor_q)

    def new_clone(self) -> tuple[TanhGaussianActor, torch.optim.Optimizer]:
        """A fresh actor of this agent's shape and state normalisation, with its own Adam at the
        actor's learning rate: one more member for ``set_reference(others)``, trained by
        :func:`bc_loss` (the agent's own actor and optimiser are not touched)."""
        cfg = self.cfg
        net = TanhGaussianActor(self.obs_dim, self.act_dim, tuple(int(h) for h in cfg.hidden), cfg.actor_layer_norm)
        net = net.to(self.device)
        net.obs_norm.load_state_dict(self.actor.obs_norm.state_dict())
        return net, torch.optim.Adam(net.parameters(), lr=cfg.actor_lr or cfg.lr)

    # ---- acting -----------------------------------------------------------
    @torch.inference_mode()
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        return (self._selector or self.actor).act(obs, deterministic)

    # ---- learning ---------------------------------------------------------
    def _target_members(self) -> Tensor | None:
        if self._all_members:
            return None
        return torch.randperm(self.cfg.critic_ensemble, device=self.device)[: self.cfg.target_subset]

    def _reduce(self, q: Tensor) -> Tensor:
        return q.min(0).values if self.cfg.actor_q == "min" else q.mean(0)

    def update(self, obs: Tensor, act: Tensor, rew: Tensor, next_obs: Tensor, discount: Tensor,
               update_actor: bool = True, demo_rows: int = 0) -> dict[str, Tensor]:
        """One gradient step. ``discount`` = gamma^m (1 - terminated) from the n-step sampler.
        ``demo_rows``: how many of the batch's last rows are demonstrations (or a person's
        corrections); with ``bc_weight > 0`` the actor also imitates them (below).

        Critic (soft Bellman residual, Haarnoja et al. 2018 eq. 5-6, n-step, subset min):
            y = R + discount * (min_{j in M} Qbar_j(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
            L_Q = sum_i 1/2 E[(Q_i(s, a) - y)^2]
        Actor (eq. 7-10, reparameterised):  L_pi = E[alpha log pi(a~|s) - Q(s, a~)],  a~ ~ pi(.|s)
        Temperature (eq. 17-18):           L_alpha = E[-log alpha (log pi(a~|s) + H_target)]
        With a reference (IBRL): min_j Qbar_j(s', a') above becomes the larger of it and
        min_j Qbar_j(s', mu_IL(s')), the frozen clone's action valued by the same members.
        With bc_weight = w > 0 (TD3+BC-style, Fujimoto & Gu 2021, the BC term scaled by the Q
        magnitude so w is free of the reward's scale):
            L_pi += w E_batch[|Q|] E_demo[||tanh(mu(s)) - a_demo||^2]
        (``bc_scale=fixed``: without the E_batch[|Q|] factor. Why offered: here |Q| is ~0 when RL
        starts from fresh critics, exactly when the cloned policy most needs holding, and it shrinks
        again as the temperature's entropy bonus leaves the soft values.)
        With ``bc_target=proposal`` (IBRL only) the term is E_batch[||tanh(mu(s)) - mu_IL(s)||^2]
        instead: the actor imitates the frozen proposal on every state of the batch, online ones
        included. Why: with a 5-clone proposal (0.76 on 50 fresh pick-and-place episodes) and an
        actor started from one clone (0.62 after RL), choosing by Q landed between the two (0.68):
        the critics cannot yet tell the better action apart, so the actor should be as good as the
        proposal where the demos do not reach, and Q can then pick improvements over it.
        """
        on_proposal = getattr(self.cfg, "bc_target", "demos") == "proposal" and self.reference is not None
        imitate = bool(self.cfg.bc_weight and (demo_rows or on_proposal) and update_actor)  # a term fused.py does not cover
        manual = self._manual and not obs.requires_grad and not imitate and self.reference is None  # nor IBRL's target
        if manual:  # same losses, hand-written gradients (policies/fused.py)
            return fused.update(self, obs, act, rew, next_obs, discount, update_actor)
        alpha = self.log_alpha.detach().exp()
        metrics = {}
        with torch.no_grad(), self._autocast():
            next_act, next_logp = self.actor.sample(next_obs)
            members = self._target_members()
            q_next = self.critic_target(next_obs, next_act, members=members).min(0).values
            if self.reference is not None:  # IBRL: bootstrap from the better of the two proposals
                q_il = self.critic_target(next_obs, self.reference.act(next_obs, True), members=members).min(0).values
                metrics["il_share"] = (q_il > q_next).float().mean()
                q_next = torch.maximum(q_next, q_il)
            # (the entropy bonus stays the RL policy's whichever proposal wins, so the choice is by Q alone)
            y = rew + discount * (q_next.float() - alpha * next_logp)
        with self._autocast():
            q = self.critic(obs, act).float()  # (N, B)
        critic_loss = 0.5 * (q - y).pow(2).mean(1).sum()
        metrics.update(critic_loss=critic_loss.detach(), q_mean=q.detach().mean())

        if not self.cfg.fused_update:  # textbook order: critic step, then actor with the new critic
            self._step(critic_loss)
            critic_loss = torch.zeros((), device=self.device)
        if update_actor:
            obs = obs.detach()  # encoder features (DrQ): the critic loss trains the encoder, the actor's does not
            with self._autocast():
                pi_act, logp = self.actor.sample(obs)
                # detach=True: the actor's gradient flows through Q into a~ but not into Q's weights,
                # so critic and actor losses can share one backward pass.
                q_pi = self._reduce(self.critic(obs, pi_act, detach=True).float())
            actor_loss = (alpha * logp - q_pi).mean()
            if imitate:
                with self._autocast():
                    if on_proposal:  # bc_target=proposal: the frozen proposal's action on every state of the batch
                        with torch.no_grad():
                            target = self.reference.act(obs, True)
                        bc = self.actor.action_error(obs, target)
                    else:
                        bc = self.actor.action_error(obs[-demo_rows:], act[-demo_rows:])
                scale = q_pi.detach().abs().mean() if self.cfg.bc_scale == "q" else 1.0
                actor_loss = actor_loss + self.cfg.bc_weight * scale * bc
                metrics["bc_loss"] = bc.detach()
            loss = critic_loss + actor_loss
            if self.cfg.autotune_alpha:
                loss = loss + (-self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self._step(loss)
            metrics.update(actor_loss=actor_loss.detach(), alpha=alpha, entropy=-logp.detach().mean())
        elif self.cfg.fused_update:
            self._step(critic_loss)

        self._after_step()
        return metrics

    def _after_step(self) -> None:
        """Count the update; Polyak-average the target critics every ``target_update_every`` updates."""
        self._num_updates += 1
        if self._num_updates % self.cfg.target_update_every == 0:  # theta' <- (1-tau) theta' + tau theta
            torch._foreach_lerp_(self._target_params, self._critic_params, self.cfg.tau)

    def bc_update(self, obs: Tensor, act: Tensor, loss: str = "mse", eps: float = 0.05) -> Tensor:
        """One behaviour-cloning step on the actor; the critics are untouched.

        ``mse`` (default) fits the deterministic action ``tanh(mean)`` (what evaluation runs) to the
        demonstrated one by squared error; the spread is left to RL. ``nll`` is plain maximum
        likelihood, -log pi(a_demo | s), with saturated actions pulled in to +-(1 - eps) so atanh
        is finite. Why mse is the default, measured on 20 scripted pick-and-place demonstrations,
        5000 steps: the likelihood spends its capacity shrinking the spread on the many
        near-constant "hold" frames and leaves the mean poor (gripper RMSE 0.66, 0/20 successes
        from the deterministic policy); squared error fits it (gripper RMSE 0.09, 11/20). Fitting
        the spread by likelihood alongside (mean held fixed) pulled the shared trunk off the mean
        again (0/20), so it is not done."""
        with self._autocast():
            value = bc_loss(self.actor, obs, act, loss, eps)
        self._step(value)
        return value.detach()

    def _autocast(self) -> torch.autocast:
        """bf16 matmuls (fp32 weights, optimiser, log-probs, Q outputs and losses) when precision=bf16."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._bf16)

    def _step(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    # ---- state ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "num_updates": self._num_updates,
            **({"reference": self.reference.state_dict()} if self.reference is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any], load_optimizer: bool = True) -> None:
        self.actor.load_state_dict(state["actor"])
        if "reference" in state:  # one clone or several (its keys say which)
            hidden = tuple(int(h) for h in self.cfg.hidden)
            ref = reference_from_state(state["reference"], self.obs_dim, self.act_dim, hidden, self.cfg.actor_layer_norm)
            self._use_reference(ref.to(self.device))
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"].to(self.device))
        if load_optimizer:
            self.optimizer.load_state_dict(state["optimizer"])
        self._num_updates = int(state.get("num_updates", 0))


def bc_loss(actor: TanhGaussianActor, obs: Tensor, act: Tensor, loss: str = "mse", eps: float = 0.05) -> Tensor:
    """The behaviour-cloning loss of ``actor`` on demonstrated ``(obs, act)`` (SAC.bc_update says
    what ``mse`` and ``nll`` are and why mse is the default)."""
    if loss == "mse":
        return actor.action_error(obs, act)
    if loss == "nll":
        return -actor.log_prob(obs, act, eps).mean()
    raise ValueError(f"bc loss {loss!r}: expected 'mse' or 'nll'")
