"""Wall-clock per env step: our SAC loop against Stable-Baselines3 SAC, same task, same run.

Both learners use the same hyperparameters (UTD 1, batch 256, 256x256 MLPs, lr 3e-4,
gamma 0.99, tau 0.005, automatic entropy tuning, 2 critics, same warm-up), the same
env (built by our training code, observations flattened the same way for SB3), and
the same number of env steps. We time the learning phase only (after the random
warm-up), where every env step also costs one gradient step.

SB3 is measured twice: with PyTorch's default thread count (what a user gets) and
with one thread (what our config uses), so the ratio is not just a thread setting.

    uv run python benchmarks/sac_speed.py                    # panda_reach, 6000 steps
    uv run python benchmarks/sac_speed.py --task metaworld_reach --steps 4000
Writes benchmarks/results/sac_speed_<task>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from common.spec import flatten_state
from policies.config import compose
from policies.train import make_env, run

RESULTS = Path(__file__).resolve().parent / "results"
# PyTorch's default thread count, read before any of our runs sets its own (run() does).
DEFAULT_THREADS = torch.get_num_threads()


class FlatObs(gym.ObservationWrapper):
    """Dict observation -> the same flat float32 vector our agent sees."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.spec_ = env.unwrapped.embodiment
        dim = self.spec_.state_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    def observation(self, observation: dict) -> np.ndarray:
        return flatten_state(self.spec_, observation)


# Our variants: the default (fp32, one torch thread); both cores for torch (SB3's default
# here); bf16 matmuls (fp32 weights, optimiser and losses); and the env stepping in its
# own process while the gradient update runs (overlap_env_step + vector_mode=async).
OVERLAP = ["overlap_env_step=true", "vector_mode=async"]
OURS = {
    "ours fp32 1 thread (default)": [],
    "ours fp32 2 threads": ["torch_threads=2"],
    "ours fp32 1 thread + env overlap": OVERLAP,
    "ours bf16 2 threads": ["agent.precision=bf16", "torch_threads=2"],
    "ours bf16 1 thread + env overlap": ["agent.precision=bf16", *OVERLAP],
    # the same with autograd instead of the hand-written gradients (policies/fused.py)
    "ours bf16 1 thread + env overlap, autograd": ["agent.precision=bf16", *OVERLAP, "agent.backward=autograd"],
    # ... and the learner pinned to one CPU, the env worker to the other
    "ours bf16 1 thread + env overlap, pinned": ["agent.precision=bf16", *OVERLAP, "pin_cpus=true"],
}


def fresh(fn, *args):
    """``fn(*args)`` in a new process: every learner starts from the same state (thread pools,
    allocator, CPU affinity), whatever ran before it in this script."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # (not multiprocessing.Pool: its workers are daemons, which may not start env subprocesses)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def ours(task: str, steps: int, warmup: int, seed: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([
            f"task={task}", f"seed={seed}", f"total_steps={steps}", f"warmup_steps={warmup}",
            "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false", "progress=false",
            f"log_every={max(100, (steps - warmup) // 20)}", f"run_dir={tmp}/run", *overrides,
        ])
        result = run(cfg)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train" and r["step"] > warmup]
    # Learning-phase rate: from the first log row after warm-up to the last one.
    (s0, t0), (s1, t1) = (train[0]["step"], train[0]["wall_time"]), (train[-1]["step"], train[-1]["wall_time"])
    return {"learn_steps_per_s": (s1 - s0) / (t1 - t0), "total_wall_s": result["wall_time_s"],
            "overrides": overrides}


def sb3(task: str, steps: int, warmup: int, seed: int, threads: int | None) -> dict:
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class Clock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.marks: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            if self.num_timesteps > warmup:
                self.marks.append((self.num_timesteps, time.perf_counter()))
            return True

    before = torch.get_num_threads()
    torch.set_num_threads(threads or DEFAULT_THREADS)
    try:
        env = FlatObs(make_env(compose([f"task={task}"]).task))
        model = SB3SAC(
            "MlpPolicy", env, learning_rate=3e-4, buffer_size=steps, learning_starts=warmup, batch_size=256,
            tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, ent_coef="auto",
            policy_kwargs={"net_arch": [256, 256]}, device="cpu", seed=seed, verbose=0,
        )
        clock = Clock()
        t = time.perf_counter()
        model.learn(total_timesteps=steps, callback=clock, progress_bar=False)
        wall = time.perf_counter() - t
        env.close()
    finally:
        torch.set_num_threads(before)
    (s0, t0), (s1, t1) = clock.marks[0], clock.marks[-1]
    return {"learn_steps_per_s": (s1 - s0) / (t1 - t0), "total_wall_s": wall,
            "torch_threads": threads or DEFAULT_THREADS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="panda_reach")
    ap.add_argument("--steps", type=int, default=6000, help="env steps per learner, warm-up included")
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME",
                    help="run only our variants whose name contains one of these words (SB3 always runs)")
    ap.add_argument("--tag", default="", help="suffix of the results file (a repeat keeps the full table)")
    args = ap.parse_args()

    print(f"SAC wall-clock on {args.task}: {args.steps} env steps ({args.warmup} random warm-up), "
          f"UTD 1, batch 256, 256x256, {DEFAULT_THREADS} default torch threads")
    results: dict = {"task": args.task, "steps": args.steps, "warmup": args.warmup, "runs": {}}
    runs = results["runs"]
    for name, overrides in OURS.items():
        if args.only and not any(w in name for w in args.only):
            continue
        runs[name] = fresh(ours, args.task, args.steps, args.warmup, args.seed, overrides)
        print(f"  {name}: {runs[name]['learn_steps_per_s']:.1f} steps/s", flush=True)
    sb3_default = f"sb3 default ({DEFAULT_THREADS} threads)"
    runs[sb3_default] = fresh(sb3, args.task, args.steps, args.warmup, args.seed, None)
    runs["sb3 1 thread"] = fresh(sb3, args.task, args.steps, args.warmup, args.seed, 1)

    peer = runs[sb3_default]["learn_steps_per_s"]
    print(f"{'learner':<46}{'steps/s (learning)':>20}{'ms/step':>10}{'x SB3 default':>15}")
    for name, r in runs.items():
        sps = r["learn_steps_per_s"]
        r["ratio_vs_sb3_default"] = sps / peer
        print(f"{name:<46}{sps:>20.1f}{1000 / sps:>10.2f}{sps / peer:>15.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"sac_speed_{args.task}{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
