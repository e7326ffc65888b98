"""Checks that execute (the critic) and cheap candidate scoring, on logged rollouts.

A program that passed the static whitelist runs in the sandbox on transitions logged
from the scripted expert, the noisy expert and random actions (``rewards.evaluate``
rollouts: the same shared buffer for every candidate). It must give

* finite rewards everywhere (no NaN/inf),
* a sane scale: ``max |r| <= max_abs``,
* variation: ``std(r) >= min_std`` (a constant reward teaches nothing),
* positive Spearman rank correlation ``rho(r_t, progress_t) >= min_spearman`` with the
  simulator's ground-truth progress (does more reward mean closer to done?),
* and, when both are logged, a higher mean episode return for the expert than for random.

Each failure is a sentence that goes back to the model. The statistics (per component:
mean, std, min, max, correlation with progress; return per policy type; success rates)
are the reward reflection Eureka feeds back, computed here without training.

**Cheap scoring** (:func:`score_candidate`): relabel the shared buffer with the candidate
and combine how well its ranking agrees with ground truth: step-level Spearman with
progress, episode-level Spearman of return with success, and the expert-vs-random return
gap in units of the reward's std. No environment step and no gradient step is spent per
candidate; the compute per candidate is the sandbox time over the shared buffer, reported
next to the cost of a full RL run (``cost`` in the result).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rewards.base import Transitions
from rewards.code.sandbox import Sandbox, SandboxError
from rewards.code.view import TaskView, view_arrays
from rewards.evaluate import Episode, spearman


@dataclass
class CheckSettings:
    """Thresholds of the execution checks (config ``checks.*`` of the generator)."""

    max_abs: float = 100.0
    min_std: float = 1e-4
    min_spearman: float = 0.1
    require_expert_above_random: bool = True


@dataclass
class CheckReport:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    score: float | None = None
    seconds: float = 0.0  # sandbox wall time spent scoring the shared buffer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stats(x: np.ndarray, progress: np.ndarray) -> dict[str, float]:
    f = x[np.isfinite(x)]
    if not len(f):
        return {"finite_fraction": 0.0}
    return {"mean": float(f.mean()), "std": float(f.std()), "min": float(f.min()), "max": float(f.max()),
            "finite_fraction": float(len(f) / len(x)), "spearman_progress": float(spearman(x, progress))}


def run_checks(sandbox: Sandbox, episodes: Sequence[Episode], view: TaskView | None,
               settings: CheckSettings | None = None) -> CheckReport:
    """Score the episodes (one sandbox call for all of them) and apply the checks; the
    sandbox must already hold the program (``sandbox.load``). Never raises for program faults."""
    settings = settings or CheckSettings()
    batch = Transitions.concat([e.batch for e in episodes])
    t0 = time.perf_counter()
    try:
        reward, comps = sandbox(view_arrays(view, batch.obs), batch.action, view_arrays(view, batch.next_obs))
    except SandboxError as e:
        return CheckReport(False, [f"running the program failed ({e.kind}): {e}"], seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    reward = np.asarray(reward, np.float64)
    progress = np.asarray(batch.progress, np.float64)
    reasons: list[str] = []
    stats: dict[str, Any] = {"reward": _stats(reward, progress), "transitions": len(batch),
                             "components": {k: _stats(np.asarray(v, np.float64), progress) for k, v in comps.items()}}
    n_bad = int(np.sum(~np.isfinite(reward)))
    if n_bad:
        where = ", ".join(k for k, v in comps.items() if not np.all(np.isfinite(v)))
        reasons.append(f"{n_bad} of {len(reward)} rewards are NaN or infinite"
                       + (f" (from the terms {where})" if where else "")
                       + "; guard divisions and logs (e.g. np.maximum(d, 1e-6))")
    else:
        m = float(np.max(np.abs(reward)))
        if m > settings.max_abs:
            reasons.append(f"rewards reach |r| = {m:.3g}, above the allowed scale {settings.max_abs:g}; "
                           "bound the terms (e.g. 1 - tanh(d / scale))")
        if float(np.std(reward)) < settings.min_std:
            reasons.append(f"the reward is (nearly) constant: std {np.std(reward):.3g} over {len(reward)} "
                           "transitions from expert, noisy and random rollouts; it must vary with the state")
        else:
            rho = float(spearman(reward, progress))
            if not np.isfinite(rho) or rho < settings.min_spearman:
                reasons.append(f"the reward does not rise with task progress: Spearman rank correlation "
                               f"{rho:.3f} < {settings.min_spearman:g}; more reward must mean closer to success")
    per_policy: dict[str, Any] = {}
    start = 0
    rets: dict[str, list[float]] = {}
    for e in episodes:
        n = len(e.batch)
        rets.setdefault(e.policy, []).append(float(np.sum(reward[start:start + n])))
        per_policy.setdefault(e.policy, {"episodes": 0, "successes": 0})
        per_policy[e.policy]["episodes"] += 1
        per_policy[e.policy]["successes"] += int(e.success)
        start += n
    for k, v in rets.items():
        per_policy[k]["mean_return"] = float(np.mean(v))
        per_policy[k]["success_rate"] = per_policy[k]["successes"] / per_policy[k]["episodes"]
    stats["policies"] = per_policy
    if (settings.require_expert_above_random and not n_bad and "expert" in rets and "random" in rets
            and not np.mean(rets["expert"]) > np.mean(rets["random"])):
        reasons.append(f"the scripted expert's mean return ({np.mean(rets['expert']):.3g}) is not above random "
                       f"actions' ({np.mean(rets['random']):.3g}); the reward favours the wrong behaviour")
    report = CheckReport(not reasons, reasons, stats, seconds=seconds)
    report.score = score_candidate(reward, episodes, report) if not n_bad else None
    return report


def score_candidate(reward: np.ndarray, episodes: Sequence[Episode], report: CheckReport) -> float:
    """Relabelled-buffer score in about [-1, 1]: mean of step Spearman(r, progress), episode
    Spearman(return, success) (0 when all episodes agree on success) and tanh of the
    expert-random return gap per step in reward-std units."""
    progress = np.concatenate([np.asarray(e.batch.progress, np.float64) for e in episodes])
    parts = [float(spearman(reward, progress))]
    bounds = np.cumsum([0] + [len(e.batch) for e in episodes])
    rets = np.array([reward[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    succ = np.array([e.success for e in episodes], float)
    parts.append(float(spearman(rets, succ)) if 0 < succ.sum() < len(succ) else 0.0)
    pol = np.array([e.policy for e in episodes])
    sd = float(np.std(reward)) or 1.0
    if (pol == "expert").any() and (pol == "random").any():
        parts.append(float(np.tanh((rets[pol == "expert"].mean() - rets[pol == "random"].mean()) / sd)))
    parts = [p if np.isfinite(p) else -1.0 for p in parts]
    report.stats["score_parts"] = parts
    return float(np.mean(parts))


def reflection(report: CheckReport) -> str:
    """The text a later round reads: failures first, then per-component statistics (Eureka's
    reward reflection, here from logged rollouts rather than a training run)."""
    lines = []
    if report.reasons:
        lines.append("The checks rejected it:")
        lines += [f"- {r}" for r in report.reasons]
    else:
        lines.append(f"It passed the checks (score {report.score:.3f} of at most 1).")
    r = report.stats.get("reward")
    if r and "mean" in r:
        lines.append(f"Total reward over {report.stats.get('transitions')} logged transitions: mean {r['mean']:.3g}, "
                     f"std {r['std']:.3g}, range [{r['min']:.3g}, {r['max']:.3g}], Spearman with progress "
                     f"{r['spearman_progress']:.3f}.")
    for k, c in (report.stats.get("components") or {}).items():
        if "mean" in c:
            lines.append(f"- term {k}: mean {c['mean']:.3g}, std {c['std']:.3g}, range [{c['min']:.3g}, "
                         f"{c['max']:.3g}], Spearman with progress {c['spearman_progress']:.3f}")
    for k, p in (report.stats.get("policies") or {}).items():
        if "mean_return" in p:
            lines.append(f"- {k} rollouts: mean return {p['mean_return']:.3g}, success rate {p['success_rate']:.2f}")
    return "\n".join(lines)


__all__ = ["CheckReport", "CheckSettings", "reflection", "run_checks", "score_candidate"]
