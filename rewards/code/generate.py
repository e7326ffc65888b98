"""Generate -> check -> score -> refine: the reward-program loop, and its command line.

``rewardforge-reward-gen`` (console script ``rewards.code.generate:main``)::

    rewardforge-reward-gen gen --task rewardforge/PandaReach-v0 --base-url http://127.0.0.1:8000/v1 \
        --model my-model --api-key-env OPENAI_API_KEY --samples 4 --rounds 3 [--feedback "..."|--feedback-file f]
    rewardforge-reward-gen refine --program 0003-1a2b3c4d --feedback-file notes.txt --rounds 1
    rewardforge-reward-gen list | show ID | diff ID_A ID_B       (all take --store DIR)

Each round asks the endpoint for ``samples`` completions, extracts the code, applies the
static whitelist, loads survivors into a sandbox worker and runs the execution checks and
the cheap relabelling score on one shared set of logged rollouts (expert, noisy expert,
random). Every candidate, rejected or not, goes into the program store with its prompt,
model, parameters, parent, round, check results and score. The next round refines the
best candidate so far (or, if none passed, the best-scoring rejected one) from its
reflection text, the other candidates' rejection reasons and, when given, a person's
feedback. The best passing program's id is printed: put it in ``reward.params.program``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rewards.code.checks import CheckReport, CheckSettings, reflection, run_checks
from rewards.code.prompts import extract_code, first_prompt, refine_prompt
from rewards.code.sandbox import Sandbox, SandboxLimits
from rewards.code.static import check_source
from rewards.code.store import ProgramStore
from rewards.code.view import TaskView, build_view
from rewards.openai_client import ChatClient, LLMError

log = logging.getLogger(__name__)


@dataclass
class GenConfig:
    """Every knob of the loop (the command line sets them; ``configs/reward/code.yaml`` ``gen`` documents them)."""

    task: str = "rewardforge/PandaReach-v0"
    task_text: str | None = None  # null: the built-in text for the task
    samples: int = 4  # completions per round
    rounds: int = 2
    episodes: int = 2  # logged rollouts per policy type (expert, noisy, random) for the checks
    noise: tuple[float, ...] = (0.3,)
    seed: int = 0
    examples: tuple[str, ...] = ()  # paths of hand-written example programs shown in the prompt
    feedback: str | None = None  # a person's written feedback, used from round 2 on
    checks: CheckSettings = field(default_factory=CheckSettings)
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)


@dataclass
class Candidate:
    id: str
    round: int
    sample: int
    source: str | None
    passed: bool
    score: float | None  # the relabelling score of the checks (no training)
    reasons: list[str]
    report: CheckReport | None = None
    fine_score: float | None = None  # the scorer's score (e.g. success after a short fine-tune), when one ran
    feedback: str | None = None  # the scorer's reflection text (training statistics, failed episodes)
    scored: dict[str, Any] | None = None  # the scorer's details and cost, as stored


@dataclass
class ScoreResult:
    """What a scorer (``run_loop(scorer=...)``) says about one passing candidate."""

    score: float  # higher is better; ranks the candidates that the scorer scored above those it did not
    feedback: str = ""  # text for the refine prompt: training statistics, summaries of failed episodes
    details: dict[str, Any] = field(default_factory=dict)  # stored under the program's scores["finetune"]
    cost: dict[str, Any] = field(default_factory=dict)  # env_steps, gradient_steps, seconds spent on it


# scorer(passing candidates of a round, the task view) -> {candidate id: ScoreResult}; may leave some out.
# The training code provides one (policies.reward_search.FinetuneScorer); rewards/ never imports it.
Scorer = Callable[[Sequence[Candidate], TaskView], Mapping[str, ScoreResult]]


def rank_key(c: Candidate) -> tuple[int, float, float]:
    """Order of merit: scored by the scorer first (by its score), then by the relabelling score."""
    return (c.fine_score is not None, c.fine_score if c.fine_score is not None else -9.0,
            c.score if c.score is not None else -9.0)


@dataclass
class LoopResult:
    candidates: list[Candidate]
    best: str | None  # id of the best passing program
    seconds: dict[str, float]
    cost: dict[str, Any]


def logged_rollouts(task: str, episodes: int, noise: Sequence[float], seed: int) -> tuple[list[Any], Any]:
    """The shared buffer every candidate is checked and scored on, and the task's spec."""
    import sim
    from rewards.evaluate import collect, make_policies

    env = sim.make(task)
    try:
        pols = make_policies(env, expert=True, noise=tuple(noise), random=True, seed=seed)
        eps = collect(env, pols, episodes, seed=seed, progress=False)
        return eps, env.unwrapped.embodiment
    finally:
        env.close()


