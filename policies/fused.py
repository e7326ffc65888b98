"""SAC's update with hand-written gradients: the same losses as :meth:`policies.sac.SAC.update`,
without autograd.

Why this exists: at the sizes SAC uses (batch 256, two 256-unit layers) a CPU update is
dominated by per-operation overhead, not arithmetic: measured on this 2-core machine, about
40% of an autograd update is matrix multiplication and the rest is graph bookkeeping,
autocast re-casts and small elementwise kernels. Writing the backward pass out for this one
network shape removes the graph, casts every weight once per update, shares the first-layer
product of the observations between the two critic passes that read them, and runs the actor
forward for s and s' as one batch.

What it covers: ReLU MLPs of any depth, critics with or without LayerNorm after each hidden
layer (RLPD's critics; the actor without), any ensemble size and target subset,
``actor_q`` min or mean, automatic temperature, fp32 or bf16 matrix products (bf16 products with
fp32 accumulation into fp32 gradients, as autocast does). :func:`supported` says whether a
config qualifies; :class:`policies.sac.SAC` falls back to autograd otherwise. The gradients are
tested against autograd's (``tests/test_sac_fused.py``), so the two implementations cannot drift.

Notation: for a layer z = x W + b (W of shape (in, out), per ensemble member), the backward of
a loss with upstream gradient dz is dW = x^T dz, db = sum_rows dz, dx = dz W^T; ReLU passes dz
where z > 0. A LayerNorm y = g * xhat + beta, xhat = (z - mean(z)) * rstd, rstd = 1/sqrt(var(z) + eps)
over the features of each row, passes dz = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
with dxhat = g * dy, and collects dg = sum_rows dy * xhat, dbeta = sum_rows dy. LayerNorm
statistics are computed in fp32 also when the products are bf16 (autocast does the same).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from policies.networks import LOG_STD_MAX, LOG_STD_MIN

if TYPE_CHECKING:
    from policies.sac import SAC

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_STD_SCALE = 0.5 * (LOG_STD_MAX - LOG_STD_MIN)
_LN_EPS = 1e-5  # torch.nn.functional.layer_norm's default, which the autograd critic uses


def supported(cfg: Any) -> bool:
    """True when :func:`update` computes exactly what the autograd update does for ``cfg``."""
    return bool(cfg.fused_update) and not cfg.actor_layer_norm


class _Weights:
    """The current parameters cast once to the product dtype (fp32: the parameters themselves)."""

    def __init__(self, agent: SAC, dtype: torch.dtype) -> None:
        lin = [m for m in agent.actor.net if isinstance(m, torch.nn.Linear)]
        # nn.Linear keeps W as (out, in); products below use x @ W^T for the actor.
        self.actor = [(m.weight.detach().to(dtype), m.bias.detach().to(dtype)) for m in lin]
        layers = [*agent.critic.layers, agent.critic.out]
        self.critic = [(m.weight.detach().to(dtype), m.bias.detach().to(dtype)) for m in layers]
        tl = [*agent.critic_target.layers, agent.critic_target.out]
        self.target = [(m.weight.detach().to(dtype), m.bias.detach().to(dtype)) for m in tl]
        # LayerNorm scale and shift per hidden layer (fp32, (N, 1, H)); None: critics without LayerNorm
        self.critic_norms = _norms(agent.critic)
        self.target_norms = _norms(agent.critic_target)


Norms = list[tuple[Tensor, Tensor]] | None
# What the backward pass needs of one hidden layer: its output h = relu(.), and for a LayerNorm
# layer xhat and rstd (None without LayerNorm).
Hidden = tuple[Tensor, Tensor | None, Tensor | None]


def _norms(critic: torch.nn.Module) -> Norms:
    if critic.norms is None:
        return None
    return [(m.weight.detach(), m.bias.detach()) for m in critic.norms]


def _pick(norms: Norms, members: Tensor | None) -> Norms:
    if norms is None or members is None:
        return norms
    return [(g[members], b[members]) for g, b in norms]


def _relu_grad(grad: Tensor, out: Tensor) -> Tensor:
    """Gradient through out = relu(z): grad where out > 0 (z > 0 iff relu(z) > 0), in one kernel."""
    return torch.ops.aten.threshold_backward(grad, out, 0.0)


def _actor_forward(weights: list[tuple[Tensor, Tensor]], x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Output (rows, 2A) in fp32 and the inputs of every layer (for the backward pass)."""
    inputs = []
    for i, (w, b) in enumerate(weights):
        inputs.append(x)
        x = torch.addmm(b, x, w.t())
        if i < len(weights) - 1:
            x = x.relu_()
    return x.float(), inputs


def _actor_backward(weights: list[tuple[Tensor, Tensor]], inputs: list[Tensor], dout: Tensor,
                    grads: list[Tensor]) -> None:
    """Accumulate dW, db of the actor into ``grads`` ([W0, b0, W1, b1, ...], fp32, (out, in) layout)."""
    dz = dout.to(inputs[0].dtype)
    for i in range(len(weights) - 1, -1, -1):
        x = inputs[i]
        grads[2 * i].copy_(torch.mm(dz.t(), x))
        grads[2 * i + 1].copy_(dz.sum(0, dtype=torch.float32))
        if i > 0:
            dz = _relu_grad(torch.mm(dz, weights[i][0]), x)


