"""What a run leaves behind besides checkpoints: metrics (JSONL + CSV), a learning curve, a video."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "step", "kind", "episode_return", "episode_length", "success", "eval_success_rate", "eval_return",
    "critic_loss", "actor_loss", "alpha", "entropy", "q_mean", "steps_per_s", "wall_time",
)


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def rewrite_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    tmp.replace(path)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    extra = sorted({k for r in rows for k in r} - set(CSV_COLUMNS))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*CSV_COLUMNS, *extra])
        w.writeheader()
        w.writerows(rows)


def plot_learning_curve(path: Path, rows: Sequence[dict[str, Any]], title: str, window: int = 20) -> None:
    """Success rate and return vs env steps: training episodes (rolling mean) and evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [r for r in rows if r["kind"] == "episode"]
    evals = [r for r in rows if r["kind"] == "eval"]
    fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    if eps:
        steps = np.array([r["step"] for r in eps])
        k = min(window, len(eps))
        kernel = np.ones(k) / k
        for ax, key in ((ax_s, "success"), (ax_r, "episode_return")):
            v = np.array([float(r[key]) for r in eps])
            ax.plot(steps, v, ".", alpha=0.15, color="tab:blue")
            ax.plot(steps[k - 1:], np.convolve(v, kernel, "valid"), color="tab:blue", label=f"train (mean of {k} episodes)")
    if evals:
        steps = [r["step"] for r in evals]
        ax_s.plot(steps, [r["eval_success_rate"] for r in evals], "o-", color="tab:orange", label="eval (deterministic)")
        ax_r.plot(steps, [r["eval_return"] for r in evals], "o-", color="tab:orange", label="eval (deterministic)")
    ax_s.set(xlabel="env steps", ylabel="success rate", ylim=(-0.05, 1.05), title="success")
    ax_r.set(xlabel="env steps", ylabel="episode return", title="return")
    for ax in (ax_s, ax_r):
        ax.grid(alpha=0.3)
        if eps or evals:
            ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_video(path_stem: Path, frames: Sequence[np.ndarray], fps: float) -> Path | None:
    """MP4 via imageio-ffmpeg; GIF if that fails. Returns the file written (None without frames)."""
    import imageio.v2 as imageio

    if not frames:
        return None
    mp4 = path_stem.with_suffix(".mp4")
    try:
        imageio.mimsave(mp4, list(frames), fps=fps, macro_block_size=16)
        return mp4
    except Exception as err:  # noqa: BLE001 - any encoder problem: fall back to GIF
        log.warning("MP4 encoding failed (%s); writing a GIF instead", err)
        mp4.unlink(missing_ok=True)
        gif = path_stem.with_suffix(".gif")
        imageio.mimsave(gif, list(frames), duration=1000.0 / fps, loop=0)
        return gif
