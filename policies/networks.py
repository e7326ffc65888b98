"""Networks for state-based SAC: a tanh-squashed Gaussian actor and a vectorised critic ensemble.

The critic ensemble keeps the weights of all N members in one tensor per layer,
``(N, in, out)``, and evaluates every member with one batched matmul
(``torch.baddbmm``) instead of a Python loop over N small MLPs, so the per-op overhead is
paid once for all members. The arithmetic still grows with N: on this 2-core CPU a critic
update with N = 10 LayerNorm critics (RLPD, Ball et al. 2023; SERL) runs at about a third of
the rate of N = 2 (benchmarks/update_speed.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # CleanRL / SERL bounds, applied with a smooth tanh rescale


class EnsembleLinear(nn.Module):
    """N independent linear layers applied to an (N, B, in) input in one ``baddbmm``."""

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)  # same init as nn.Linear's defaults
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, detach: bool = False, members: Tensor | None = None) -> Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if members is not None:
            w, b = w[members], b[members]
        return torch.baddbmm(b, x, w)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over features with a separate scale and shift per ensemble member."""

    def __init__(self, n: int, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, features))
        self.bias = nn.Parameter(torch.zeros(n, 1, features))

    def forward(self, x: Tensor, detach: bool = False, members: Tensor | None = None) -> Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if members is not None:
            w, b = w[members], b[members]
        return torch.addcmul(b, F.layer_norm(x, x.shape[-1:]), w)


class ObsNorm(nn.Module):
    """s -> clip((s - shift) / scale, -clip, clip): a fixed standardisation of the state input.

    Identity until :meth:`set` is called (``rewardforge-train obs_norm=demos`` sets it from the
    demonstrations before cloning). Why: the state mixes metres, radians and velocities whose
    spreads differ by 10-100x, and a precise grasp needs centimetre differences between inputs
    whose spread is ~10 cm. Measured on 20 pick-and-place demos: cloning fits them 3x more closely
    (squared error 0.004 vs 0.014 after 5000 steps) and the clones succeed more often on fresh
    episodes (20000 steps, 3 seeds: median 0.70 vs 0.64; README, Measured). The buffers travel in the state
    dict, so a checkpoint, an exported policy and the weights an actor process receives all
    carry the same standardisation. ``clip`` bounds what a state far outside the data (a tipped
    block, a sensor glitch) can feed the first layer."""

    def __init__(self, dim: int, clip: float = 10.0) -> None:
        super().__init__()
        self.clip = float(clip)
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        # Cached "not the identity", so the default (obs_norm=none) costs nothing on the update's hot
        # path (~27 us per call on a 512 x 41 batch otherwise, several calls per update).
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    @torch.no_grad()
    def set(self, mean: Tensor, std: Tensor, min_std: float = 1e-2) -> None:
        """Standardise with ``mean`` and ``std`` (floored at ``min_std``: a constant input stays finite)."""
        self.shift.copy_(mean)
        self.scale.copy_(std.clamp_min(min_std))
        self._active = True

    def forward(self, obs: Tensor) -> Tensor:
        if not self._active:
            return obs
        return ((obs - self.shift) / self.scale).clamp(-self.clip, self.clip)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # Checkpoints written before the standardisation existed hold no buffers: load them as identity.
        state_dict.setdefault(prefix + "shift", torch.zeros_like(self.shift))
        state_dict.setdefault(prefix + "scale", torch.ones_like(self.scale))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._active = bool((self.shift != 0).any() or (self.scale != 1).any())


class EnsembleCritic(nn.Module):
    """Q_1..Q_N(s, a) as one module. ``forward`` returns shape (N, B) (or (len(members), B)).

    ``detach=True`` evaluates with the current weights but lets no gradient reach
    them: this is how the actor loss uses the critic without a second copy or
    ``requires_grad_`` toggling, so the actor and critic losses can share one backward.
    """

    def __init__(self, obs_dim: int, act_dim: int, n: int, hidden: tuple[int, ...], layer_norm: bool) -> None:
        super().__init__()
        self.n = n
        self.obs_norm = ObsNorm(obs_dim)
        sizes = (obs_dim + act_dim, *hidden)
        self.layers = nn.ModuleList(EnsembleLinear(n, i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True))
        self.norms = nn.ModuleList(EnsembleLayerNorm(n, o) for o in hidden) if layer_norm else None
        self.out = EnsembleLinear(n, sizes[-1], 1)

    def forward(self, obs: Tensor, act: Tensor, detach: bool = False, members: Tensor | None = None) -> Tensor:
        k = self.n if members is None else members.shape[0]
        x = torch.cat([self.obs_norm(obs), act], dim=-1).unsqueeze(0).expand(k, -1, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, detach, members)
            if self.norms is not None:
                x = self.norms[i](x, detach, members)
            x = F.relu(x)
        return self.out(x, detach, members).squeeze(-1)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, layer_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h)] + ([nn.LayerNorm(h)] if layer_norm else []) + [nn.ReLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(u), u ~ N(mu(s), sigma(s)^2); actions in (-1, 1)^A."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], layer_norm: bool = False) -> None:
        super().__init__()
        self.obs_norm = ObsNorm(obs_dim)
        self.net = mlp(obs_dim, hidden, 2 * act_dim, layer_norm)

    def _dist_params(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log_std) of the pre-tanh Gaussian; log_std squashed into [LOG_STD_MIN, LOG_STD_MAX]."""
        mean, log_std = self.net(self.obs_norm(obs)).float().chunk(2, dim=-1)  # fp32 even under bf16 autocast
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)
        return mean, log_std

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised sample and its log-density (SAC appendix C, change of variables)."""
        mean, log_std = self._dist_params(obs)
        eps = torch.randn_like(mean)
        u = mean + log_std.exp() * eps
        # log N(u; mean, std) - sum log(1 - tanh(u)^2), the latter written stably as
        # 2 (log 2 - u - softplus(-2u)).
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def log_prob(self, obs: Tensor, action: Tensor, eps: float = 1e-4) -> Tensor:
        """log pi(a|s) of given actions in (-1, 1): u = atanh(a), then the same change of
        variables as :meth:`sample` (actions at +-1 are pulled in by ``eps`` so atanh is finite)."""
        mean, log_std = self._dist_params(obs)
        a = action.clamp(-1.0 + eps, 1.0 - eps)
        u = torch.atanh(a)
        z = (u - mean) / log_std.exp()
        log_prob = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)

    def action_error(self, obs: Tensor, action: Tensor) -> Tensor:
        """Squared error of the deterministic action tanh(mean) to ``action``, summed over action
        entries, averaged over the batch: the behaviour-cloning loss (SAC.bc_update, bc_weight)."""
        return (torch.tanh(self._dist_params(obs)[0]) - action).pow(2).sum(-1).mean()

    def act(self, obs: Tensor, deterministic: bool) -> Tensor:
        if deterministic:
            return torch.tanh(self._dist_params(obs)[0])
        return self.sample(obs)[0]