def evaluate_source(source: str, episodes: Sequence[Any], view: TaskView, cfg: GenConfig,
                    sandbox: Sandbox | None = None) -> tuple[bool, list[str], CheckReport | None]:
    """Static checks, then load + execution checks in a sandbox (a fresh one unless given)."""
    st = check_source(source)
    if not st.ok:
        return False, [f"static check: {r}" for r in st.reasons], None
    own = sandbox is None
    sb = sandbox or Sandbox(cfg.sandbox)
    try:
        try:
            sb.load(source)
        except Exception as e:  # noqa: BLE001 - any failure to load is a reason, not a crash
            return False, [f"loading the program failed ({getattr(e, 'kind', 'error')}): {e}"], None
        rep = run_checks(sb, episodes, view, cfg.checks)
        return rep.passed, rep.reasons, rep
    finally:
        if own:
            sb.close()


def run_loop(cfg: GenConfig, client: ChatClient, store: ProgramStore, *, episodes: Sequence[Any] | None = None,
             spec: Any = None, parent: str | None = None, full_run_s: float | None = None,
             scorer: Scorer | None = None) -> LoopResult:
    """The whole loop; ``episodes``/``spec`` may be given (tests, reuse), else rolled out here.
    ``parent``: start by refining this stored program (the ``refine`` command).
    ``scorer``: called once per round on the candidates that passed the checks (e.g. short SAC
    fine-tunes, ``policies.reward_search``); its score ranks them and its feedback goes into the
    next round's prompt. Without one, the relabelling score of the checks ranks them."""
    t0 = time.perf_counter()
    if episodes is None or spec is None:
        episodes, spec = logged_rollouts(cfg.task, cfg.episodes, cfg.noise, cfg.seed)
    t_roll = time.perf_counter() - t0
    view = build_view(spec, cfg.task_text)
    view_text = view.describe()
    examples = [Path(p).read_text() for p in cfg.examples]
    cands: list[Candidate] = []
    best: Candidate | None = None
    parent_c: Candidate | None = None
    if parent is not None:
        src = store.source(parent)
        ok, reasons, rep = evaluate_source(src, episodes, view, cfg)
        parent_c = Candidate(parent, 0, 0, src, ok, rep.score if rep else None, reasons, rep)
        stored = store.meta(parent)
        parent_c.feedback = stored.get("training_reflection") or (stored.get("scores") or {}).get("feedback")
        best = parent_c if ok else None
    t_llm = t_check = t_score = 0.0
    fine_costs: list[dict[str, Any]] = []
    params = {"temperature": client.temperature, "n": cfg.samples, "max_tokens": client.max_tokens}
    for rnd in range(1, cfg.rounds + 1):
        if parent_c is None:
            messages = first_prompt(view_text, examples)
        else:
            fb = reflection(parent_c.report) if parent_c.report else "Rejected:\n" + "\n".join(
                f"- {r}" for r in parent_c.reasons)
            if parent_c.feedback:
                fb += "\n\n" + parent_c.feedback
            others = [c for c in cands if c.round == rnd - 1 and c is not parent_c and c.reasons]
            if others:
                fb += "\nOther candidates of the last round were rejected for:\n" + "\n".join(
                    f"- {r}" for c in others for r in c.reasons[:2])
            use_human = cfg.feedback if (rnd > 1 or parent is not None) else None
            messages = refine_prompt(view_text, parent_c.source or "", fb, use_human)
        t1 = time.perf_counter()
        try:
            result = client.chat(messages, n=cfg.samples)
            texts = result.texts
        except LLMError as e:
            log.error("round %d: the endpoint failed: %s", rnd, e)
            texts = []
        t_llm += time.perf_counter() - t1
        round_c: list[Candidate] = []
        for i, text in enumerate(texts):
            t2 = time.perf_counter()
            src = extract_code(text)
            if src is None:
                ok, reasons, rep = False, ["no Python code block with `def compute_reward` in the answer"], None
            else:
                ok, reasons, rep = evaluate_source(src, episodes, view, cfg)
            t_check += time.perf_counter() - t2
            pid = store.add(src if src is not None else f"# no code extracted from the completion\n# {text[:500]!r}\n",
                            origin="llm", model=client.model, base_url=client.base_url, prompt=messages,
                            completion=text, params=params, parent=parent_c.id if parent_c else None, round=rnd,
                            sample=i, task=cfg.task,
                            checks={"passed": ok, "reasons": reasons, "stats": rep.stats if rep else None},
                            scores={"score": rep.score if rep else None,
                                    "sandbox_seconds": rep.seconds if rep else None})
            c = Candidate(pid, rnd, i, src, ok, rep.score if rep else None, reasons, rep)
            round_c.append(c)
            cands.append(c)
            log.info("round %d sample %d -> %s passed=%s score=%s %s", rnd, i, pid, ok, c.score, reasons[:1])
        passing = [c for c in round_c if c.passed]
        if scorer is not None and passing:
            t3 = time.perf_counter()
            results = scorer(passing, view)
            t_score += time.perf_counter() - t3
            for c in passing:
                r = results.get(c.id)
                if r is None:
                    continue
                c.fine_score, c.feedback = float(r.score), r.feedback
                c.scored = {**r.details, "score": float(r.score), "cost": dict(r.cost), "feedback": r.feedback}
                fine_costs.append(dict(r.cost))
                meta = store.meta(c.id)
                store.update(c.id, scores={**(meta.get("scores") or {}), "finetune": c.scored})
                log.info("round %d: %s scored %.3f by the scorer", rnd, c.id, c.fine_score)
        if passing:
            top = max(passing, key=rank_key)
            if best is None or rank_key(top) > rank_key(best):
                best = top
        # refine from the best so far; if nothing passed yet, from the best-scoring candidate that ran
        ran = [c for c in cands if c.report is not None]
        parent_c = best or (max(ran, key=rank_key) if ran else
                            (round_c[0] if round_c else parent_c))
    n_trans = len(episodes) and sum(len(e.batch) for e in episodes)
    sandbox_s = [c.report.seconds for c in cands if c.report is not None]
    cost = {"transitions_per_candidate": int(n_trans), "env_steps_per_candidate": 0,
            "gradient_steps_per_candidate": 0, "sandbox_seconds_per_candidate": (sum(sandbox_s) / len(sandbox_s))
            if sandbox_s else None, "shared_rollout_seconds": t_roll, "full_run_seconds": full_run_s}
    if full_run_s and sandbox_s:
        cost["ratio_candidate_to_full_run"] = (sum(sandbox_s) / len(sandbox_s)) / full_run_s
    if fine_costs:  # the scorer's compute per candidate it scored (means), on top of the checks
        for key in sorted({k for fc in fine_costs for k in fc}):
            vals = [fc[key] for fc in fine_costs if isinstance(fc.get(key), int | float)]
            if vals:
                cost[f"scorer_{key}_per_candidate"] = float(np.mean(vals))
        cost["env_steps_per_candidate"] = cost.get("scorer_env_steps_per_candidate", 0)
        cost["gradient_steps_per_candidate"] = cost.get("scorer_gradient_steps_per_candidate", 0)
        cost["candidates_scored"] = len(fine_costs)
        if full_run_s and "scorer_seconds_per_candidate" in cost:
            cost["ratio_scorer_to_full_run"] = cost["scorer_seconds_per_candidate"] / full_run_s
    return LoopResult(cands, best.id if best else None,
                      {"rollouts": t_roll, "llm": t_llm, "checks": t_check, "scoring": t_score,
                       "total": time.perf_counter() - t0}, cost)


