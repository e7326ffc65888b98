"""Does this reward track the task? ``uv run rewardforge-reward-eval reward=task_dense task=panda_reach``.

Rolls out policies of known quality on a task (the scripted expert, the expert with
Gaussian action noise, uniform random actions), scores every episode with a reward
term built from the same ``configs/reward/*.yaml`` group the trainer uses, and
compares the term with what the simulator knows:

* Spearman rank correlation of the per-step reward with ground-truth progress, and
  of the episode return with episode success (does more reward mean closer to done?);
* an EPIC distance (Gleave et al. 2021) to the task's own dense reward, which is 0
  for rewards that induce the same optimal policies whatever the dynamics (the same
  reward up to positive scale and potential shaping) and near sqrt(1/2) ~ 0.71 for an
  unrelated one (1 for a negated one);
* for terms with a success detector, its false- and true-positive rates against
  ``info["success"]``;
* the reward-hacking monitor's counts (:mod:`rewards.monitor`);
* per policy type, the same numbers.

It writes ``report.json`` and two pictures (reward vs time for successful and failed
episodes, one panel per policy type; reward vs progress) to the output directory and
prints a table. CPU only, no network. In code::

    from rewards.evaluate import compose, run
    report = run(compose(["task=panda_reach", "reward=task_dense", "episodes=3"]))
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from common.atomic import atomic_open
from common.cli import hydra_command, output_dir
from rewards.base import (
    RewardConfigError,
    RewardOutput,
    RewardTerm,
    TaskReward,
    Transitions,
    build,
    relabel,
)
from rewards.monitor import RewardMonitor

log = logging.getLogger(__name__)
CONFIG_DIR = (Path(__file__).resolve().parent.parent / "configs").as_posix()


class EvalConfigError(RewardConfigError):
    """A reward-evaluation config value or key is wrong; the message names the key and what is allowed."""


# ---------------------------------------------------------------------------
# statistics


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (what Spearman's rho needs)."""
    x = np.asarray(x, np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _finite_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 vectors, pairs with a NaN/inf on either side dropped (a term that
    returns NaN is reported, not allowed to void every statistic)."""
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"correlation of {x.shape} with {y.shape} values")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN when either side is constant (no correlation is defined)."""
    x, y = _finite_pairs(x, y)
    if len(x) < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    sx, sy = math.sqrt(float(xc @ xc) / len(x)), math.sqrt(float(yc @ yc) / len(y))
    # "constant" up to float rounding (a constant reward's canonical form is ~1e-16 noise)
    if sx <= 1e-9 * max(1.0, float(np.abs(x).max())) or sy <= 1e-9 * max(1.0, float(np.abs(y).max())):
        return float("nan")
    return float(np.clip((xc @ yc) / (len(x) * sx * sy), -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the ranks (Spearman 1904); NaN if either side is constant."""
    x, y = _finite_pairs(x, y)
    return pearson(rankdata(x), rankdata(y))


def pearson_distance(x: np.ndarray, y: np.ndarray) -> float:
    """D_rho = sqrt((1 - rho) / 2) in [0, 1] (Gleave et al. 2021, eq. for the Pearson distance)."""
    rho = pearson(x, y)
    return float("nan") if math.isnan(rho) else math.sqrt(max(0.0, (1.0 - rho) / 2.0))


# ---------------------------------------------------------------------------
# EPIC (Gleave, Dennis, Legg, Russell, Leike 2021, "Quantifying Differences in Reward Functions")
#
# Canonically shaped reward, with S, S' ~ D_S and A ~ D_A independent:
#     C(R)(s, a, s') = R(s, a, s') + E[ gamma R(s', A, S') - R(s, A, S') - gamma R(S, A, S') ]
# EPIC(R_A, R_B) = D_rho( C(R_A)(S, A, S'), C(R_B)(S, A, S') ) over a coverage distribution D.
# C removes potential shaping R + gamma phi(s') - phi(s) exactly, and D_rho ignores positive
# affine maps, so EPIC is 0 for rewards with the same optimal policies in every dynamics.
#
# Our finite-sample version: D_S, D_A and D are the rollouts' visitation distribution.
# One shared set of M triples (S_j, A_j, S'_j), S_j drawn from the visited states, A_j from
# the taken actions and S'_j from the visited next states, each drawn independently, replaces
# every expectation; each coverage transition's two expectations are means over those M.
# Because every reward sees the same M triples, shaping cancels exactly (up to a constant,
# which D_rho ignores), not only in expectation. The counterfactual transitions (s, A_j, S'_j)
# carry the ground-truth fields (env reward, success, progress, episode step) of the transition
# S'_j came from: exact for rewards that are a function of the next state, as the Panda tasks'
# rewards are, so the task's own reward can be canonicalised too. Terminal states get no
# special treatment (the Panda episodes end by time limit only).


@dataclass
class EpicSettings:
    """EPIC sample sizes: ``samples`` M triples per expectation, ``max_transitions`` coverage
    transitions (a random subset of the rollouts), ``chunk`` transitions per term call;
    the term is called on about 2 x max_transitions x samples counterfactual transitions."""

    gamma: float = 0.99
    samples: int = 32
    max_transitions: int = 1000
    chunk: int = 4096
    enabled: bool = True


def canonical_samples(pool: Transitions, m: int, rng: np.random.Generator) -> Transitions:
    """M triples (S_j, A_j, S'_j), each part drawn independently from the pool's visitation."""
    i_s, i_a, i_n = rng.integers(0, len(pool), (3, m))
    out = pool.select(i_n)  # next_obs and the ground truth that describes it
    out.obs = {k: np.asarray(v)[i_s] for k, v in pool.obs.items()}
    out.action = np.asarray(pool.action)[i_a]
    return out


def _mean_from(term: RewardTerm, states: Mapping[str, np.ndarray], samples: Transitions, chunk: int) -> np.ndarray:
    """mean_j R(x_i, A_j, S'_j) for every state x_i in ``states``."""
    n, m = len(next(iter(states.values()))), len(samples)
    per = max(1, chunk // m)
    means = []
    for start in range(0, n, per):
        idx = np.arange(start, min(n, start + per))
        batch = samples.select(np.tile(np.arange(m), len(idx)))
        batch.obs = {k: np.asarray(v)[np.repeat(idx, m)] for k, v in states.items()}
        means.append(term(batch).reward.astype(np.float64).reshape(len(idx), m).mean(axis=1))
    return np.concatenate(means) if means else np.zeros(0)


def canonicalize(term: RewardTerm, coverage: Transitions, samples: Transitions, gamma: float,
                 chunk: int = 4096) -> np.ndarray:
    """C(R) at each coverage transition, expectations replaced by means over ``samples``."""
    r = term(coverage).reward.astype(np.float64)
    next_mean = _mean_from(term, coverage.next_obs, samples, chunk)
    this_mean = _mean_from(term, coverage.obs, samples, chunk)
    const = float(np.mean(term(samples).reward.astype(np.float64)))
    return r + gamma * next_mean - this_mean - gamma * const


def epic_distance(term_a: RewardTerm, term_b: RewardTerm, transitions: Transitions,
                  settings: EpicSettings | None = None, seed: int = 0) -> float:
    """EPIC distance between two terms over the visitation distribution of ``transitions``."""
    s = settings or EpicSettings()
    rng = np.random.default_rng(seed)
    coverage = transitions
    if len(transitions) > s.max_transitions:
        coverage = transitions.select(np.sort(rng.choice(len(transitions), s.max_transitions, replace=False)))
    samples = canonical_samples(transitions, s.samples, rng)
    ca = canonicalize(term_a, coverage, samples, s.gamma, s.chunk)
    cb = canonicalize(term_b, coverage, samples, s.gamma, s.chunk)
    return pearson_distance(ca, cb)


# ---------------------------------------------------------------------------
# rollouts


@dataclass
class Episode:
    """One rollout: its policy type, reset seed, the transitions with ground truth, success."""

    policy: str
    seed: int
    batch: Transitions
    success: bool  # info["success"] at any step


Policy = Callable[[Mapping[str, np.ndarray]], np.ndarray]
PolicyFactory = Callable[[int], Policy]  # episode index -> a fresh policy for that episode


def make_policies(env: Any, expert: bool = True, noise: Sequence[float] = (0.3, 0.6), random: bool = True,
                  seed: int = 0) -> dict[str, PolicyFactory]:
    """Policy types by name: ``expert``, ``noisy_<sigma>`` (expert + N(0, sigma^2) per action
    entry, clipped to [-1, 1]) and ``random`` (uniform in [-1, 1]), each seeded per episode."""
    dim = int(env.action_space.shape[0])
    factories: dict[str, PolicyFactory] = {}
    if expert or noise:
        try:
            from sim.panda.experts import make_expert

            make_expert(env)
        except (AttributeError, KeyError) as err:
            raise EvalConfigError(
                f"task.env_id={env.spec.id if env.spec else env!r} has no scripted expert (Panda tasks do); "
                "set policies.expert=false and policies.noise=[] to evaluate with random rollouts only"
            ) from err

        def noisy(sigma: float, k: int) -> PolicyFactory:
            def factory(ep: int) -> Policy:
                act, rng = make_expert(env), np.random.default_rng([seed, k, ep])

                def policy(obs: Mapping[str, np.ndarray]) -> np.ndarray:
                    a = np.asarray(act(obs), np.float32)
                    if sigma > 0:
                        a = np.clip(a + rng.normal(0.0, sigma, a.shape), -1.0, 1.0).astype(np.float32)
                    return a

                return policy

            return factory

        if expert:
            factories["expert"] = noisy(0.0, 0)
        for k, sigma in enumerate(noise, start=1):
            factories[f"noisy_{float(sigma):g}"] = noisy(float(sigma), k)
    if random:
        def random_factory(ep: int) -> Policy:
            rng = np.random.default_rng([seed, 1000, ep])
            return lambda obs: rng.uniform(-1.0, 1.0, dim).astype(np.float32)

        factories["random"] = random_factory
    return factories


def _stack(dicts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(d[k]) for d in dicts]) for k in dicts[0]}


def rollout(env: Any, policy: Policy, seed: int, name: str = "") -> Episode:
    """One episode from ``env.reset(seed=seed)`` until terminated or truncated."""
    obs, info = env.reset(seed=seed)
    obs_l, act_l, next_l, rew_l, succ_l, prog_l = [], [], [], [], [], []
    while True:
        action = np.asarray(policy(obs), np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        obs_l.append(obs)
        act_l.append(action)
        next_l.append(next_obs)
        rew_l.append(float(reward))
        succ_l.append(bool(info.get("success", False)))
        prog_l.append(float(info.get("progress", np.nan)))
        obs = next_obs
        if terminated or truncated:
            break
    n = len(act_l)
    batch = Transitions(obs=_stack(obs_l), action=np.stack(act_l), next_obs=_stack(next_l),
                        env_reward=np.asarray(rew_l, np.float32), success=np.asarray(succ_l, bool),
                        progress=np.asarray(prog_l, np.float32), episode_step=np.arange(n))
    return Episode(name, seed, batch, bool(np.any(batch.success)))


def collect(env: Any, policies: Mapping[str, PolicyFactory], episodes: int, seed: int = 0,
            progress: bool = True) -> list[Episode]:
    """``episodes`` rollouts per policy type. Every type starts from the same reset seeds
    (seed, seed+1, ...), so the types differ by policy, not by initial state."""
    from tqdm import tqdm

    out = []
    with tqdm(total=episodes * len(policies), desc="rollouts", unit="ep", disable=not progress,
              dynamic_ncols=True) as bar:
        for name, factory in policies.items():
            for ep in range(episodes):
                out.append(rollout(env, factory(ep), seed + ep, name))
                bar.update(1)
                bar.set_postfix(policy=name, refresh=False)
    return out


# ---------------------------------------------------------------------------
# scoring and analysis


def score(term: RewardTerm, episodes: Sequence[Episode], fit_statistics: bool = True) -> list[RewardOutput]:
    """One ``RewardOutput`` per episode (one batch per episode). With ``fit_statistics``, a
    first pass in train mode lets running statistics (``normalize``) see all the rollouts,
    as they would during training; the scores are then computed with them frozen."""
    if fit_statistics:
        term.train_mode(True)
        for e in episodes:
            term(e.batch)
    term.train_mode(False)
    return [relabel(term, e.batch) for e in episodes]


def _rates(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    tp, fp = int(np.sum(pred & truth)), int(np.sum(pred & ~truth))
    fn, tn = int(np.sum(~pred & truth)), int(np.sum(~pred & ~truth))
    return {
        "false_positive_rate": fp / (fp + tn) if fp + tn else float("nan"),
        "true_positive_rate": tp / (tp + fn) if tp + fn else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def success_detection(outputs: Sequence[RewardOutput], episodes: Sequence[Episode]) -> dict[str, Any] | None:
    """FPR = FP / (FP + TN) and TPR = TP / (TP + FN) of the term's success verdict against
    ``info["success"]``, per transition and per episode (success at any step); None when the
    term has no success detector."""
    if not outputs or any(o.success is None for o in outputs):
        return None
    pred = np.concatenate([o.success for o in outputs])
    truth = np.concatenate([e.batch.success for e in episodes])
    ep_pred = np.array([bool(np.any(o.success)) for o in outputs])
    ep_truth = np.array([e.success for e in episodes])
    return {"transitions": _rates(pred, truth), "episodes": _rates(ep_pred, ep_truth)}


def _summarise(outs: Sequence[RewardOutput], eps: Sequence[Episode]) -> dict[str, Any]:
    r = np.concatenate([o.reward for o in outs])
    prog = np.concatenate([e.batch.progress for e in eps])
    returns = np.array([float(np.sum(o.reward, dtype=np.float64)) for o in outs])
    success = np.array([e.success for e in eps], float)
    return {
        "episodes": len(eps), "transitions": len(r),
        "success_rate": float(success.mean()),
        "mean_return": float(returns.mean()),
        "mean_env_return": float(np.mean([np.sum(e.batch.env_reward, dtype=np.float64) for e in eps])),
        "mean_final_progress": float(np.mean([e.batch.progress[-1] for e in eps])),
        "mean_reward": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
        "std_reward": float(np.nanstd(r)) if np.isfinite(r).any() else float("nan"),
        "nonfinite_rewards": int(np.sum(~np.isfinite(r))),
        "spearman_reward_progress": spearman(r, prog),
        "spearman_return_success": spearman(returns, success),
    }


def _epic_report(report: dict[str, Any], term: RewardTerm, episodes: Sequence[Episode], names: list[str],
                 s: EpicSettings, seed: int) -> None:
    """EPIC against the task's dense reward, canonicalised over all rollouts; the distance per
    policy type uses the same canonical rewards with that type's visitation as coverage."""
    rng = np.random.default_rng(seed)
    pooled = Transitions.concat([e.batch for e in episodes])
    owner = np.concatenate([[names.index(e.policy)] * len(e.batch) for e in episodes])
    cover_idx = np.arange(len(pooled))
    if len(pooled) > s.max_transitions:
        cover_idx = np.sort(rng.choice(len(pooled), s.max_transitions, replace=False))
    coverage = pooled.select(cover_idx)
    samples = canonical_samples(pooled, s.samples, rng)
    log.info("EPIC: scoring %d counterfactual transitions per reward", 2 * len(coverage) * s.samples + s.samples)
    term.train_mode(False)
    c_term = canonicalize(term, coverage, samples, s.gamma, s.chunk)
    c_task = canonicalize(TaskReward(), coverage, samples, s.gamma, s.chunk)
    report["overall"]["epic_to_task"] = pearson_distance(c_term, c_task)
    for k, name in enumerate(names):
        mask = owner[cover_idx] == k
        report["policies"][name]["epic_to_task"] = pearson_distance(c_term[mask], c_task[mask])
    report["epic"] = {"enabled": True, "gamma": s.gamma, "samples": s.samples,
                      "coverage_transitions": len(coverage), "reference": "task (the env's own dense reward)"}


def evaluate(term: RewardTerm, episodes: Sequence[Episode], *, epic: EpicSettings | None = None,
             monitor: RewardMonitor | None = None, fit_statistics: bool = True,
             seed: int = 0) -> tuple[dict[str, Any], list[RewardOutput]]:
    """Score ``episodes`` with ``term`` and compare it with the ground truth; returns the
    report (plain JSON-able dict, NaN where a statistic is undefined) and the outputs."""
    if not episodes:
        raise ValueError("evaluate: no episodes")
    outs = score(term, episodes, fit_statistics)
    names = list(dict.fromkeys(e.policy for e in episodes))
    report: dict[str, Any] = {"overall": _summarise(outs, episodes), "policies": {}}
    for name in names:
        sel = [i for i, e in enumerate(episodes) if e.policy == name]
        report["policies"][name] = _summarise([outs[i] for i in sel], [episodes[i] for i in sel])

    s = epic or EpicSettings()
    if s.enabled:
        _epic_report(report, term, episodes, names, s, seed)
    else:
        report["epic"] = {"enabled": False}

    det = success_detection(outs, episodes)
    report["success_detection"] = det
    for name in names:
        sel = [i for i, e in enumerate(episodes) if e.policy == name]
        d = success_detection([outs[i] for i in sel], [episodes[i] for i in sel])
        report["policies"][name]["success_fpr"] = d["transitions"]["false_positive_rate"] if d else None
        report["policies"][name]["success_tpr"] = d["transitions"]["true_positive_rate"] if d else None

    if monitor is not None:
        per_policy = dict.fromkeys(names, 0)
        for o, e in zip(outs, episodes, strict=True):
            flags = monitor.update_episode(o, e.batch.success, e.batch.progress)
            per_policy[e.policy] += int(flags.any.sum())
        report["monitor"] = monitor.summary()
        for name in names:
            report["policies"][name]["monitor_flagged"] = per_policy[name]
    return report, outs


# ---------------------------------------------------------------------------
# pictures


def plot_reward_vs_time(path: Path, outs: Sequence[RewardOutput], episodes: Sequence[Episode],
                        title: str = "") -> None:
    """Reward per step, one panel per policy type, successful episodes green, failed red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(e.policy for e in episodes))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        n_ok = n_fail = 0
        for o, e in zip(outs, episodes, strict=True):
            if e.policy != name:
                continue
            ok = e.success
            label = None
            if ok and not n_ok:
                label = "success"
            elif not ok and not n_fail:
                label = "failure"
            n_ok, n_fail = n_ok + ok, n_fail + (not ok)
            ax.plot(e.batch.episode_step, o.reward, color="tab:green" if ok else "tab:red", alpha=0.6, lw=1,
                    label=label)
        ax.set_title(f"{name} ({n_ok} success, {n_fail} failure)", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if n_ok or n_fail:
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel("reward")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reward_vs_progress(path: Path, outs: Sequence[RewardOutput], episodes: Sequence[Episode],
                            title: str = "") -> None:
    """Scatter of reward against ground-truth progress, coloured by policy type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(e.policy for e in episodes))
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for k, name in enumerate(names):
        sel = [i for i, e in enumerate(episodes) if e.policy == name]
        p = np.concatenate([episodes[i].batch.progress for i in sel])
        r = np.concatenate([outs[i].reward for i in sel])
        ax.scatter(p, r, s=6, alpha=0.4, color=f"C{k}", label=name)
    ax.set_xlabel("ground-truth progress")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, markerscale=2)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------
# the config (Hydra is the UI; configs/reward_eval.yaml), its validation and the command


@dataclass
class EvalTaskConfig:
    """Same keys as the trainer's task schema (policies/config.py TaskConfig), so the same
    configs/task/*.yaml files compose here (rewards/ may not import policies)."""

    env_id: str = MISSING
    max_episode_steps: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    total_steps: int = 100_000  # unused here; the task files carry it


@dataclass
class EvalPoliciesConfig:
    expert: bool = True  # the scripted expert (Panda tasks)
    noise: list[float] = field(default_factory=lambda: [0.3, 0.6])  # expert + Gaussian action noise, std per level
    random: bool = True  # uniform random actions


@dataclass
class EvalEpicConfig:
    enabled: bool = True
    gamma: float = 0.99
    samples: int = 32
    max_transitions: int = 1000
    chunk: int = 4096


@dataclass
class EvalMonitorConfig:
    reward_keys: list[str] = field(default_factory=lambda: ["reward"])
    quantile: float = 0.95
    threshold: float | None = None
    history: int = 10_000
    min_history: int = 100
    return_threshold: float | None = None
    min_episodes: int = 10
    max_progress: float | None = None
    disagreement_keys: list[str] = field(default_factory=lambda: ["prob_std"])
    disagreement_threshold: float = 0.25
    episode_min_flags: int = 1
    warn_rate: float = 0.05
    error_rate: float = 0.2
    name: str = "reward_monitor"


@dataclass
class EvalConfig:
    task: EvalTaskConfig = MISSING
    reward: dict[str, Any] = MISSING  # the trainer's reward group; handed to rewards.build
    seed: int = 0
    episodes: int = 10
    max_episode_steps: int | None = None
    policies: EvalPoliciesConfig = field(default_factory=EvalPoliciesConfig)
    fit_statistics: bool = True
    epic: EvalEpicConfig = field(default_factory=EvalEpicConfig)
    monitor: EvalMonitorConfig = field(default_factory=EvalMonitorConfig)
    plots: bool = True
    progress: bool = True
    output_dir: str | None = None


ConfigStore.instance().store(name="reward_eval_schema", node=EvalConfig)
# ``${rf_or:a,b}``: a unless null, else b (as policies/config.py registers it for train.yaml).
OmegaConf.register_new_resolver("rf_or", lambda a, b: b if a is None else a, replace=True)

_OPEN = ("task.kwargs", "reward")  # any key allowed below these
# Keys of the trainer's reward schema; scale, relabel_batch and nonfinite are the training loop's
# business: here the term's own reward is judged, and non-finite rewards are counted, not fatal.
_REWARD_KEYS = ("name", "kind", "scale", "params", "normalize", "relabel_batch", "nonfinite")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise EvalConfigError(f"invalid config value {key}={value!r}: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Ranges and choices; raises EvalConfigError naming the key and what is allowed."""
    if cfg.episodes < 1:
        _fail("episodes", cfg.episodes, "must be an integer >= 1")
    for key in ("max_episode_steps", "task.max_episode_steps"):
        v = OmegaConf.select(cfg, key)
        if v is not None and v < 1:
            _fail(key, v, "must be >= 1 or null")
    p = cfg.policies
    if any(not (s > 0) for s in p.noise):
        _fail("policies.noise", list(p.noise), "must be a list of noise std devs > 0 (e.g. [0.3, 0.6])")
    if not (p.expert or p.noise or p.random):
        _fail("policies", OmegaConf.to_container(p), "enable at least one of expert, noise, random")
    e = cfg.epic
    if not 0.0 <= e.gamma <= 1.0:
        _fail("epic.gamma", e.gamma, "must be in [0, 1]")
    for key in ("samples", "chunk"):
        if e[key] < 1:
            _fail(f"epic.{key}", e[key], "must be an integer >= 1")
    if e.max_transitions < 2:
        _fail("epic.max_transitions", e.max_transitions, "must be an integer >= 2")
    reward = cfg.reward
    if not isinstance(reward, DictConfig) or "kind" not in reward:
        _fail("reward", reward, "must be a reward config with a kind (pick one: reward=task_dense, ...)")
    unknown = sorted(set(reward) - set(_REWARD_KEYS))
    if unknown:
        log.warning("reward has keys this command does not read: %s (it reads %s)", unknown, ", ".join(_REWARD_KEYS))
    try:
        RewardMonitor.from_config(OmegaConf.to_container(cfg.monitor, resolve=True))
    except RewardConfigError as err:
        raise EvalConfigError(str(err)) from err


def check_overrides(overrides: Sequence[str]) -> None:
    """Unknown ``key=value`` overrides fail with the nearest valid key (Hydra's own error is a
    deep traceback). Group choices (``task=...``, ``reward=...``) are Hydra's to check."""
    from common.cli import check_overrides as check

    schema = OmegaConf.structured(EvalConfig)
    schema.task = EvalTaskConfig
    check(overrides, schema, ("task", "reward"), _OPEN, EvalConfigError)


def compose(overrides: Sequence[str] = (), config_name: str = "reward_eval") -> DictConfig:
    """The command's config built in code: ``compose(["task=panda_push", "reward=task_dense"])``."""
    from common.cli import compose as hydra_compose

    check_overrides(overrides)
    cfg = hydra_compose(CONFIG_DIR, config_name, overrides)
    validate(cfg)
    return cfg


def make_env(cfg: DictConfig, term: RewardTerm) -> Any:
    """The task's env, with the cameras the term reads (``image_<camera>``) at its render size."""
    import sim

    kwargs = dict(OmegaConf.to_container(cfg.task.kwargs, resolve=True) or {})
    cams = [k[len("image_"):] for k in term.requires if k.startswith("image_")]
    if cams:
        from sim.gl import before_gl_context

        before_gl_context()  # before any GL context in a process that may also load torch/triton
        kwargs["cameras"] = list(dict.fromkeys([*kwargs.get("cameras", []), *cams]))
        if term.render_size is not None:
            kwargs["image_size"] = int(term.render_size)
    steps = cfg.max_episode_steps if cfg.max_episode_steps is not None else cfg.task.max_episode_steps
    if steps is not None:
        kwargs["max_episode_steps"] = int(steps)
    try:
        return sim.make(cfg.task.env_id, **kwargs)
    except ValueError as err:
        raise EvalConfigError(f"task.env_id={cfg.task.env_id!r}: {err}") from err


def _jsonable(x: Any) -> Any:
    """NaN/inf become null (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table, one row per policy type and one for all."""
    cols = [("policy", None), ("eps", "episodes"), ("success", "success_rate"), ("env ret", "mean_env_return"),
            ("return", "mean_return"), ("rho(r,prog)", "spearman_reward_progress"),
            ("rho(R,succ)", "spearman_return_success"), ("EPIC", "epic_to_task"), ("FPR", "success_fpr"),
            ("TPR", "success_tpr"), ("flagged", "monitor_flagged")]
    rows = [[name, *(_fmt(s.get(k)) for _, k in cols[1:])] for name, s in report["policies"].items()]
    overall = dict(report["overall"])
    det = report.get("success_detection")
    if det:
        overall["success_fpr"] = det["transitions"]["false_positive_rate"]
        overall["success_tpr"] = det["transitions"]["true_positive_rate"]
    if report.get("monitor"):
        overall["monitor_flagged"] = report["monitor"]["flagged"]
    rows.append(["all", *(_fmt(overall.get(k)) for _, k in cols[1:])])
    head = [c for c, _ in cols]
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    line = lambda r: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths]), *map(line, rows)]
    return "\n".join(out)


def run(cfg: DictConfig, term: RewardTerm | None = None) -> dict[str, Any]:
    """Build the term (unless given), roll out, score, analyse, write report.json and plots.
    Returns the report (NaN where a statistic is undefined)."""
    validate(cfg)
    t0 = time.perf_counter()
    reward_cfg = OmegaConf.to_container(cfg.reward, resolve=True)
    if term is None:
        # Built without a spec first: its ``requires`` and ``render_size`` decide which cameras
        # the env renders; then bound to the env's spec (a missing observation fails here).
        term = build(reward_cfg, None)
    env = make_env(cfg, term)
    try:
        spec = env.unwrapped.embodiment
        term.bind(spec)
        pol = cfg.policies
        factories = make_policies(env, pol.expert, list(pol.noise), pol.random, cfg.seed)
        episodes = collect(env, factories, cfg.episodes, cfg.seed, cfg.progress)
    finally:
        env.close()
    monitor = RewardMonitor.from_config(OmegaConf.to_container(cfg.monitor, resolve=True))
    e = cfg.epic
    settings = EpicSettings(float(e.gamma), int(e.samples), int(e.max_transitions), int(e.chunk), bool(e.enabled))
    report, outs = evaluate(term, episodes, epic=settings, monitor=monitor, fit_statistics=cfg.fit_statistics,
                            seed=cfg.seed)
    report = {
        "task": cfg.task.env_id, "embodiment": spec.name, "reward": reward_cfg, "term": term.name,
        "requires": list(term.requires), "seed": cfg.seed, "episodes_per_policy": cfg.episodes,
        "episode_steps": int(max(len(ep.batch) for ep in episodes)), **report,
        "monitor_diagnostics": [list(d) for d in monitor.diagnostics()],
    }
    out_dir = output_dir(cfg.output_dir, "reward_eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    if cfg.plots:
        title = f"{spec.name}: reward {term.name}"
        plot_reward_vs_time(out_dir / "reward_vs_time.png", outs, episodes, title)
        plot_reward_vs_progress(out_dir / "reward_vs_progress.png", outs, episodes,
                                f"{title}, Spearman {_fmt(report['overall']['spearman_reward_progress'])}")
        plots = ["reward_vs_time.png", "reward_vs_progress.png"]
    report["plots"] = plots
    report["output_dir"] = str(out_dir)
    report["wall_time_s"] = time.perf_counter() - t0
    with atomic_open(out_dir / "report.json") as f:
        f.write((json.dumps(_jsonable(report), indent=2) + "\n").encode())
    return report


def _app(cfg: DictConfig) -> None:
    report = run(cfg)
    print(f"\n{report['task']}, reward {report['term']!r}, {report['episodes_per_policy']} episodes per policy type")
    print(format_table(report))
    mon = report.get("monitor") or {}
    if mon:
        print(f"monitor: {mon['flagged']} of {mon['transitions']} transitions flagged, "
              f"{mon['episodes_flagged']} of {mon['episodes']} episodes"
              + (f" (last: {mon['last_reasons']})" if mon.get("last_reasons") else ""))
    print(f"report: {Path(report['output_dir']) / 'report.json'}")


def main() -> None:
    """Console entry point ``rewardforge-reward-eval``: Hydra overrides on the command line."""
    hydra_command(CONFIG_DIR, "reward_eval", _app, check_overrides, (RewardConfigError,))


__all__ = [
    "EpicSettings", "Episode", "EvalConfigError", "canonical_samples", "canonicalize", "check_overrides",
    "collect", "compose", "epic_distance", "evaluate", "format_table", "main", "make_env", "make_policies",
    "pearson", "pearson_distance", "rankdata", "rollout", "run", "score", "spearman", "success_detection",
    "validate",
]


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    main()
