"""A short run leaves config, metrics (JSONL + CSV), a learning curve, checkpoints, a video and a summary;
rerunning a finished run dir does not train again; multirun sweeps work from the command line."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from policies import checkpoint
from policies.config import compose
from policies.toy_env import point_reach_spec
from policies.train import run

REPO = Path(__file__).resolve().parent.parent
TOY_TASK = "env_id: policies.toy_env:rftoy/PointReach-v0\nmax_episode_steps: 50\nkwargs: {}\n"
SMALL = ["total_steps=600", "warmup_steps=200", "eval_every=300", "eval_episodes=2", "checkpoint_every=300",
         "log_every=100", "agent.hidden=[32,32]", "progress=false"]


@pytest.fixture
def cfg_dir(tmp_path):
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    return tmp_path / "cfg"


def test_run_dir_contents(tmp_path, cfg_dir):
    run_dir = tmp_path / "run"
    cfg = compose([f"hydra.searchpath=[file://{cfg_dir}]", "task=point_reach", f"run_dir={run_dir}", *SMALL])
    result = run(cfg)
    assert result["env_steps"] == 600 and result["steps_per_s"] > 0 and result["wall_time_s"] > 0
    assert 0.0 <= result["final_eval_success"] <= 1.0

    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.total_steps == 600 and saved.task.env_id == "policies.toy_env:rftoy/PointReach-v0"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in rows}
    assert kinds == {"episode", "eval", "train"}
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [300, 600]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert all({"critic_loss", "actor_loss", "alpha", "steps_per_s"} <= set(r) for r in train_rows if r["step"] > 200)
    with open(run_dir / "metrics.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) and {"step", "episode_return", "success", "eval_success_rate", "alpha"} <= set(
        csv_rows[0])
    png = (run_dir / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"step_300.pt", "step_600.pt", "final.pt"}
    policy = checkpoint.load_policy(run_dir / "checkpoints" / "final.pt", expect=point_reach_spec())
    assert policy.step == 600
    video = Path(result["video"])
    assert video.parent == run_dir and video.suffix in (".mp4", ".gif") and video.stat().st_size > 1000
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == 600

    # rerunning the finished run resumes at its end: no further training, same metrics
    again = run(cfg)
    assert again["resumed_from"] == 600 and again["env_steps"] == 600
    rows2 = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows2) == len(rows)


def test_refuses_to_overwrite_without_resume(tmp_path, cfg_dir):
    base = [f"hydra.searchpath=[file://{cfg_dir}]", "task=point_reach", f"run_dir={tmp_path / 'run'}", *SMALL,
            "total_steps=300", "video=false"]
    run(compose(base))
    from policies.config import ConfigError

    with pytest.raises(ConfigError, match="resume=true"):
        run(compose([*base, "resume=false"]))
    with pytest.raises(ConfigError, match="different agent, seed"):
        run(compose([*base, "agent.gamma=0.9", "seed=3"]))
    assert run(compose([*base, "total_steps=400"]))["env_steps"] == 400  # extending a finished run is fine
    with pytest.raises(ConfigError, match="different task"):  # a different env is not the same run
        run(compose([*base, "total_steps=450", "task.max_episode_steps=10"]))
    # the task's default budget is a budget, not part of the env: changing it does not block a resume
    assert run(compose([*base, "total_steps=450", "task.total_steps=7"]))["env_steps"] == 450


def test_multirun_sweep(tmp_path, cfg_dir):
    cmd = [sys.executable, "-m", "policies.train", "-m", "seed=0,1", f"hydra.searchpath=[file://{cfg_dir}]",
           "task=point_reach", f"hydra.sweep.dir={tmp_path / 'sweep'}", *SMALL, "total_steps=250", "eval_every=0",
           "eval_episodes=1", "checkpoint_every=0", "video=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=150,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 2, list((tmp_path / "sweep").rglob("*"))
    seeds = sorted(OmegaConf.load(p.parent / "config.yaml").seed for p in summaries)
    assert seeds == [0, 1]
