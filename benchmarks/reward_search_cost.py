"""Candidate-scoring cost: one short SAC fine-tune from the shared start vs one full run of the task's budget.

    uv run --frozen python benchmarks/reward_search_cost.py [--quick]

1. Builds the shared start of ``policies/reward_search.py`` (scripted-expert/noisy/random rollouts + BC) once.
2. Fine-tunes the HAND-WRITTEN Panda reach example program from it with the config's default budget
   (configs/reward_search.yaml ``finetune.*``), measuring env steps, gradient steps and seconds.
3. Measures the full run's training speed for a short while (``--full-probe`` env steps of the ordinary
   training loop with the task's default agent, after its warm-up, i.e. while learning) and EXTRAPOLATES the
   wall time of the task's whole budget from it: budget / measured steps/s (said so in the output).
Writes benchmarks/results/reward_search_cost.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "rewards/code/examples/panda_reach_handwritten.py"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="panda_reach")
    p.add_argument("--full-probe", type=int, default=1500, help="learning env steps measured for the full-run speed")
    p.add_argument("--quick", action="store_true", help="smaller fine-tune budget (a smoke run)")
    args = p.parse_args()
    from policies.reward_search import FinetuneScorer, compose, train_config
    from policies.train import run
    from rewards.code.store import ProgramStore
    from rewards.code.view import build_view

    tmp = Path(tempfile.mkdtemp(prefix="reward_search_cost_"))
    quick = ["finetune.bc_steps=300", "finetune.critic_steps=300", "finetune.offline_steps=200",
             "finetune.env_steps=200", "finetune.eval_episodes=3"] if args.quick else []
    cfg = compose([f"train_task={args.task}", f"output_dir={tmp}", f"store={tmp / 'store'}", *quick])
    store = ProgramStore(cfg.store)
    pid = store.add(PROGRAM.read_text(), origin="hand-written")
    scorer = FinetuneScorer(cfg, store, tmp)
    start = scorer.shared_start()
    res = scorer.finetune(pid, build_view(start.spec))
    per = res.cost
    base = train_config(cfg)
    budget = int(base.total_steps)
    warm = int(base.warmup_steps)
    # the full run's speed while learning: warm-up (random actions, no updates) then args.full_probe learning steps
    probe = run(train_config(cfg, (), [f"total_steps={warm + args.full_probe}", "eval_every=0", "eval_episodes=1",
                                       "checkpoint_every=0", "video=false", "progress=false", "resume=false",
                                       f"log_every={args.full_probe}", f"run_dir={tmp / 'probe'}"]))
    rows = [json.loads(x) for x in (Path(probe["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    learn_sps = [r["steps_per_s"] for r in rows if r.get("kind") == "train" and r["step"] > warm][-1]
    warm_sps = [r["steps_per_s"] for r in rows if r.get("kind") == "train" and r["step"] <= warm]
    full_s = (budget - warm) / learn_sps + (warm / warm_sps[-1] if warm_sps else 0.0)
    full = {"env_steps": budget, "gradient_steps": (budget - warm) * int(base.agent.utd), "seconds": full_s,
            "measured_learning_steps_per_s": learn_sps, "note": f"seconds extrapolated from {args.full_probe} "
            f"learning steps at {learn_sps:.1f} steps/s (plus the warm-up at its own speed), not a full run"}
    ratio = {k: per[k] / full[k] for k in ("env_steps", "gradient_steps", "seconds")}
    shared = start.cost
    out = {"task": args.task, "config": {k: v for k, v in dict(cfg.finetune).items()}, "quick": args.quick,
           "per_candidate": per, "candidate_eval": res.details, "shared_start_once": shared, "full_run": full,
           "ratio_candidate_to_full_run": ratio}
    print(f"shared start (once per search): {shared['env_steps']} env steps, {shared['gradient_steps']} BC steps, "
          f"{shared['seconds']:.1f} s")
    print(f"per candidate: {per['env_steps']} env steps ({per['online_env_steps']} online), {per['gradient_steps']} "
          f"gradient steps, {per['seconds']:.1f} s (relabel {per['relabel_seconds']:.2f} s of "
          f"{per['relabelled_transitions']} transitions); eval success {res.details['success_rate']:.2f}")
    print(f"full run ({args.task} budget): {budget} env steps, {full['gradient_steps']} gradient steps, ~{full_s:.0f} s "
          f"({full['note']})")
    print("ratio candidate / full run: " + ", ".join(f"{k} {v:.4f}" for k, v in ratio.items()))
    dst = ROOT / "benchmarks/results/reward_search_cost.json"
    dst.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
