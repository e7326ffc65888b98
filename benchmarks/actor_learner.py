"""Env steps/s with the actor/learner split (1 and 2 actor processes over ZeroMQ on 127.0.0.1) against the
single-process training loop, same config, same run.

Every variant trains SAC on the same task with the same settings (UTD 1, batch 256, 256x256, one torch
thread in the learner, the same warm-up and number of env steps) and does the same number of gradient
updates per env step (the split's learner keeps the single loop's count; see policies/distributed.py).
What is timed is the learning phase, after the random warm-up, where every env step also costs its
updates:

* single process: env steps/s between the first and last training-log row after the warm-up
  (as benchmarks/sac_speed.py), plain and with the env in its own process overlapping the update
  (``overlap_env_step=true vector_mode=async``, the in-process alternative to an actor);
* split: env steps learned on per second between the learner's first and last learning step (steps an
  actor produced but the learner had not trained on do not count). Also shown: env steps/s received
  during the warm-up, where actors only step envs and nothing learns.

    uv run --frozen python benchmarks/actor_learner.py                   # panda_reach, 3000 steps each
    uv run --frozen python benchmarks/actor_learner.py --append     # one more round (reverse order)
Writes benchmarks/results/actor_learner.json. This machine's CPU is shared with other work: the load
average before and after each run is recorded next to its figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from policies.config import compose
from policies.distributed import compose_all, run_local
from policies.train import run

RESULTS = Path(__file__).resolve().parent / "results"


def common(task: str, steps: int, warmup: int, seed: int, run_dir: str) -> list[str]:
    return [f"task={task}", f"seed={seed}", f"total_steps={steps}", f"warmup_steps={warmup}", "eval_every=0",
            "eval_episodes=2", "checkpoint_every=0", "video=false", "progress=false", "resume=false",
            f"log_every={max(100, (steps - warmup) // 20)}", f"run_dir={run_dir}"]


def single(task: str, steps: int, warmup: int, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = run(compose([*common(task, steps, warmup, seed, f"{tmp}/run"), *extra]))
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    learn = [r for r in train if r["step"] > warmup]
    (s0, t0), (s1, t1) = (learn[0]["step"], learn[0]["wall_time"]), (learn[-1]["step"], learn[-1]["wall_time"])
    warm = [r for r in train if r["step"] <= warmup]
    return {"learn_steps_per_s": (s1 - s0) / (t1 - t0),
            "warmup_steps_per_s": warm[-1]["step"] / warm[-1]["wall_time"] if warm else None,
            "total_wall_s": result["wall_time_s"], "final_eval_success": result["final_eval_success"]}


def split(task: str, steps: int, warmup: int, seed: int, actors: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg, d = compose_all([*common(task, steps, warmup, seed, f"{tmp}/run"), f"num_actors={actors}", *extra])
        t = time.perf_counter()
        result = run_local(cfg, d)
        wall = time.perf_counter() - t
    assert result["stopped_reason"] == "total_steps", result["stopped_reason"]
    return {"learn_steps_per_s": result["learn_steps_per_s"], "warmup_steps_per_s": result["warmup_steps_per_s"],
            "total_wall_s": wall, "final_eval_success": result["final_eval_success"],
            "num_updates": result["num_updates"],
            "steps_per_actor": {k: v["steps"] for k, v in result["actors"].items()}}


VARIANTS = {
    "single process": ("single", []),
    "single process + env overlap (async env)": ("single", ["overlap_env_step=true", "vector_mode=async"]),
    "split, 1 actor": ("split", 1),
    "split, 2 actors": ("split", 2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="panda_reach")
    ap.add_argument("--steps", type=int, default=3000, help="env steps per run, warm-up included")
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="rounds over all variants (median reported; the "
                    "order alternates between rounds)")
    ap.add_argument("--only", nargs="*", default=None, metavar="WORD", help="variants whose name has one of these")
    ap.add_argument("--append", action="store_true",
                    help="add these rounds to the runs in the existing results file (same task/steps/warm-up)")
    args = ap.parse_args()

    names = [n for n in VARIANTS if not args.only or any(w in n for w in args.only)]
    print(f"actor/learner split vs single process on {args.task}: {args.steps} env steps "
          f"({args.warmup} random warm-up), UTD 1, batch 256, 256x256; {os.cpu_count()} CPUs shared with other work")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    path = RESULTS / "actor_learner.json"
    if args.append and path.exists():
        old = json.loads(path.read_text())
        if (old["task"], old["steps"], old["warmup"]) != (args.task, args.steps, args.warmup):
            raise SystemExit(f"{path} holds {old['task']}, {old['steps']} steps, {old['warmup']} warm-up; not appending")
        for n in names:
            runs[n] = old["results"].get(n, {}).get("runs", [])
    done = max((len(v) for v in runs.values()), default=0)
    for rep in range(args.repeats):
        # alternate the order between rounds, so a load that drifts over the run favours no variant
        for name in names if (done + rep) % 2 == 0 else names[::-1]:
            kind, arg = VARIANTS[name]
            load0 = os.getloadavg()[0]
            if kind == "single":
                r = single(args.task, args.steps, args.warmup, args.seed, arg)
            else:
                r = split(args.task, args.steps, args.warmup, args.seed, arg, [])
            r["loadavg_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
            runs[name].append(r)
            print(f"  [round {done + rep + 1}] {name}: {r['learn_steps_per_s']:.1f} env steps/s learning, "
                  f"load {r['loadavg_before_after']}", flush=True)

    base = statistics.median(r["learn_steps_per_s"] for r in runs[names[0]])
    summary = {}
    print(f"\n{'variant':<44}{'learning steps/s':>17}{'x single':>10}{'warm-up steps/s':>17}")
    for name in names:
        sps = statistics.median(r["learn_steps_per_s"] for r in runs[name])
        warm = [r["warmup_steps_per_s"] for r in runs[name] if r["warmup_steps_per_s"]]
        warm_m = statistics.median(warm) if warm else float("nan")
        summary[name] = {"learn_steps_per_s": sps, "ratio_vs_single": sps / base, "warmup_steps_per_s": warm_m,
                         "runs": runs[name]}
        print(f"{name:<44}{sps:>17.1f}{sps / base:>10.2f}{warm_m:>17.1f}")
    out = {"benchmark": "actor_learner", "task": args.task, "steps": args.steps, "warmup": args.warmup,
           "seed": args.seed, "rounds": max(len(v) for v in runs.values()), "results": summary,
           "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform(), "loadavg_at_end": list(os.getloadavg()),
                       "note": "CPU shared with other jobs during the run; see loadavg_before_after per run"}}
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
