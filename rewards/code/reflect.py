"""Reward reflection from training statistics (Eureka), as text for the refine prompt.

Eureka (Ma et al. 2024) feeds back, after each RL run on a candidate reward, the value of
every reward component and the task's success rate sampled at several points of training,
and tells the model how to read them. Here the numbers come from a run's ``metrics.jsonl``:
the training loop writes one ``kind: episode`` row per finished episode with ``success``,
``episode_length``, ``reward_return`` (the program's return) and ``reward/<term>`` (the
episode sum of each term the program returned; ``policies/reward_stream.py``), and
``kind: eval`` rows with the deterministic policy's success rate.

:func:`training_reflection` splits the episodes into ``windows`` consecutive groups (the
"checkpoints"), reports per term the mean episode sum in each group plus the overall
min/max, the success rate and episode length per group, and adds advice in the spirit of
Eureka's: a term that never moves is too small to matter or unreachable (rescale or
rewrite it), a term that dominates the total hides the others (rescale it), and a success
rate that stays at zero means the whole function needs a different idea.

This module reads plain rows (dicts); it never imports the training code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ReflectionSettings:
    """How the statistics are summarised (config ``analysis.*`` of ``rewardforge-reward-search``)."""

    windows: int = 5  # groups of consecutive episodes ("checkpoints") the statistics are given for
    flat_fraction: float = 0.05  # a term whose first->last group change is below this share of its scale is flat
    dominant_share: float = 0.7  # a term carrying more than this share of the total magnitude dominates


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``<run_dir>/metrics.jsonl`` (written by the training loop), oldest first."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir} (is it a training run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _groups(n: int, k: int) -> list[np.ndarray]:
    k = max(1, min(k, n))
    return [g for g in np.array_split(np.arange(n), k) if len(g)]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def component_statistics(rows: Sequence[Mapping[str, Any]], windows: int = 5) -> dict[str, Any]:
    """Per-window statistics of the episode rows: steps, success, length, return and each term."""
    eps = [r for r in rows if r.get("kind") == "episode"]
    if not eps:
        return {"episodes": 0}
    groups = _groups(len(eps), windows)
    terms = sorted({k for r in eps for k in r if k.startswith("reward/")})
    out: dict[str, Any] = {"episodes": len(eps), "steps": [int(eps[g[-1]]["step"]) for g in groups]}

    def series(key: str, default: float = np.nan) -> np.ndarray:
        return np.array([float(r.get(key, default)) for r in eps], np.float64)

    for key, name in (("success", "success_rate"), ("episode_length", "episode_length"),
                      ("reward_return", "reward_return"), ("episode_return", "task_return")):
        v = series(key)
        if np.isfinite(v).any():
            out[name] = [float(np.nanmean(v[g])) for g in groups]
    out["terms"] = {}
    for t in terms:
        v = series(t, 0.0)
        out["terms"][t.removeprefix("reward/")] = {
            "mean": [float(v[g].mean()) for g in groups], "min": float(v.min()), "max": float(v.max()),
            "abs_mean": float(np.abs(v).mean())}
    out["eval"] = [(int(r["step"]), float(r["eval_success_rate"])) for r in rows
                   if r.get("kind") == "eval" and "eval_success_rate" in r]
    return out


def training_reflection(rows: Sequence[Mapping[str, Any]], settings: ReflectionSettings | None = None,
                        title: str = "training run") -> str:
    """Eureka-style reflection text from a run's metrics rows (see the module doc)."""
    s = settings or ReflectionSettings()
    st = component_statistics(rows, s.windows)
    if not st["episodes"]:
        return f"The {title} finished no episode, so there are no training statistics."
    steps = st["steps"]
    lines = [f"Statistics of the {title}: {st['episodes']} episodes, shown for {len(steps)} consecutive groups of "
             f"episodes ending at env steps {', '.join(map(str, steps))} (mean per episode in each group):"]
    if "success_rate" in st:
        lines.append("- success rate: " + ", ".join(f"{x:.2f}" for x in st["success_rate"]))
    if "episode_length" in st:
        lines.append("- episode length: " + ", ".join(f"{x:.1f}" for x in st["episode_length"]))
    if "reward_return" in st:
        lines.append("- your reward's episode return: " + ", ".join(map(_fmt, st["reward_return"])))
    for name, t in st["terms"].items():
        lines.append(f"- term {name}: " + ", ".join(map(_fmt, t["mean"]))
                     + f" (per-episode min {_fmt(t['min'])}, max {_fmt(t['max'])})")
    if st["eval"]:
        lines.append("- evaluation success rate (deterministic policy): "
                     + ", ".join(f"step {k}: {v:.2f}" for k, v in st["eval"]))
    advice = []
    total_abs = sum(t["abs_mean"] for t in st["terms"].values())
    for name, t in st["terms"].items():
        scale = max(t["max"] - t["min"], abs(t["mean"][-1]), abs(t["mean"][0]), 1e-9)
        change = abs(t["mean"][-1] - t["mean"][0])
        if len(t["mean"]) > 1 and change < s.flat_fraction * scale:
            advice.append(f"term {name} barely changed during training ({_fmt(t['mean'][0])} -> {_fmt(t['mean'][-1])}): "
                          "the agent cannot or need not move it; rescale it (it may be too small to matter next to "
                          "the others) or rewrite it so it responds to what the agent does")
        if len(st["terms"]) > 1 and total_abs > 0 and t["abs_mean"] / total_abs > s.dominant_share:
            advice.append(f"term {name} carries {100 * t['abs_mean'] / total_abs:.0f}% of the reward's magnitude: "
                          "it drowns the other terms; scale it down (or the others up)")
    succ = st.get("success_rate")
    evals = [v for _, v in st["eval"]]
    if succ is not None and max(succ) == 0.0 and (not evals or max(evals) == 0.0):
        advice.append("the success rate stayed at zero throughout: the reward does not lead the agent to the goal; "
                      "rewrite the whole function with a different approach rather than tuning its scales")
    elif succ is not None and len(succ) > 1 and succ[-1] < succ[0]:
        advice.append("the success rate fell during training: some term pays for behaviour other than success "
                      "(look for a term that keeps rising while success drops)")
    if advice:
        lines.append("How to read this:")
        lines += [f"- {a}" for a in advice]
    return "\n".join(lines)


__all__ = ["ReflectionSettings", "component_statistics", "read_metrics", "training_reflection"]
