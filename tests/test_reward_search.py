"""rewardforge-reward-search end to end against the stand-in LLM server: generate, reject the bad programs
with reasons, fine-tune-score the survivors from a shared start on PandaReach (tiny budgets), rank the good
program above a valid one that pays for moving away from the goal, refine from the fine-tune's statistics
and failed episodes, and run the (tiny) full run on the best."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_reward_code_programs as P  # noqa: E402
from standin_llm import standin_llm_fixture  # noqa: E402, F401 - registers the fixture

from policies.config import ConfigError  # noqa: E402
from policies.reward_search import compose, search  # noqa: E402
from rewards.code.store import ProgramStore  # noqa: E402

# Valid, vectorised, bounded and varying, but it pays for moving the gripper AWAY from the goal.
AWAY = P.GOOD.replace('return {"reach": 1.0 - np.tanh(d / 0.1), "success_bonus": (d < 0.03) * 1.0}',
                      'return {"away": np.tanh(d / 0.1)}')
TINY = ["train_overrides=['agent.hidden=[64,64]','agent.batch_size=64','agent.buffer_size=5000']",
        "finetune.start_episodes=4", "finetune.bc_steps=500", "finetune.critic_steps=600",
        "finetune.offline_steps=300", "finetune.env_steps=100", "finetune.eval_episodes=3",
        "finetune.overrides=['agent.init_alpha=0.05','agent.actor_lr=0.0001']", "rollouts.episodes=1", "rollouts.noise=[]"]


def test_search_scores_by_finetune_ranks_good_above_bad_and_refines(standin_llm, tmp_path):
    assert AWAY != P.GOOD
    standin_llm.push([P.fenced(P.GOOD), P.fenced(P.BROKEN), P.fenced(P.CONSTANT), P.fenced(AWAY)],
                     [P.fenced(P.CONSTANT), P.fenced(P.IMPORT_OS), P.fenced(P.NAN), "no code here"])
    cfg = compose([f"llm.base_url={standin_llm.base_url}", "llm.model=stand-in", "llm.api_key_env=null",
                   "llm.samples=4", "llm.retries=0", "llm.timeout_s=10", "rounds=2", f"store={tmp_path / 'store'}",
                   f"output_dir={tmp_path / 'out'}", "sandbox.cpu_s=2", "sandbox.memory_mb=1024",
                   # loose checks so the away-reward survives them: then only the fine-tune can tell
                   "checks.min_spearman=-1.0", "checks.require_expert_above_random=false",
                   "full_run.total_steps=60", "full_run.eval_episodes=2", "feedback=keep the fingers open",
                   *TINY])
    summary = search(cfg)
    r1 = {c["sample"]: c for c in summary["candidates"] if c["round"] == 1}
    good, away = r1[0], r1[3]
    assert good["passed"] and away["passed"], (good["reasons"], away["reasons"])
    assert not r1[1]["passed"] and "syntax error" in r1[1]["reasons"][0]
    assert not r1[2]["passed"] and "constant" in r1[2]["reasons"][0]
    assert r1[1]["fine_score"] is None and r1[2]["fine_score"] is None  # rejected programs cost no training
    # the scorer is real: the reward that pays for leaving the goal ranks below the good one
    assert good["fine_score"] > away["fine_score"], (good["finetune"], away["finetune"])
    assert away["finetune"]["approach"] < 0.0  # it ended farther from the goal than it started
    assert summary["best"] == good["id"]
    # round 2 refines the best from its fine-tune statistics, failed episodes and the person's feedback
    prompt = standin_llm.requests[1].json["messages"][1]["content"]
    assert P.GOOD.strip() in prompt and "A short SAC fine-tune on this reward reached evaluation success" in prompt
    assert "- term reach: " in prompt and "- success rate: " in prompt and "keep the fingers open" in prompt
    assert "evaluation episodes failed" in prompt or "evaluation episodes succeeded" in prompt
    assert all(not c["passed"] for c in summary["candidates"] if c["round"] == 2)
    # cost per candidate against the full run (which ran, tiny, on the best)
    cost = summary["cost"]
    assert cost["candidates_fine_tuned"] == 2 and cost["shared_start"]["gradient_steps"] == 500
    per = cost["per_candidate"]
    assert per["gradient_steps"] >= 900 + 100 and per["env_steps"] >= 100 + 3 * 50
    assert cost["full_run"]["measured"] and cost["full_run"]["env_steps"] == 60
    store = ProgramStore(tmp_path / "store")
    meta = store.meta(good["id"])
    assert meta["scores"]["finetune"]["cost"]["online_env_steps"] == 100
    assert "full training run (60 env steps)" in meta["training_reflection"]
    assert meta["full_run"]["env_steps"] == 60 and len(meta["runs"]) == 2  # the fine-tune and the full run
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["best"] == good["id"] and (tmp_path / "out" / "full_run_reflection.txt").is_file()


def test_search_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'finetune.env_step' \(did you mean 'finetune.env_steps'"):
        compose(["finetune.env_step=10"])
    with pytest.raises(ConfigError, match="finetune.start='bc'.*allowed values: expert"):
        compose(["finetune.start=bc"])
    with pytest.raises(ConfigError, match="rounds=0: must be an integer >= 1"):
        compose(["rounds=0"])
    with pytest.raises(ConfigError, match="sandbox: cpu_s and wall_s must be > 0"):
        compose(["sandbox.cpu_s=0"])
    cfg = compose([])
    assert cfg.finetune.enabled and cfg.full_run.enabled and cfg.llm.samples == 4
