"""RLPD with scripted demonstrations against SAC from scratch, and training with scripted
interventions against without: same task, same budget, several seeds.

1. Records ``--demos`` scripted-expert episodes of the task once (``sim.record``; the project's
   episode format), seeded apart from the evaluation seeds; with ``--demos-per-seed``, a set for
   each training seed.
2. Trains, per seed, SAC from scratch (``agent=sac``) and RLPD (``agent=rlpd demos=<dataset>``:
   half of every batch from the demonstrations, 10 LayerNorm critics, UTD from its config) at the
   same env-step budget, evaluating every ``--eval-every`` steps with the env's own success flag.
3. Reports per method the median and IQM success curves over seeds (stratified-bootstrap CI,
   rliable), the first step where the median reaches ``--target`` (0.8), and the ratio RLPD steps / SAC steps
   (target: <= 1/3, or SAC never reaching it within a budget of 3x that step). Each run's final
   policy is then re-evaluated on ``--final-episodes`` (50) fresh episodes, and the target counts as
   met only if their median holds it too: the training-time evaluations replay the same 10 seeded
   episodes, and one lucky evaluation of those once read 0.8 where 50 fresh episodes gave 0.5.
   Block tasks also report the final successes per goal family (``goal_kind``: on the table or raised).
4. With ``--methods sac sac+interventions`` (or ``rlpd rlpd+interventions``): the same with a
   scripted person who takes over when progress stalls (``intervention.enabled=true``,
   sim/intervention.py; their steps also join the demonstration side of each batch). Target:
   success rises faster with them; reported as the mean of the median curve over the evaluations
   (area under the curve / budget) and the first step at the target.

    uv run --frozen python benchmarks/rlpd_demos.py --task panda_pick_place --demos 20 --steps 100000 --seeds 0 1 2
    # the recipe measured in the README: BC first, a BC term in the actor loss, SAC given 3x the budget
    uv run --frozen python benchmarks/rlpd_demos.py --task panda_pick_place --steps 20000 --sac-steps 60000 \
        --eval-every 2500 --rlpd agent.utd=2 agent.critic_ensemble=2 agent.bc_weight=2 bc_steps=5000
    uv run --frozen python benchmarks/rlpd_demos.py --task panda_push --methods sac sac+interventions --steps 100000
Costly on a CPU: RLPD's UTD 20 with 10 critics is about 100x the critic arithmetic of SAC per
env step (3 env steps/s measured here on pick-and-place with other jobs running, i.e. a day per
100k-step seed); ``--rlpd agent.utd=2 agent.critic_ensemble=2`` keeps RLPD's symmetric sampling
and LayerNorm critics (what its ablations found essential) at a cost a CPU can pay. Writes benchmarks/results/rlpd_<task>_<steps>.json.
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
# Each method's overrides; {demos} is the recorded dataset.
METHODS = {
    "sac": ["agent=sac"],
    "rlpd": ["agent=rlpd", "demos={demos}"],
    "sac+interventions": ["agent=sac", "intervention.enabled=true"],
    "rlpd+interventions": ["agent=rlpd", "demos={demos}", "intervention.enabled=true"],
}


DEMO_SEED = 50_000  # the scripted demonstrations' first episode seed (apart from every evaluation's)


def demo_seed(train_seed: int, per_seed: bool) -> int:
    """First episode seed of the demos a training seed learns from: one shared set (DEMO_SEED), or
    with ``--demos-per-seed`` a set of each seed's own (DEMO_SEED + 1000 x seed), so the median over
    seeds also spans demo sets (clones of different 20-demo sets scored 0.44-0.72, README)."""
    return DEMO_SEED + 1000 * train_seed if per_seed else DEMO_SEED


def record_demos(task: str, episodes: int, out: Path, after_success: int | None = None, seed: int = DEMO_SEED) -> Path:
    if (out / "meta" / "info.json").exists():
        return out
    from sim.record import compose, record

    cfg, choice = compose([f"task={task}", f"episodes={episodes}", f"out={out}", f"seed={seed}",
                           f"after_success={'null' if after_success is None else after_success}"])
    record(cfg, choice)
    return out


FINAL_EVAL_SEED = 7_000_000  # the final re-evaluation's episodes, apart from training's evaluation seeds


STAGES = ("never grasped", "grasped, not lifted", "lifted, not placed", "success")


def episode_stage(env, success: bool, stage: int) -> int:
    """Furthest stage of a block task reached so far (an index into STAGES), updated after a step:
    where the failures of a policy end is what says what to fix (measured on pick-and-place: RL made
    the approach overshoot the block by 3-5 cm, a failure that success rates alone do not show).
    Envs without a graspable block only tell success from failure (0 or 3)."""
    if success:
        return 3
    u = env.unwrapped
    if not hasattr(u, "grasped") or not u.grasped():
        return stage
    return max(stage, 2 if u.lifted(grasped=True) else 1)


def goal_kind(env) -> str | None:
    """Which of a block task's two goal families the episode's goal is from: "table" (on the table,
    20% of pick-and-place goals) or "raised"; None for tasks without a block goal. Measured: the
    pick-and-place policies fail mostly on table goals (about 0.5 success there, 0.85 on raised ones),
    so an overall rate hides which family to fix, and which one a demo set is short of."""
    u = env.unwrapped
    if not hasattr(u, "block_half") or not hasattr(u, "goal"):
        return None
    return "table" if float(u.goal[2]) < u.block_half + 0.01 else "raised"


def final_success(run_dir: Path, task_cfg, episodes: int) -> tuple[float, dict[str, int], dict[str, float],
                                                                    dict[str, list[int]]]:
    """Success rate of a run's final deterministic policy on ``episodes`` fresh episodes, how many
    episodes ended at each of STAGES, and for an IBRL policy (agent.ibrl) each of its two proposals
    alone on the same episodes ({"clone": .., "actor": ..}: does choosing by Q beat the clone?).
    The training-time evaluations replay the same few seeded episodes at every step, which is too
    few to judge an 80% target (measured: 0.8 on the 10 replayed episodes, 0.5 on 50 fresh ones).
    The fourth value is [successes, episodes] per goal_kind (empty for tasks without one).
    Success counts at any step, as in training."""
    from policies.checkpoint import load_policy
    from policies.networks import ProposalSelector
    from policies.policy import Policy
    from policies.train import evaluate, make_env

    policy = load_policy(run_dir / "checkpoints" / "final.pt")
    env = make_env(task_cfg)
    stages: dict[int, int] = {}
    kinds: dict[int, str | None] = {}

    def track(ep: int, info: dict) -> None:
        if ep not in kinds:  # the first call per episode follows its reset; the goal stays put after
            kinds[ep] = goal_kind(env)
        stages[ep] = episode_stage(env, bool(info.get("success", False)), stages.get(ep, 0))

    def success_of(p: Policy, on_step=None) -> float:
        return evaluate(lambda o: p(o)[None], env, p.embodiment, episodes, FINAL_EVAL_SEED,
                        prepare=lambda o: o, on_step=on_step)[0]

    try:
        success = success_of(policy, track)
        parts = {}
        if isinstance(policy.actor, ProposalSelector):
            for name, net in (("clone", policy.actor.reference), ("actor", policy.actor.actor)):
                parts[name] = success_of(Policy(net, policy.embodiment, config=policy.config))
    finally:
        env.close()
    counts = {name: sum(stages[ep] == i for ep in stages) for i, name in enumerate(STAGES)}
    return success, counts, parts, tally_by_goal(kinds, stages)


def tally_by_goal(kinds: dict[int, str | None], stages: dict[int, int]) -> dict[str, list[int]]:
    """[successes, episodes] per goal kind, from each episode's goal_kind and furthest stage."""
    by_goal: dict[str, list[int]] = {}
    for ep, kind in kinds.items():
        if kind is not None:
            tally = by_goal.setdefault(kind, [0, 0])
            tally[0] += int(stages[ep] == STAGES.index("success"))
            tally[1] += 1
    return by_goal


