"""Rendering first and training second in one process must not crash (sim/gl.py explains why)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sim, torch
for env_id in {ids!r}:
    env = sim.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().ndim == 3
    env.close()
torch.optim.Adam([torch.zeros(2, requires_grad=True)])  # imports triton via torch._dynamo
print("ok")
"""


@pytest.mark.parametrize("ids", [["rewardforge/PandaReach-v0"], ["rewardforge/DMC-reacher-easy"]])
def test_render_then_optimizer_in_a_fresh_process(ids):
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(ids=ids)], cwd=ROOT, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, f"exit {out.returncode} (-11 is the llvmpipe/triton clash)\n{out.stderr[-2000:]}"
    assert out.stdout.strip().endswith("ok")
