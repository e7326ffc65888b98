"""Config mistakes fail with a short message naming the key and what is allowed, not a deep traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from policies.config import ConfigError, check_overrides, compose

REPO = Path(__file__).resolve().parent.parent
TOY_TASK = "env_id: policies.toy_env:rftoy/PointReach-v0\nmax_episode_steps: 50\nkwargs: {}\n"


@pytest.fixture
def base(tmp_path):
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    return [f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "task=point_reach", f"run_dir={tmp_path / 'run'}"]


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"'agent.critic_ensmble'.*did you mean 'agent.critic_ensemble'"):
        check_overrides(["agent.critic_ensmble=3"])
    with pytest.raises(ConfigError, match=r"'total_step'.*did you mean 'total_steps'"):
        check_overrides(["total_step=10"])
    check_overrides(["agent.critic_ensemble=10", "task.kwargs.anything=1", "+extra=1", "hydra.job.chdir=true",
                     "task=x", "seed=0,1"])


@pytest.mark.parametrize(("override", "pattern"), [
    ("agent.lr=-1", r"agent.lr=-1.0: must be > 0"),
    ("agent.target_subset=5", r"agent.target_subset=5: must be <= agent.critic_ensemble \(2\)"),
    ("agent.actor_q=max", r"agent.actor_q='max': allowed values: min, mean"),
    ("device=tpu", r"device='tpu': allowed values: auto, cpu, cuda"),
    ("agent.gamma=1.5", r"agent.gamma=1.5: must be in \[0, 1\]"),
    ("agent.bc_weight=-1", r"agent.bc_weight=-1.0: must be >= 0"),
    ("agent.bc_scale=abs", r"agent.bc_scale='abs': must be 'q'"),
    ("warmup_actions=expert", r"warmup_actions='expert': must be 'random'"),
    ("warmup_noise=-0.1", r"warmup_noise=-0.1: must be >= 0"),
    ("bc_loss=l1", r"bc_loss='l1': allowed values: mse, nll"),
])
def test_bad_values(base, override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        compose([*base, override])


def test_agent_presets_compose(base):
    cfg = compose([*base, "agent=rlpd"])
    assert (cfg.agent.critic_ensemble, cfg.agent.target_subset, cfg.agent.utd) == (10, 2, 20)
    assert cfg.agent.critic_layer_norm and cfg.agent.batch_size == 256  # the rest inherited from sac.yaml


def test_wrong_type_names_the_key(base):
    with pytest.raises(Exception, match="agent.batch_size"):
        compose([*base, "agent.batch_size=lots"])


def test_command_line_errors_are_short(tmp_path, base):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cases = {
        "agent.critic_ensmble=3": ["agent.critic_ensmble", "did you mean 'agent.critic_ensemble'"],
        "agent.lr=-1": ["agent.lr=-1.0", "must be > 0"],
        "task=nonexistent": ["task/nonexistent", "point_reach"],  # Hydra lists the available tasks
    }
    procs = {o: subprocess.Popen([sys.executable, "-m", "policies.train", *base, o], cwd=tmp_path, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for o in cases}
    for override, needles in cases.items():
        out, err = procs[override].communicate(timeout=120)
        assert procs[override].returncode != 0, override
        text = out + err
        for needle in needles:
            assert needle in text, (override, text[-2000:])
        assert "Traceback" not in text and 'File "' not in text, (override, text[-2000:])
        assert len(err.strip().splitlines()) < 60, (override, err)  # the task list grows with the tasks
