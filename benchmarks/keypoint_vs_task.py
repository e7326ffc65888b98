"""SAC success with the keypoint (KAGI) reward vs the task's own dense reward, same budget, several seeds.

For every task and seed, trains SAC twice through the normal entry point
(``policies.train.run``): once with ``reward=task_dense`` and once with
``reward=keypoints`` (waypoints ``configs/reward/waypoints/<task>.yaml``), at the same
env-step budget. Success is always the env's own ``info["success"]`` in deterministic
evaluation, so both rewards are judged by the same yardstick. Reports, per task, the IQM of
the final eval success over seeds (stratified-bootstrap 95% CI, ``rliable``) for each reward
and the ratio keypoint / task; the target is a ratio >= 0.9. Writes JSON to
benchmarks/results/.

    # the full comparison (hours on a 2-core CPU: run it on a free machine)
    uv run --frozen python benchmarks/keypoint_vs_task.py \\
        --tasks panda_reach panda_push panda_drawer_open --seeds 0 1 2 3 4 --jobs 2
    # a smoke run (minutes): checks the pipeline, says nothing about learning
    uv run --frozen python benchmarks/keypoint_vs_task.py --smoke
    # no training (half a minute): how well each reward ranks states by ground-truth progress
    uv run --frozen python benchmarks/keypoint_vs_task.py --alignment
Extra Hydra overrides go after ``--`` and apply to both rewards: ... -- agent.utd=2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sac_success import iqm_with_ci  # noqa: E402 - the benchmarks' one statistic

RESULTS = Path(__file__).resolve().parent / "results"
REWARDS = ("task_dense", "keypoints")


def _train_one(args: tuple[str, str, int, int | None, int, int, int, list[str], str]) -> dict:
    task, reward, seed, steps, warmup, eval_every, eval_episodes, extra, run_root = args
    from policies.config import compose
    from policies.train import run

    overrides = [f"task={task}", f"reward={reward}", f"seed={seed}", f"eval_every={eval_every}",
                 f"eval_episodes={eval_episodes}", "progress=false", "video=false",
                 f"run_dir={run_root}/{task}_{reward}/seed{seed}", "resume=true", *extra]
    if steps:
        overrides.append(f"total_steps={steps}")
    if warmup is not None:
        overrides.append(f"warmup_steps={warmup}")
    cfg = compose(overrides)
    t = time.perf_counter()
    result = run(cfg)
    curve = result["eval_curve"]
    return {"task": task, "reward": reward, "seed": seed, "budget": int(cfg.total_steps),
            "final_success": float(curve[-1][1]) if curve else float("nan"),
            "eval_curve": curve, "wall_s": time.perf_counter() - t, "run_dir": result["run_dir"]}


def _collect(jobs: list[tuple]) -> list[dict]:
    """The finished runs (``summary.json`` at the full budget) of ``jobs``, for tasks and seeds where
    both rewards finished; what is missing is printed."""
    from policies.config import compose

    found: dict[tuple[str, int], list[dict]] = {}
    for task, reward, seed, steps, *_, run_root in jobs:
        path = Path(run_root) / f"{task}_{reward}" / f"seed{seed}" / "summary.json"
        budget = int(steps or compose([f"task={task}"]).total_steps)
        summary = json.loads(path.read_text()) if path.exists() else None
        if summary is None or summary["env_steps"] < budget:
            print(f"not finished: {task} {reward} seed {seed} ({path})")
            continue
        curve = summary["eval_curve"]
        found.setdefault((task, seed), []).append({
            "task": task, "reward": reward, "seed": seed, "budget": budget, "eval_curve": curve,
            "final_success": float(curve[-1][1]) if curve else float("nan"), "wall_s": summary["wall_time_s"],
            "run_dir": summary["run_dir"]})
    return [r for pair in found.values() if len(pair) == len(REWARDS) for r in pair]


ENV_IDS = {"panda_reach": ("rewardforge/PandaReach-v0", 50), "panda_push": ("rewardforge/PandaPush-v0", 100),
           "panda_pick_place": ("rewardforge/PandaPickPlace-v0", 120),
           "panda_drawer_open": ("rewardforge/PandaDrawerOpen-v0", 100)}


def alignment(tasks: list[str], noise_levels: tuple[float, ...] = (0.0, 0.3, 0.6, 1.0, 2.0, 5.0)) -> list[dict]:
    """Spearman rank correlation of each reward with the env's ground-truth progress, per step, over
    scripted-expert episodes with Gaussian action noise of increasing size (one episode per level,
    seed = level index), and how often the keypoint success verdict matches the env's."""
    from scipy.stats import spearmanr

    import rewards
    import sim
    from rewards.base import Transitions
    from sim.panda.experts import make_expert

    rows = []
    for task in tasks:
        env_id, horizon = ENV_IDS[task]
        env = sim.make(env_id)
        term = rewards.build({"kind": "keypoints", "params": {"gamma": 0.99}}, env.unwrapped.embodiment)
        kp, task_r, prog, kp_succ, env_succ = [], [], [], [], []
        for seed, noise in enumerate(noise_levels):
            obs, _ = env.reset(seed=seed)
            expert, rng = make_expert(env), np.random.default_rng(seed)
            expert.reset()
            for _ in range(horizon):
                act = np.clip(expert(obs) + noise * rng.normal(size=env.action_space.shape), -1, 1).astype(np.float32)
                nxt, r, _, _, info = env.step(act)
                out = term(Transitions({k: v[None] for k, v in obs.items()}, act[None],
                                       {k: v[None] for k, v in nxt.items()}))
                kp.append(out.reward[0]), task_r.append(r), prog.append(info["progress"])
                kp_succ.append(bool(out.success[0])), env_succ.append(info["success"])
                obs = nxt
        env.close()
        row = {"task": task, "steps": len(prog), "spearman_keypoints": float(spearmanr(kp, prog)[0]),
               "spearman_task_dense": float(spearmanr(task_r, prog)[0]),
               "success_agreement": float(np.mean(np.array(kp_succ) == np.array(env_succ))),
               "env_success_fraction": float(np.mean(env_succ))}
        rows.append(row)
        print(f"{task:<20} steps {row['steps']:>4}  Spearman with progress: keypoints {row['spearman_keypoints']:.3f}, "
              f"task dense {row['spearman_task_dense']:.3f};  success verdict agrees on "
              f"{row['success_agreement']:.1%} of steps (env success on {row['env_success_fraction']:.0%})")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["panda_reach", "panda_push", "panda_drawer_open"])
    ap.add_argument("--steps", type=int, default=0, help="env steps per run; 0: each task's own budget")
    ap.add_argument("--warmup", type=int, default=None, help="warmup_steps (default: the training config's)")
    ap.add_argument("--eval-every", type=int, default=0, help="0: evaluate at the end only")
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one torch thread each)")
    ap.add_argument("--target", type=float, default=0.9, help="keypoint / task success ratio to reach")
    ap.add_argument("--run-root", default="runs/bench/keypoint_vs_task")
    ap.add_argument("--smoke", action="store_true", help="tiny runs: 300 steps, 1 seed, 2 eval episodes")
    ap.add_argument("--collect", action="store_true",
                    help="train nothing: report the finished runs already in --run-root (seeds without both "
                         "rewards finished are left out and listed)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, after --")
    ap.add_argument("--alignment", action="store_true",
                    help="no training: reward vs ground-truth progress on all four Panda tasks")
    args = ap.parse_args()
    if args.alignment:
        out = RESULTS / "keypoint_alignment.json"
        out.write_text(json.dumps({"rows": alignment(list(ENV_IDS))}, indent=2))
        print(f"wrote {out}")
        return
    if args.smoke:
        args.steps, args.warmup, args.seeds, args.eval_every, args.eval_episodes = 300, 100, [0], 0, 2
        args.run_root = f"{args.run_root}_smoke"

    jobs = [(t, r, s, args.steps or None, args.warmup, args.eval_every, args.eval_episodes, args.overrides,
             args.run_root) for t in args.tasks for s in args.seeds for r in REWARDS]
    print(f"SAC, keypoint vs task reward: {len(args.tasks)} task(s) x {len(args.seeds)} seed(s) x 2 rewards, "
          f"{'budget ' + str(args.steps) if args.steps else 'task budgets'}, {args.jobs} at a time; "
          f"runs in {args.run_root}")
    t0 = time.perf_counter()
    if args.collect:
        runs = _collect(jobs)
    else:
        # worker processes that may start env subprocesses (vector_mode=async): not Pool's daemons
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(_train_one, jobs))
    wall = time.perf_counter() - t0

    rows = []
    print(f"{'task':<20} {'budget':>7}  {'task reward IQM [95% CI]':>26}  {'keypoints IQM [95% CI]':>24}  ratio")
    for task in args.tasks:
        row: dict = {"task": task}
        for reward in REWARDS:
            finals = np.array([r["final_success"] for r in runs if r["task"] == task and r["reward"] == reward])
            iqm, lo, hi = iqm_with_ci(finals)
            row[reward] = {"iqm": iqm, "ci_low": lo, "ci_high": hi, "per_seed": finals.tolist()}
            row["budget"] = next(r["budget"] for r in runs if r["task"] == task)
        base, kp = row["task_dense"]["iqm"], row["keypoints"]["iqm"]
        row["ratio"] = kp / base if base > 0 else (float("nan") if kp == 0 else float("inf"))
        row["meets_target"] = bool(base > 0 and row["ratio"] >= args.target)
        rows.append(row)
        fmt = "{iqm:.2f} [{ci_low:.2f}, {ci_high:.2f}]"
        print(f"{task:<20} {row['budget']:>7}  {fmt.format(**row['task_dense']):>26}  "
              f"{fmt.format(**row['keypoints']):>24}  {row['ratio']:.2f}")
    print(f"target: keypoint success >= {args.target:.0%} of task-reward success; "
          f"met on {sum(r['meets_target'] for r in rows)}/{len(rows)} task(s); wall {wall / 60:.1f} min")

    summary = {"tasks": args.tasks, "seeds": sorted({r["seed"] for r in runs}), "collected": args.collect, "steps": args.steps or "task budgets",
               "overrides": args.overrides, "smoke": args.smoke, "target_ratio": args.target, "rows": rows,
               "wall_s": wall, "runs": [{k: v for k, v in r.items() if k != "eval_curve"} for r in runs]}
    # A smoke run says nothing about learning: its summary stays with its runs, out of results/.
    out = (Path(args.run_root) / "keypoint_vs_task_smoke.json" if args.smoke
           else RESULTS / f"keypoint_vs_task_{'-'.join(args.tasks)}_{args.steps or 'budget'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
