"""Smoke test of benchmarks/env_step_rate.py: table rows, mj_step context, skips."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location(
        "env_step_rate", ROOT / "benchmarks" / "env_step_rate.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_env_step_rate_smoke(tmp_path, monkeypatch):
    mod = _load()
    envs = [e for e in mod.ENVS if e[0] in ("metaworld-reach", "dmc-reacher-easy")]
    envs.append(("missing", "rewardforge/DoesNotExist-v0"))
    monkeypatch.setattr(mod, "ENVS", envs)
    out = tmp_path / "rate.json"
    assert mod.main(["--seconds", "0.3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["env"]: r for r in result["results"]}
    assert set(rows) == {"metaworld-reach", "dmc-reacher-easy"}
    assert rows["metaworld-reach"]["ratio_vs_metaworld_reach"] == 1.0
    for r in rows.values():
        assert r["steps_per_s"] > 0 and r["mj_step_per_s"] > 0
    assert rows["metaworld-reach"]["substeps_per_env_step"] == 5
    assert [s["env"] for s in result["skipped"]] == ["missing"]