class CloneEnsemble(nn.Module):
    """Several behaviour-cloned actors acting as one: the deterministic action is the mean of the
    members' tanh(mu(s)). Why: clones of the same 20 pick-and-place demos differ only in their
    initialisation and batch order, yet each fails on different episodes; their mean action scored
    0.54-0.78 where single clones scored 0.44-0.72 on the same 50 fresh episodes, on all four demo
    sets measured (README, "Probes of the clone, session 19"). IBRL's frozen proposal is one of
    these when ``bc_ensemble`` > 1. It only proposes deterministic actions, so ``act`` ignores
    ``deterministic``."""

    def __init__(self, members: Sequence[TanhGaussianActor]) -> None:
        super().__init__()
        if not members:
            raise ValueError("CloneEnsemble needs at least one member")
        self.members = nn.ModuleList(members)

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        return torch.stack([m.act(obs, True) for m in self.members]).mean(0)


def reference_from_state(state: Mapping[str, Tensor], obs_dim: int, act_dim: int, hidden: tuple[int, ...],
                         layer_norm: bool = False) -> TanhGaussianActor | CloneEnsemble:
    """IBRL's frozen proposal rebuilt from its state dict: one actor, or a CloneEnsemble (whose
    keys start ``members.<i>.``) with as many members as the state holds."""
    indices = {int(k.split(".")[1]) for k in state if k.startswith("members.")}
    make = lambda: TanhGaussianActor(obs_dim, act_dim, hidden, layer_norm)  # noqa: E731
    net: TanhGaussianActor | CloneEnsemble = CloneEnsemble([make() for _ in range(max(indices) + 1)]) if indices else make()
    net.load_state_dict(state)
    return net.requires_grad_(False).eval()


class ProposalSelector(nn.Module):
    """IBRL's actor proposal (Hu, Mirchandani & Sadigh 2023, "Imitation Bootstrapped Reinforcement
    Learning"): act with whichever of two proposals the critics value more,

        a = argmax_{a in {a_RL, a_IL}} Q(s, a),   a_RL ~ pi(.|s) (or tanh(mu(s))),  a_IL = mu_IL(s)

    where mu_IL is a frozen behaviour-cloned policy (or the mean of several, CloneEnsemble). Why: RL started from a good clone first makes
    it worse (pick-and-place, 15k env steps: clones at 0.76 and 0.70 fell to 0.58 and 0.44), because
    the actor follows the gradient of critics that are still wrong; with the clone kept as a second
    proposal, the agent acts as the clone wherever the critics do not value the RL action more,
    and the RL actor is free to explore. ``reduce`` is how the ensemble's values are combined
    ("min" or "mean", SAC's ``actor_q``); rows where both values tie take the RL proposal."""

    def __init__(self, actor: TanhGaussianActor, reference: TanhGaussianActor | CloneEnsemble, critic: EnsembleCritic,
                 reduce: str = "min") -> None:
        super().__init__()
        self.actor, self.reference, self.critic, self.reduce = actor, reference, critic, reduce

    def act(self, obs: Tensor, deterministic: bool) -> Tensor:
        a_rl, a_il = self.actor.act(obs, deterministic), self.reference.act(obs, True)
        return better_of(self.critic(obs, a_rl, detach=True), self.critic(obs, a_il, detach=True),
                         a_rl, a_il, self.reduce)[0]


def better_of(q_rl: Tensor, q_il: Tensor, a_rl: Tensor, a_il: Tensor, reduce: str = "min"
              ) -> tuple[Tensor, Tensor]:
    """(per-row action of the higher-valued proposal, mask of rows where the imitation one won).
    ``q_*``: ensemble values (N, B), combined by ``reduce`` ("min" or "mean")."""
    if reduce == "min":
        v_rl, v_il = q_rl.min(0).values, q_il.min(0).values
    else:
        v_rl, v_il = q_rl.mean(0), q_il.mean(0)
    il_wins = v_il > v_rl
    return torch.where(il_wins.unsqueeze(-1), a_il, a_rl), il_wins