# ---------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewardforge-reward-gen", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=None, help="program store directory (default <repo>/reward_programs)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("gen", "refine"):
        g = sub.add_parser(name, help="generate programs" if name == "gen" else "refine a stored program")
        if name == "refine":
            g.add_argument("--program", required=True, help="store id of the program to refine")
        g.add_argument("--task", default=GenConfig.task)
        g.add_argument("--task-text", default=None)
        g.add_argument("--base-url", default="https://api.openai.com/v1")
        g.add_argument("--model", default="gpt-4o")
        g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env variable with the key; 'none' for no key")
        g.add_argument("--temperature", type=float, default=0.8)
        g.add_argument("--max-tokens", type=int, default=1024)
        g.add_argument("--timeout-s", type=float, default=120.0)
        g.add_argument("--retries", type=int, default=2)
        g.add_argument("--samples", type=int, default=GenConfig.samples)
        g.add_argument("--rounds", type=int, default=GenConfig.rounds if name == "gen" else 1)
        g.add_argument("--episodes", type=int, default=GenConfig.episodes)
        g.add_argument("--noise", type=float, nargs="*", default=list(GenConfig.noise))
        g.add_argument("--seed", type=int, default=0)
        g.add_argument("--example", action="append", default=[], help="hand-written example program (.py)")
        g.add_argument("--feedback", default=None, help="a person's feedback text")
        g.add_argument("--feedback-file", default=None, help="file with a person's feedback")
        g.add_argument("--min-spearman", type=float, default=CheckSettings.min_spearman)
        g.add_argument("--max-abs", type=float, default=CheckSettings.max_abs)
        g.add_argument("--cpu-s", type=float, default=SandboxLimits.cpu_s)
        g.add_argument("--wall-s", type=float, default=SandboxLimits.wall_s)
        g.add_argument("--memory-mb", type=int, default=SandboxLimits.memory_mb)
        g.add_argument("--full-run-s", type=float, default=None,
                       help="wall seconds of one full training run, to report the candidate/full-run cost ratio")
        g.add_argument("--json", default=None, help="write the loop summary to this file")
    sub.add_parser("list", help="list stored programs")
    s = sub.add_parser("show", help="metadata and source of one program")
    s.add_argument("id")
    d = sub.add_parser("diff", help="unified diff of two programs")
    d.add_argument("a")
    d.add_argument("b")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    store = ProgramStore(args.store)
    try:
        if args.cmd == "list":
            print("\n".join(store.list_rows()))
            return 0
        if args.cmd == "show":
            print(store.show(args.id))
            return 0
        if args.cmd == "diff":
            print(store.diff(args.a, args.b) or "(identical)")
            return 0
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    feedback = args.feedback
    if args.feedback_file:
        feedback = ((feedback + "\n") if feedback else "") + Path(args.feedback_file).read_text()
    cfg = GenConfig(task=args.task, task_text=args.task_text, samples=args.samples, rounds=args.rounds,
                    episodes=args.episodes, noise=tuple(args.noise), seed=args.seed, examples=tuple(args.example),
                    feedback=feedback, checks=CheckSettings(max_abs=args.max_abs, min_spearman=args.min_spearman),
                    sandbox=SandboxLimits(cpu_s=args.cpu_s, wall_s=args.wall_s, memory_mb=args.memory_mb))
    try:
        client = ChatClient(base_url=args.base_url, model=args.model,
                            api_key_env=None if str(args.api_key_env).lower() in ("none", "null", "") else
                            args.api_key_env, temperature=args.temperature, n=args.samples,
                            max_tokens=args.max_tokens, timeout_s=args.timeout_s, retries=args.retries)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = run_loop(cfg, client, store, parent=getattr(args, "program", None), full_run_s=args.full_run_s)
    for c in res.candidates:
        print(f"round {c.round} sample {c.sample}: {c.id} {'PASS' if c.passed else 'REJECT'}"
              + (f" score {c.score:.3f}" if c.score is not None else "")
              + ("" if c.passed else f"  ({'; '.join(c.reasons[:2])})"))
    print(f"best: {res.best or 'none passed'}")
    print(f"cost per candidate: {json.dumps(res.cost)}")
    if args.json:
        summary = {"best": res.best, "seconds": res.seconds, "cost": res.cost, "config": asdict(cfg),
                   "candidates": [{"id": c.id, "round": c.round, "sample": c.sample, "passed": c.passed,
                                   "score": c.score, "fine_score": c.fine_score, "reasons": c.reasons}
                                  for c in res.candidates]}
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    return 0 if res.best else 1


if __name__ == "__main__":
    sys.exit(main())