def _train_one(args: tuple[str, str, int, int, int, str, list[str], str, list[str], list[str], int]) -> dict:
    task, method, seed, steps, eval_every, demos, extra, run_root, rlpd_extra, person_extra, final_episodes = args
    from policies.config import compose
    from policies.train import run

    run_dir = Path(run_root) / task / method / f"seed{seed}"
    overrides = [f"task={task}", f"seed={seed}", f"total_steps={steps}", f"eval_every={eval_every}",
                 "progress=false", "video=false", f"run_dir={run_dir}", "resume=true"]
    overrides += [o.format(demos=demos) for o in METHODS[method]]
    if method.startswith("rlpd"):
        overrides += rlpd_extra
    if method.endswith("+interventions"):
        overrides += person_extra
    cfg = compose([*overrides, *extra])
    result = run(cfg)
    final, stages, parts, by_goal = (final_success(run_dir, cfg.task, final_episodes) if final_episodes
                                     else (None, None, {}, {}))
    return {"method": method, "seed": seed, "eval_curve": result["eval_curve"], "final_success": final,
            "final_stages": stages, "final_proposals": parts, "final_by_goal": by_goal,
            "train_curve": train_curve(run_dir / "metrics.jsonl", eval_every)}


def train_curve(metrics: Path, every: int) -> list[tuple[int, float, float]]:
    """(end step, success rate of the training episodes, share of steps a person drove) per block of
    ``every`` env steps: what happened while training, the person's help included (the evaluations
    show the policy alone)."""
    episodes = [r for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == "episode"]
    out = []
    for end in range(every, max((e["step"] for e in episodes), default=0) + every, every):
        block = [e for e in episodes if end - every < e["step"] <= end]
        if block:
            driven = sum(e.get("intervention_steps", 0) for e in block) / sum(e["episode_length"] for e in block)
            out.append((end, float(np.mean([e["success"] for e in block])), float(driven)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="panda_pick_place")
    ap.add_argument("--demos", type=int, default=20, help="scripted-expert demonstrations (issue: 10-20)")
    ap.add_argument("--demos-after-success", type=int, default=None, metavar="K",
                    help="end each demo K steps after its first success (rewardforge-record after_success; "
                         "default: at the time limit)")
    ap.add_argument("--demos-per-seed", action="store_true",
                    help="each training seed records and learns from its own demo set (seed 50000 + 1000 x seed) "
                         "instead of all sharing the one from seed 50000")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--sac-steps", type=int, default=None,
                    help="budget of the sac methods when it differs from --steps (e.g. 3x RLPD's, for the 1/3 target)")
    ap.add_argument("--eval-every", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--methods", nargs="+", default=["rlpd", "sac"], choices=list(METHODS))
    ap.add_argument("--run-root", default="runs/bench/rlpd_demos",
                    help="runs are resumed from here: give a new root when the recipe or the demos change")
    ap.add_argument("--rlpd", nargs="+", default=[], metavar="OVERRIDE",
                    help="Hydra overrides for the rlpd methods only, e.g. --rlpd agent.utd=4 agent.critic_ensemble=4")
    ap.add_argument("--eval-episodes", type=int, default=10, help="episodes per training-time evaluation")
    ap.add_argument("--final-episodes", type=int, default=50,
                    help="fresh episodes for re-evaluating each run's final policy (0: skip)")
    ap.add_argument("--person", nargs="+", default=[], metavar="OVERRIDE",
                    help="Hydra overrides for the +interventions methods only, e.g. --person agent.bc_weight=2")
    ap.add_argument("--tag", default="", help="appended to the JSON's name (--rlpd overrides are not in it), "
                                               "e.g. --tag cloning-only")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for both methods, after --")
    args = ap.parse_args()

    needs_demos = any("{demos}" in o for m in args.methods for o in METHODS[m])
    demos_dir = "demos" if args.demos_after_success is None else f"demos_after_success{args.demos_after_success}"
    demos: dict[int, str] = {}
    for seed in args.seeds if needs_demos else ():
        first = demo_seed(seed, args.demos_per_seed)
        where = Path(args.run_root) / args.task / (demos_dir if first == DEMO_SEED else f"{demos_dir}_seed{first}")
        demos[seed] = str(record_demos(args.task, args.demos, where, args.demos_after_success, first))

    def budget(method: str) -> int:
        return args.sac_steps if args.sac_steps and method.startswith("sac") else args.steps

    jobs = [(args.task, m, s, budget(m), args.eval_every, demos.get(s, ""), [f"eval_episodes={args.eval_episodes}", *args.overrides],
             args.run_root, args.rlpd, args.person, args.final_episodes)
            for s in args.seeds for m in args.methods]
    t0 = time.perf_counter()
    # worker processes that may start env subprocesses (vector_mode=async): not Pool's daemons
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        runs = list(pool.map(_train_one, jobs))
    summary: dict = {"task": args.task, "methods": args.methods, "demos": args.demos if needs_demos else 0,
                     "demos_per_seed": args.demos_per_seed,
                     "demos_after_success": args.demos_after_success,
                     "budget": args.steps, "sac_budget": budget("sac"), "seeds": args.seeds,
                     "target": args.target, "overrides": args.overrides, "rlpd_overrides": args.rlpd, "person_overrides": args.person, "wall_s": time.perf_counter() - t0}
    for method in args.methods:
        mine = [r for r in runs if r["method"] == method]
        steps = sorted({s for r in mine for s, _, _ in r["eval_curve"]})
        curve = []
        for st in steps:
            vals = np.array([dict((s, v) for s, v, _ in r["eval_curve"]).get(st, np.nan) for r in mine])
            if not np.isnan(vals).any():
                iqm, lo, hi = iqm_with_ci(vals)
                curve.append({"step": st, "median": float(np.median(vals)), "iqm": iqm, "ci_low": lo, "ci_high": hi,
                              "per_seed": vals.tolist()})
        # The statistic is the median over seeds (with 3 seeds the IQM is their plain mean).
        blocks = sorted({st for r in mine for st, _, _ in r["train_curve"]})
        train = []
        for st in blocks:
            vals = [dict((b, (x, y)) for b, x, y in r["train_curve"]).get(st) for r in mine]
            if all(v is not None for v in vals):
                train.append({"step": st, "success_median": float(np.median([v[0] for v in vals])),
                              "person_share_median": float(np.median([v[1] for v in vals]))})
        summary[method] = {"curve": curve, "train_curve": train, "mean_iqm": float(np.mean([c["iqm"] for c in curve])) if curve else None,
                           "mean_median": float(np.mean([c["median"] for c in curve])) if curve else None,
                           "first_step_at_target": next((c["step"] for c in curve if c["median"] >= args.target), None)}
        finals = [r["final_success"] for r in mine if r["final_success"] is not None]
        if finals:
            stages = [r["final_stages"] for r in mine if r["final_stages"] is not None]
            summary[method].update(final_success=finals, final_median=float(np.median(finals)),
                                   final_episodes=args.final_episodes,
                                   final_stages={k: sum(st[k] for st in stages) for k in STAGES})
            goals = [r["final_by_goal"] for r in mine if r.get("final_by_goal")]
            if goals:  # per seed, per goal family: [successes, episodes]
                summary[method]["final_by_goal"] = {k: [g[k] for g in goals] for k in goals[0]}
            parts = [r["final_proposals"] for r in mine if r.get("final_proposals")]
            if parts:  # IBRL: each proposal alone on the same fresh episodes
                summary[method]["final_proposals"] = {k: [p[k] for p in parts] for k in parts[0]}
        print(f"{method} (median over seeds): " + ", ".join(f"{c['step'] / 1000:g}k {c['median']:.2f}" for c in curve))
        if finals:
            print(f"  final policy on {args.final_episodes} fresh episodes: median {np.median(finals):.2f} "
                  f"(per seed {', '.join(f'{f:.2f}' for f in finals)}); episodes ended at: "
                  + ", ".join(f"{k} {v}" for k, v in summary[method]["final_stages"].items()))
        for kind, tallies in summary[method].get("final_by_goal", {}).items():
            print(f"  {kind} goals: " + ", ".join(f"{k}/{n}" for k, n in tallies) + " successes (per seed)")
        for name, vals in summary[method].get("final_proposals", {}).items():
            print(f"  {name} alone on the same episodes: median {np.median(vals):.2f} "
                  f"(per seed {', '.join(f'{v:.2f}' for v in vals)})")
        print("  training episodes (success, person's share): "
              + ", ".join(f"{t['step'] / 1000:g}k {t['success_median']:.2f}/{t['person_share_median']:.2f}" for t in train))
    if {"rlpd", "sac"} <= set(args.methods):
        r_at, s_at = summary["rlpd"]["first_step_at_target"], summary["sac"]["first_step_at_target"]
        # SAC never getting there counts only if its budget was at least 3x RLPD's step at the target;
        # and the final policies on fresh episodes must hold the target (one lucky evaluation of a
        # few replayed episodes is not enough)
        met = r_at is not None and (r_at <= s_at / 3 if s_at is not None else r_at <= budget("sac") / 3)
        if "final_median" in summary["rlpd"]:
            met = met and summary["rlpd"]["final_median"] >= args.target
        summary["ratio"] = None if r_at is None or s_at is None else r_at / s_at
        summary["met"] = met
        sac_at = s_at if s_at is not None else f"not within {budget('sac')}"
        print(f"first step at median >= {args.target}: RLPD {r_at}, SAC {sac_at}"
              f" -> target (RLPD <= 1/3 of SAC) {'met' if met else 'not met'}")
    for base in ("sac", "rlpd"):
        with_i = f"{base}+interventions"
        if {base, with_i} <= set(args.methods) and summary[base]["curve"] and summary[with_i]["curve"]:
            a, b = summary[with_i]["mean_median"], summary[base]["mean_median"]
            summary[f"{with_i}_faster"] = a > b
            print(f"mean of the median success over the evaluations: {with_i} {a:.2f} vs {base} {b:.2f} -> "
                  f"{'rises faster' if a > b else 'not faster'} with interventions")
    RESULTS.mkdir(exist_ok=True)
    tag = "" if args.methods == ["rlpd", "sac"] else "_" + "_".join(m.replace("+", "-") for m in args.methods)
    tag += "".join(f"_{o.split('.')[-1].replace('=', '-')}" for o in args.overrides)  # as sac_success.py
    tag += "".join(f"_person-{o.split('.')[-1].replace('=', '-')}" for o in args.person)
    tag += "" if args.demos_after_success is None else f"_demos-after-success-{args.demos_after_success}"
    tag += "_demos-per-seed" if args.demos_per_seed else ""
    tag += f"_{args.tag}" if args.tag else ""
    out = RESULTS / f"rlpd_{args.task}_{args.steps}{tag}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