def _hidden(z: Tensor, norm: tuple[Tensor, Tensor] | None) -> Hidden:
    """One hidden layer's activation from its pre-activation z: relu(z), or relu(LayerNorm(z))."""
    if norm is None:
        return z.relu_(), None, None
    zf = z.float()
    zc = zf - zf.mean(-1, keepdim=True)
    rstd = torch.rsqrt(zc.pow(2).mean(-1, keepdim=True).add_(_LN_EPS))
    xhat = zc.mul_(rstd)
    h = torch.addcmul(norm[1], xhat, norm[0]).relu_().to(z.dtype)
    return h, xhat, rstd


def _into_hidden(dh: Tensor, layer: Hidden, norm: tuple[Tensor, Tensor] | None,
                 grads: dict[str, Tensor] | None = None, key: str = "") -> Tensor:
    """Gradient at a hidden layer's pre-activation from the gradient at its output; with LayerNorm
    also its scale and shift gradients into ``grads`` (``g<key>``, ``beta<key>``) when given."""
    h, xhat, rstd = layer
    dy = _relu_grad(dh, h)
    if norm is None:
        return dy
    dy = dy.float()
    if grads is not None:
        grads[f"g{key}"] = (dy * xhat).sum(1, keepdim=True)
        grads[f"beta{key}"] = dy.sum(1, keepdim=True)
    dxhat = dy.mul_(norm[0])
    dz = dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True)
    return dz.mul_(rstd).to(dh.dtype)


def _critic_forward(weights: list[tuple[Tensor, Tensor]], norms: Norms, first: Tensor,
                    keep: bool) -> tuple[Tensor, list[Hidden]]:
    """Q of every member, (k, B) fp32, from the first layer's pre-activation ``first`` (k, B, H),
    and (``keep``) what the backward pass needs of every hidden layer."""
    layers: list[Hidden] = []
    x = first
    for i in range(len(weights) - 1):
        if i > 0:
            x = torch.baddbmm(weights[i][1], x, weights[i][0])
        layer = _hidden(x, None if norms is None else norms[i])
        x = layer[0]
        if keep:
            layers.append(layer)
    w, b = weights[-1]
    return torch.baddbmm(b, x, w).squeeze(-1).float(), layers


