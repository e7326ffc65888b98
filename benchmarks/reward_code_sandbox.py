"""Sandbox throughput and candidate-scoring cost: `uv run --frozen python benchmarks/reward_code_sandbox.py`.

1. Transitions/s scored by a typical reward program (the HAND-WRITTEN Panda reach example) in the
   sandbox worker, per batch size, against calling the same function in this process (exec'd here,
   which the sandbox exists to avoid; done only to measure the overhead).
2. The cost of scoring one candidate on the shared logged buffer (expert, noisy, random rollouts:
   no env steps, no gradient steps) against one full SAC run of the task's default budget, whose
   wall time comes from benchmarks/results/sac_speed_panda_reach.json (learn steps/s on this machine).
Writes benchmarks/results/reward_code_sandbox.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rewards.code.checks import run_checks
from rewards.code.generate import logged_rollouts
from rewards.code.sandbox import Sandbox, SandboxLimits
from rewards.code.view import build_view

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = (ROOT / "rewards/code/examples/panda_reach_handwritten.py").read_text()


def batch(b: int, rng: np.random.Generator) -> tuple[dict, np.ndarray, dict]:
    obs = {"ee_pos": rng.uniform(0, 1, (b, 3)), "goal_pos": rng.uniform(0, 1, (b, 3)),
           "joint_pos": rng.uniform(0, 1, (b, 7)), "joint_vel": rng.uniform(0, 1, (b, 7))}
    return obs, rng.uniform(-1, 1, (b, 4)), obs


def timeit(fn, min_s: float = 1.0) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def main() -> None:
    rng = np.random.default_rng(0)
    glb: dict = {}
    exec(compile(PROGRAM, "example", "exec"), glb)  # noqa: S102 - in-process baseline for the benchmark only
    fn = glb["compute_reward"]
    rows = []
    with Sandbox(SandboxLimits()) as sb:
        sb.load(PROGRAM)
        for b in (64, 256, 4096, 65536):
            o, a, n = batch(b, rng)
            t_sb = timeit(lambda o=o, a=a, n=n: sb(o, a, n))
            t_in = timeit(lambda o=o, a=a, n=n: fn(o, a, n))
            rows.append({"batch": b, "sandbox_transitions_per_s": b / t_sb, "inprocess_transitions_per_s": b / t_in,
                         "sandbox_ms_per_call": 1e3 * t_sb, "inprocess_ms_per_call": 1e3 * t_in,
                         "overhead_ms_per_call": 1e3 * (t_sb - t_in)})
            print(f"batch {b:6d}: sandbox {b / t_sb:12.0f} tr/s ({1e3 * t_sb:7.3f} ms/call)   in-process "
                  f"{b / t_in:12.0f} tr/s ({1e3 * t_in:7.3f} ms/call)   overhead {1e3 * (t_sb - t_in):7.3f} ms/call")
    t0 = time.perf_counter()
    with Sandbox(SandboxLimits()) as sb:
        sb.load(PROGRAM)
        start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    episodes, spec = logged_rollouts("rewardforge/PandaReach-v0", episodes=4, noise=(0.3, 0.6), seed=0)
    roll_s = time.perf_counter() - t0
    view = build_view(spec)
    t0 = time.perf_counter()
    with Sandbox(SandboxLimits()) as sb:
        sb.load(PROGRAM)
        rep = run_checks(sb, episodes, view)
    cand_s = time.perf_counter() - t0
    sac = json.loads((ROOT / "benchmarks/results/sac_speed_panda_reach.json").read_text())
    lps = sac["runs"]["ours fp32 1 thread (default)"]["learn_steps_per_s"]
    full_steps = 20000  # configs/task/panda_reach.yaml total_steps
    full_s = full_steps / lps
    cost = {"candidate_seconds (worker start + load + checks + score)": cand_s, "worker_start_seconds": start_s,
            "shared_buffer_transitions": sum(len(e.batch) for e in episodes),
            "shared_buffer_rollout_seconds (once for all candidates)": roll_s,
            "full_run_seconds_estimate": full_s, "full_run_env_steps": full_steps,
            "ratio_candidate_to_full_run": cand_s / full_s, "candidate_score": rep.score, "passed": rep.passed}
    print(f"candidate scoring: {cand_s:.2f} s per candidate on {cost['shared_buffer_transitions']} logged transitions "
          f"(shared rollouts {roll_s:.1f} s once) vs a full SAC run ~{full_s:.0f} s ({full_steps} steps at "
          f"{lps:.1f} learn steps/s): ratio {cand_s / full_s:.4f}")
    out = ROOT / "benchmarks/results/reward_code_sandbox.json"
    out.write_text(json.dumps({"throughput": rows, "candidate_scoring": cost}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
