"""Success rate of our SAC against an env-step budget, over several seeds.

Runs the training loop for each seed (``--jobs`` at a time, one torch thread each),
then reports, at every evaluation point, the interquartile mean (IQM) of the eval
success rate over seeds with a stratified-bootstrap 95% confidence interval
(``rliable``), and the first env step where the IQM reaches ``--target``.
Writes a JSON summary and a curve PNG to benchmarks/results/.

    uv run python benchmarks/sac_success.py --task panda_reach --steps 20000 --seeds 0 1 2 3 4
    uv run python benchmarks/sac_success.py --task metaworld_reach --steps 200000 --seeds 0 1 2
Extra Hydra overrides go after ``--``:  ... -- agent.utd=2 agent.critic_layer_norm=true
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _train_one(args: tuple[str, int, int, int, list[str], str]) -> dict:
    task, seed, steps, eval_every, extra, run_root = args
    from policies.config import compose
    from policies.train import run

    cfg = compose([f"task={task}", f"seed={seed}", f"total_steps={steps}", f"eval_every={eval_every}",
                   "progress=false", f"run_dir={run_root}/seed{seed}", "resume=true", *extra])
    t = time.perf_counter()
    result = run(cfg)
    # Training speed from the run's own log rows, so a run resumed from a finished state
    # (no new steps) still reports what it ran at.
    rows = [json.loads(line) for line in (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["steps_per_s"] for r in rows if r["kind"] == "train" and r["step"] > cfg.warmup_steps]
    return {"seed": seed, "eval_curve": result["eval_curve"], "wall_s": time.perf_counter() - t,
            "steps_per_s": float(np.median(rates)) if rates else float("nan"), "run_dir": result["run_dir"]}


def _read_run(run_dir: Path, seed: int) -> dict:
    """A finished run's eval curve and training speed from its metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["steps_per_s"] for r in rows if r["kind"] == "train"]
    curve = [(r["step"], r["eval_success_rate"], r["eval_return"]) for r in rows if r["kind"] == "eval"]
    return {"seed": seed, "eval_curve": curve, "wall_s": float("nan"),
            "steps_per_s": float(np.median(rates)) if rates else float("nan"), "run_dir": str(run_dir)}


def iqm_with_ci(values: np.ndarray, reps: int = 2000) -> tuple[float, float, float]:
    """IQM over runs (axis 0) and its stratified-bootstrap 95% CI, via rliable; one run gives a point.
    The benchmarks' one place for this statistic."""
    values = np.asarray(values, float)
    if len(values) < 2:
        v = float(values[0]) if len(values) else float("nan")
        return v, v, v
    from rliable import library as rly
    from rliable import metrics

    scores = {"sac": values.reshape(-1, 1)}  # (runs, tasks=1)
    point, interval = rly.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
    return float(point["sac"][0]), float(interval["sac"][0, 0]), float(interval["sac"][1, 0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="panda_reach")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="seeds trained at once (this machine has 2 cores)")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--run-root", default=None, help="where the runs go (default runs/bench/<task>)")
    ap.add_argument("--summarize", action="store_true",
                    help="only aggregate the finished runs in --run-root (e.g. runs trained by older code)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, after --")
    args = ap.parse_args()

    run_root = args.run_root or f"runs/bench/{args.task}_{args.steps}"
    jobs = [(args.task, s, args.steps, args.eval_every, args.overrides, run_root) for s in args.seeds]
    if args.summarize:
        print(f"SAC on {args.task}: aggregating the finished runs of {len(jobs)} seeds in {run_root}")
    else:
        print(f"SAC on {args.task}: {len(jobs)} seeds x {args.steps} env steps, eval every {args.eval_every}, "
              f"{args.jobs} at a time; runs in {run_root}")
    t = time.perf_counter()
    if args.summarize:  # aggregate finished runs in run_root, no training
        runs = [_read_run(Path(run_root) / f"seed{s}", s) for s in args.seeds]
    else:
        # worker processes that may start env subprocesses (vector_mode=async): not Pool's daemons
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(_train_one, jobs))
    wall = time.perf_counter() - t

    steps = sorted({s for r in runs for s, _, _ in r["eval_curve"]})
    curves = np.array([[dict((s, v) for s, v, _ in r["eval_curve"]).get(st, np.nan) for st in steps] for r in runs])
    rows = []
    for j, st in enumerate(steps):
        col = curves[:, j]
        if np.isnan(col).any():
            continue
        iqm, lo, hi = iqm_with_ci(col)
        rows.append({"step": st, "iqm": iqm, "ci_low": lo, "ci_high": hi, "per_seed": col.tolist()})
    reached = next((r["step"] for r in rows if r["iqm"] >= args.target), None)

    print(f"{'env step':>9}  {'IQM success':>11}  {'95% CI':>15}  per seed")
    for r in rows:
        print(f"{r['step']:>9}  {r['iqm']:>11.2f}  [{r['ci_low']:.2f}, {r['ci_high']:.2f}]  "
              + " ".join(f"{v:.2f}" for v in r["per_seed"]))
    print(f"first eval step with IQM success >= {args.target}: {reached}  (budget {args.steps})")
    print("median training speed per seed (learning phase): " + ", ".join(f"{r['steps_per_s']:.0f}" for r in runs)
          + f" env steps/s; total wall {wall / 60:.1f} min")

    RESULTS.mkdir(exist_ok=True)
    summary = {"task": args.task, "budget": args.steps, "seeds": args.seeds, "overrides": args.overrides,
               "target": args.target, "first_step_iqm_at_target": reached, "curve": rows,
               "final_iqm": rows[-1] if rows else None, "wall_s": wall,
               "steps_per_s": [r["steps_per_s"] for r in runs], "run_dirs": [r["run_dir"] for r in runs]}
    tag = "".join(f"_{o.split('.')[-1].replace('=', '-')}" for o in args.overrides)
    out = RESULTS / f"sac_success_{args.task}_{args.steps}{tag}.json"
    out.write_text(json.dumps(summary, indent=2))
    _plot(rows, args, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _plot(rows: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    x = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [r["iqm"] for r in rows], label=f"SAC IQM ({len(args.seeds)} seeds)")
    ax.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.25, label="95% CI")
    ax.axhline(args.target, ls="--", c="gray", lw=0.8)
    ax.set(xlabel="env steps", ylabel="eval success rate", ylim=(-0.02, 1.02), title=args.task)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
