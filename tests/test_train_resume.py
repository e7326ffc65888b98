"""Crash and resume: SIGKILL a training process after its first resumable save, rerun the same command,
and check it continues from the saved step (not from zero) and finishes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
TOY_TASK = "env_id: policies.toy_env:rftoy/PointReach-v0\nmax_episode_steps: 50\nkwargs: {}\n"
TOTAL = 3000


def test_killed_run_resumes_from_last_save(tmp_path):
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "policies.train", f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach",
           f"run_dir={run_dir}", f"total_steps={TOTAL}", "warmup_steps=200", "checkpoint_every=400", "eval_every=0",
           "eval_episodes=1", "log_every=200", "agent.hidden=[32,32]", "agent.n_step=3", "video=false",
           "progress=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    state = run_dir / "resume" / "state.pt"

    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not state.exists():
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no resumable state written within 120 s"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    saved_step = torch.load(state, weights_only=True)["step"]
    assert 400 <= saved_step < TOTAL, saved_step
    assert not (run_dir / "summary.json").exists()  # it really died before finishing

    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resumed from {state} at env step {saved_step}" in second.stdout + second.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] == saved_step and summary["env_steps"] == TOTAL
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), "rows from before the crash duplicated"
    assert steps[-1] == TOTAL and steps[0] == 200
    assert torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["step"] == TOTAL
    assert len(list((run_dir / "resume").glob("replay_*.npz"))) == 1


def test_runs_saved_before_a_setting_existed_still_resume():
    from omegaconf import OmegaConf

    from policies.config import compose
    from policies.train import RESUME_MUST_MATCH, _identity

    now = OmegaConf.to_container(compose(["task=panda_reach"]), resolve=True)
    old = json.loads(json.dumps(now))
    del old["agent"]["precision"], old["reward"]["monitor"]  # keys added to the schema later
    assert all(_identity(old, k) == _identity(now, k) for k in RESUME_MUST_MATCH)
    old["agent"]["lr"] = 1e-3  # a real change still refuses
    assert _identity(old, "agent") != _identity(now, "agent")
