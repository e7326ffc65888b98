"""End to end against the stand-in OpenAI-compatible server: generate -> check -> score -> refine -> store,
the `code` reward term, the command line, and a short training run on the chosen program."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_reward_code_programs as P  # noqa: E402
from standin_llm import standin_llm_fixture  # noqa: E402, F401 - registers the fixture

import rewards  # noqa: E402
from rewards.code.checks import CheckSettings  # noqa: E402
from rewards.code.generate import GenConfig, logged_rollouts, main, run_loop  # noqa: E402
from rewards.code.sandbox import SandboxLimits  # noqa: E402
from rewards.code.store import ProgramStore  # noqa: E402
from rewards.openai_client import ChatClient  # noqa: E402

TASK = "rewardforge/PandaReach-v0"
REFINED = P.GOOD.replace('return {"reach"', 'pen = -0.01 * np.sum(action[:, :3] ** 2, axis=-1)\n    return {"pen": pen, "reach"')


@pytest.fixture(scope="module")
def logged():
    return logged_rollouts(TASK, episodes=1, noise=(0.3,), seed=0)


def test_full_loop_catches_every_bad_program_and_refines_the_good_one(standin_llm, logged, tmp_path):
    episodes, spec = logged
    first = [P.fenced(P.GOOD), P.fenced(P.BROKEN), P.fenced(P.CONSTANT), P.fenced(P.NAN), P.fenced(P.IMPORT_OS),
             P.fenced(P.OPEN), P.fenced(P.DUNDER_IMPORT), P.fenced(P.LOOP), P.fenced(P.LOOP_HIDDEN),
             P.fenced(P.MEMORY_BOMB), "I'd rather not write code today."]
    standin_llm.push(first, [P.fenced(REFINED)] + [P.fenced(P.CONSTANT)] * (len(first) - 1))
    client = ChatClient(base_url=standin_llm.base_url, model="stand-in", api_key_env=None, retries=0, timeout_s=10)
    cfg = GenConfig(task=TASK, samples=len(first), rounds=2, feedback="The arm hovers 5 cm above the goal.",
                    checks=CheckSettings(), sandbox=SandboxLimits(cpu_s=1.0, wall_s=6.0, memory_mb=1024))
    cfg.samples = len(first)
    store = ProgramStore(tmp_path / "store")
    res = run_loop(cfg, client, store, episodes=episodes, spec=spec, full_run_s=300.0)
    by = {c.sample: c for c in res.candidates if c.round == 1}
    assert by[0].passed and by[0].score > 0.3, by[0].reasons
    expect = {1: "syntax error", 2: "nearly) constant", 3: "NaN or infinite", 4: "import of 'os'",
              5: "name 'open'", 6: "name '__import__'", 7: "`while` loop", 8: "CPU-time limit",
              9: "memory limit", 10: "no Python code block"}
    for i, needle in expect.items():
        assert not by[i].passed and any(needle in r for r in by[i].reasons), (i, by[i].reasons)
    assert "(from the terms bad)" in " ".join(by[3].reasons)
    # refinement: round 2's prompt carries the parent, its statistics, others' reasons and the person's feedback
    second = standin_llm.requests[1].json["messages"][1]["content"]
    assert P.GOOD.strip() in second and "Spearman with progress" in second
    assert "term reach" in second and "hovers 5 cm" in second and "CPU-time limit" in second
    r2 = [c for c in res.candidates if c.round == 2]
    assert len(r2) == len(first) and r2[0].passed and not r2[1].passed
    meta = store.meta(r2[0].id)
    assert meta["parent"] == by[0].id and meta["model"] == "stand-in" and meta["round"] == 2
    assert meta["checks"]["passed"] and meta["scores"]["score"] is not None and meta["prompt"][1]["role"] == "user"
    assert res.best in (by[0].id, r2[0].id)
    assert res.cost["env_steps_per_candidate"] == 0 and 0 < res.cost["ratio_candidate_to_full_run"] < 0.05
    assert len(store.ids()) == 2 * len(first)


def test_code_term_builds_from_the_store_and_scores_like_in_process(logged, tmp_path):
    episodes, spec = logged
    store = ProgramStore(tmp_path / "store")
    pid = store.add(P.GOOD, origin="hand-written")
    term = rewards.build({"kind": "code", "params": {"program": pid, "store": str(store.root),
                                                     "sandbox": {"cpu_s": 2}}}, spec)
    try:
        batch = episodes[0].batch
        out = term(batch)
        d = np.linalg.norm(batch.next_obs["ee_pos"] - batch.next_obs["goal_pos"], axis=-1)
        np.testing.assert_allclose(out.reward, 1 - np.tanh(d / 0.1) + (d < 0.03), rtol=1e-5, atol=1e-6)
        assert set(out.components) == {"reach", "success_bonus"}
    finally:
        term.close()
    assert store.meta(pid)["runs"][0]["task"] == "panda/reach"
    with pytest.raises(rewards.RewardConfigError, match="reward.params.program='nope' is neither"):
        rewards.build({"kind": "code", "params": {"program": "nope", "store": str(store.root)}})
    with pytest.raises(rewards.RewardConfigError, match=r"unknown keys \['progam'\]"):
        rewards.build({"kind": "code", "params": {"progam": pid}})
    bad = tmp_path / "bad.py"
    bad.write_text(P.IMPORT_OS)
    with pytest.raises(rewards.RewardConfigError, match="static checks: line 1: import of 'os'"):
        rewards.build({"kind": "code", "params": {"program": str(bad)}})


def test_cli_gen_list_show_diff(standin_llm, tmp_path, capsys, monkeypatch):
    store = tmp_path / "s"
    standin_llm.push([P.fenced(P.GOOD), P.fenced(P.CONSTANT)])
    fb = tmp_path / "fb.txt"
    fb.write_text("too slow near the goal")
    rc = main(["--store", str(store), "gen", "--base-url", standin_llm.base_url, "--model", "stand-in",
               "--api-key-env", "none", "--samples", "2", "--rounds", "1", "--episodes", "1", "--noise",
               "--feedback-file", str(fb), "--cpu-s", "2", "--json", str(tmp_path / "sum.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "PASS" in out and "REJECT" in out and "best: 0001-" in out
    assert standin_llm.requests[0].json["model"] == "stand-in" and standin_llm.requests[0].json["n"] == 2
    assert main(["--store", str(store), "list"]) == 0
    listing = capsys.readouterr().out
    assert "0001-" in listing and "0002-" in listing and "stand-in" in listing
    assert main(["--store", str(store), "show", ProgramStore(store).ids()[0]]) == 0
    assert "compute_reward" in capsys.readouterr().out
    a, b = ProgramStore(store).ids()
    assert main(["--store", str(store), "diff", a, b]) == 0
    assert "-    d = np.linalg.norm" in capsys.readouterr().out
    assert main(["--store", str(store), "show", "9999-x"]) == 2


def test_good_program_trains_briefly(tmp_path):
    from policies.config import compose
    from policies.train import run

    cfg = compose(["task=panda_reach", "reward=code", f"run_dir={tmp_path / 'r'}", "total_steps=120",
                   "warmup_steps=100", "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false",
                   "progress=false", "agent.hidden=[16]", "agent.batch_size=16", "reward.relabel_batch=64",
                   f"reward.params.program={Path(__file__).parents[1] / 'rewards/code/examples/panda_reach_handwritten.py'}"])
    out = run(cfg)
    assert out is not None


def test_scorer_ranks_candidates_and_its_feedback_reaches_the_next_prompt(standin_llm, logged, tmp_path):
    """run_loop(scorer=...): the scorer's score overrides the relabelling score, its feedback goes into the
    refine prompt, and a parent's stored training reflection is used when refining it."""
    from rewards.code.generate import ScoreResult

    episodes, spec = logged
    # REFINED has the higher relabelling score? whichever it is, the scorer's verdict must decide
    standin_llm.push([P.fenced(P.GOOD), P.fenced(REFINED)], [P.fenced(P.CONSTANT)])
    client = ChatClient(base_url=standin_llm.base_url, model="stand-in", api_key_env=None, retries=0, timeout_s=10)
    cfg = GenConfig(task=TASK, samples=2, rounds=2, sandbox=SandboxLimits(cpu_s=2.0))
    store = ProgramStore(tmp_path / "store")
    seen = []

    def scorer(cands, view):
        seen.append([c.id for c in cands])
        assert view.task == "panda/reach"
        return {c.id: ScoreResult(0.9 if c.sample == 1 else 0.1, f"FINETUNE-STATS-{c.sample}", {"success_rate": 0.5},
                                  {"env_steps": 300, "gradient_steps": 1000, "seconds": 2.0}) for c in cands}

    res = run_loop(cfg, client, store, episodes=episodes, spec=spec, scorer=scorer, full_run_s=100.0)
    r1 = [c for c in res.candidates if c.round == 1]
    assert seen == [[r1[0].id, r1[1].id]]  # called once: round 2 had no passing candidate
    assert res.best == r1[1].id and r1[1].fine_score == 0.9
    prompt2 = standin_llm.requests[1].json["messages"][1]["content"]
    assert "FINETUNE-STATS-1" in prompt2 and "FINETUNE-STATS-0" not in prompt2
    meta = store.meta(r1[1].id)
    assert meta["scores"]["finetune"]["score"] == 0.9 and meta["scores"]["finetune"]["cost"]["env_steps"] == 300
    assert meta["scores"]["score"] is not None  # the relabelling score is kept next to it
    assert res.cost["env_steps_per_candidate"] == 300 and res.cost["gradient_steps_per_candidate"] == 1000
    assert res.cost["ratio_scorer_to_full_run"] == pytest.approx(0.02)
    # refining a stored program reuses its stored training reflection (from a full run)
    store.update(r1[1].id, training_reflection="FULL-RUN-REFLECTION: term reach barely changed")
    standin_llm.push([P.fenced(P.CONSTANT)])
    run_loop(GenConfig(task=TASK, samples=1, rounds=1, sandbox=SandboxLimits(cpu_s=2.0)), client, store,
             episodes=episodes, spec=spec, parent=r1[1].id)
    assert "FULL-RUN-REFLECTION" in standin_llm.requests[-1].json["messages"][1]["content"]