def update(agent: SAC, obs: Tensor, act: Tensor, rew: Tensor, next_obs: Tensor, discount: Tensor,
           update_actor: bool = True) -> dict[str, Tensor]:
    """One SAC gradient step; same losses, metrics and optimiser step as ``SAC.update``
    (critic: soft Bellman residual with the target subset minimum; actor: alpha log pi - Q;
    temperature: -log alpha (log pi + H_target); one Adam step; Polyak target update)."""
    cfg = agent.cfg
    dtype = torch.bfloat16 if agent._bf16 else torch.float32
    W = _Weights(agent, dtype)
    B, D, N = obs.shape[0], obs.shape[1], agent.critic.n
    alpha = agent.log_alpha.detach().exp()
    # The state standardisation (networks.ObsNorm, the same in actor and critics) has no weights:
    # apply it once here and run the hand-written layers on the standardised state.
    obs, next_obs = agent.actor.obs_norm(obs), agent.actor.obs_norm(next_obs)

    # ---- actor forward: s (for the actor loss) and s' (for the target) in one batch ----------
    x_in = torch.cat([obs, next_obs], 0) if update_actor else next_obs
    out, a_inputs = _actor_forward(W.actor, x_in.to(dtype))
    mean, raw = out.chunk(2, dim=-1)
    t_raw = torch.tanh(raw)
    log_std = LOG_STD_MIN + _STD_SCALE * (t_raw + 1.0)
    std = log_std.exp()
    eps = torch.randn_like(mean)
    u = mean + std * eps
    a = torch.tanh(u)
    # log pi(a|s) = sum[-eps^2/2 - log std - log(2 pi)/2] - sum log(1 - tanh(u)^2)
    log_det = 2.0 * (math.log(2.0) - u - torch.nn.functional.softplus(-2.0 * u))
    logp = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1) - log_det.sum(-1)
    nxt = slice(B, 2 * B) if update_actor else slice(0, B)
    next_act, next_logp = a[nxt], logp[nxt]

    # ---- target: y = R + discount (min_j Qbar_j(s', a') - alpha log pi(a'|s')) ----------------
    members = agent._target_members()
    tw = W.target if members is None else [(w[members], b[members]) for w, b in W.target]
    tn = _pick(W.target_norms, members)
    w1, b1 = tw[0]
    first_t = torch.baddbmm(b1, torch.cat([next_obs, next_act], -1).to(dtype).unsqueeze(0).expand(w1.shape[0], -1, -1), w1)
    q_next, _ = _critic_forward(tw, tn, first_t, keep=False)
    y = rew + discount * (q_next.min(0).values - alpha * next_logp)

    # ---- critic on (s, a) and, for the actor, on (s, pi(s)): the obs part of layer 1 is shared ----
    cw1, cb1 = W.critic[0]
    obs_c = obs.to(dtype).unsqueeze(0).expand(N, -1, -1)
    obs_part = torch.bmm(obs_c, cw1[:, :D])  # (N, B, H)
    act_c = act.to(dtype).unsqueeze(0).expand(N, -1, -1)
    first_q = torch.baddbmm(obs_part, act_c, cw1[:, D:]).add_(cb1)
    cn = W.critic_norms
    q, hidden_q = _critic_forward(W.critic, cn, first_q, keep=True)
    critic_loss = 0.5 * (q - y).pow(2).mean(1).sum()
    metrics = {"critic_loss": critic_loss, "q_mean": q.mean()}

    grads: dict[str, Tensor] = {}
    # critic backward: dL/dq_i = (q_i - y) / B
    dz = ((q - y) / B).to(dtype).unsqueeze(-1)  # (N, B, 1)
    crit_layers = [*agent.critic.layers, agent.critic.out]
    for i in range(len(crit_layers) - 1, -1, -1):
        w = W.critic[i][0]
        if i > 0:  # layer i reads hidden layer i-1's output; layer 0 reads [obs, act], below
            grads[f"cW{i}"] = torch.bmm(hidden_q[i - 1][0].transpose(1, 2), dz)
        else:
            x0 = torch.cat([obs_c, act_c], -1)
            grads["cW0"] = torch.bmm(x0.transpose(1, 2), dz)
        grads[f"cb{i}"] = dz.sum(1, keepdim=True, dtype=torch.float32)
        if i > 0:
            dz = _into_hidden(torch.bmm(dz, w.transpose(1, 2)), hidden_q[i - 1], None if cn is None else cn[i - 1], grads, str(i - 1))

    if update_actor:
        pi_act, pi_logp = a[:B], logp[:B]
        pi_c = pi_act.to(dtype).unsqueeze(0).expand(N, -1, -1)
        first_p = torch.baddbmm(obs_part, pi_c, cw1[:, D:]).add_(cb1)
        q_pi_all, hidden_p = _critic_forward(W.critic, cn, first_p, keep=True)
        if cfg.actor_q == "min":
            q_pi = q_pi_all.min(0)
            dq = torch.zeros_like(q_pi_all).scatter_(0, q_pi.indices.unsqueeze(0), -1.0 / B)
            q_pi = q_pi.values
        else:
            q_pi = q_pi_all.mean(0)
            dq = torch.full_like(q_pi_all, -1.0 / (B * N))
        actor_loss = (alpha * pi_logp - q_pi).mean()
        # dL/d pi_act through the (fixed) critic: input gradient only
        dz = dq.to(dtype).unsqueeze(-1)
        for i in range(len(crit_layers) - 1, 0, -1):
            dz = _into_hidden(torch.bmm(dz, W.critic[i][0].transpose(1, 2)), hidden_p[i - 1], None if cn is None else cn[i - 1])
        g_a = torch.bmm(dz, cw1[:, D:].transpose(1, 2)).float().sum(0)  # (B, A)
        # back through a = tanh(u), u = mean + std eps, and log pi's own dependence on u and log std
        g_logp = alpha / B
        a_pi, eps_pi, std_pi, t_pi = a[:B], eps[:B], std[:B], t_raw[:B]
        du = g_a * (1.0 - a_pi.pow(2)) + g_logp * 2.0 * a_pi  # d(-sum log(1 - tanh^2 u))/du = 2 tanh u
        dlog_std = du * eps_pi * std_pi - g_logp
        draw = dlog_std * _STD_SCALE * (1.0 - t_pi.pow(2))
        dout = torch.cat([du, draw], -1)
        actor_grads = [torch.empty_like(p) for p in agent.actor.parameters()]
        _actor_backward(W.actor, [x[:B] for x in a_inputs], dout, actor_grads)
        for p, g in zip(agent.actor.parameters(), actor_grads, strict=True):
            p.grad = g
        if cfg.autotune_alpha:
            agent.log_alpha.grad = -(pi_logp.detach() + agent.target_entropy).mean()
        metrics.update(actor_loss=actor_loss, alpha=alpha, entropy=-pi_logp.mean())
    else:
        for p in agent.actor.parameters():
            p.grad = None
        agent.log_alpha.grad = None

    for i, m in enumerate(crit_layers):
        m.weight.grad = grads[f"cW{i}"].float()
        m.bias.grad = grads[f"cb{i}"]
    for i, m in enumerate(agent.critic.norms or ()):
        m.weight.grad, m.bias.grad = grads[f"g{i}"], grads[f"beta{i}"]
    agent.optimizer.step()
    agent._after_step()
    return metrics
