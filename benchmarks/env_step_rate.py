"""Raw environment step rate: our Panda tasks against Meta-World v3 and dm_control.

One process, one env at a time, uniformly random actions, no learning; episodes are
reset when they end (terminated or truncated) and the reset time counts. For context
it also times bare ``mujoco.mj_step`` on each env's model (a copy of its MjData), and
reports how many physics steps one env step takes (control period / model timestep),
so ``physics ceiling = mj_step rate / substeps`` shows how much of the env step goes
to physics and how much to the env's own Python. Control rates differ (Meta-World 80 Hz,
dm_control reacher 50 Hz, our Panda tasks at their spec's rate), so it also reports the
real-time factor: simulated seconds per wall-clock second.

Usage::

    uv run python benchmarks/env_step_rate.py                 # ~5 s per env
    uv run python benchmarks/env_step_rate.py --seconds 2 --only Panda MetaWorld-reach

Writes the table as JSON to ``benchmarks/results/env_step_rate.json``. Env ids that are
not registered (yet) are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

ENVS: list[tuple[str, str]] = [
    ("panda-reach", "rewardforge/PandaReach-v0"),
    ("panda-push", "rewardforge/PandaPush-v0"),
    ("panda-pick-place", "rewardforge/PandaPickPlace-v0"),
    ("panda-drawer-open", "rewardforge/PandaDrawerOpen-v0"),
    ("metaworld-reach", "rewardforge/MetaWorld-reach-v3"),
    ("metaworld-push", "rewardforge/MetaWorld-push-v3"),
    ("metaworld-pick-place", "rewardforge/MetaWorld-pick-place-v3"),
    ("metaworld-drawer-open", "rewardforge/MetaWorld-drawer-open-v3"),
    ("dmc-reacher-easy", "rewardforge/DMC-reacher-easy"),
]
REFERENCE = "metaworld-reach"
RESULTS = Path(__file__).resolve().parent / "results" / "env_step_rate.json"


def find_mujoco(env: gym.Env) -> tuple[Any, Any] | None:
    """Find the (MjModel, MjData) an env steps, looking a couple of attributes deep."""
    seen: set[int] = set()
    frontier: list[Any] = [env.unwrapped]
    for _depth in range(3):
        nxt: list[Any] = []
        for obj in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            # dm_control Physics: .model.ptr / .data.ptr are the mujoco bindings
            for name in ("physics", "_physics"):
                phys = getattr(obj, name, None)
                if phys is not None and hasattr(phys, "model") and hasattr(phys.model, "ptr"):
                    return phys.model.ptr, phys.data.ptr
            attrs = getattr(obj, "__dict__", {})
            models = [v for v in attrs.values() if isinstance(v, mujoco.MjModel)]
            datas = [v for v in attrs.values() if isinstance(v, mujoco.MjData)]
            if models and datas:
                return models[0], datas[0]
            nxt.extend(
                v
                for v in attrs.values()
                if hasattr(v, "__dict__") and not isinstance(v, type | np.ndarray)
            )
        frontier = nxt
    return None


def time_mj_step(model: Any, data: Any, seconds: float) -> float:
    """Bare mj_step rate on a copy of the env's current state."""
    d = mujoco.MjData(model)
    d.qpos[:] = data.qpos
    d.qvel[:] = data.qvel
    if model.nmocap:
        d.mocap_pos[:] = data.mocap_pos
        d.mocap_quat[:] = data.mocap_quat
    d.ctrl[:] = 0.0
    mujoco.mj_forward(model, d)
    n, batch = 0, 100
    t0 = time.perf_counter()
    while True:
        for _ in range(batch):
            mujoco.mj_step(model, d)
        n += batch
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


def measure(name: str, env_id: str, seconds: float, seed: int = 0) -> dict[str, Any]:
    env = gym.make(env_id)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    for _ in range(20):  # warm-up (first-call allocations, lazy set-up)
        env.step(env.action_space.sample())
    actions = [env.action_space.sample() for _ in range(1000)]
    env.reset(seed=seed + 1)
    steps = resets = 0
    t0 = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        for _ in range(50):
            _, _, terminated, truncated, _ = env.step(actions[steps % len(actions)])
            steps += 1
            if terminated or truncated:
                env.reset()
                resets += 1
        elapsed = time.perf_counter() - t0
    row: dict[str, Any] = {
        "env": name,
        "env_id": env_id,
        "steps": steps,
        "resets": resets,
        "seconds": round(elapsed, 3),
        "steps_per_s": steps / elapsed,
        "ms_per_step": 1000.0 * elapsed / steps,
    }
    spec = getattr(env.unwrapped, "embodiment", None)
    found = find_mujoco(env)
    if found is not None:
        model, data = found
        rate = time_mj_step(model, data, min(1.0, max(0.2, seconds / 5)))
        row["mj_step_per_s"] = rate
        row["model_timestep_s"] = float(model.opt.timestep)
        if spec is not None:
            substeps = 1.0 / (spec.control_hz * model.opt.timestep)
            row["control_hz"] = float(spec.control_hz)
            row["substeps_per_env_step"] = round(substeps, 3)
            row["physics_ceiling_steps_per_s"] = rate / substeps
            row["physics_share"] = (substeps / rate) / (elapsed / steps)
            # simulated seconds per wall-clock second: fair across control rates
            row["realtime_factor"] = row["steps_per_s"] / spec.control_hz
    env.close()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per env")
    parser.add_argument(
        "--only", nargs="*", default=None, help="substrings of env names or ids to keep"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import sim  # noqa: F401  (registers rewardforge/* ids)

    rows, skipped = [], []
    for name, env_id in ENVS:
        if args.only and not any(s in name or s in env_id for s in args.only):
            continue
        if env_id not in gym.registry:
            print(f"skip {name}: {env_id} is not registered", flush=True)
            skipped.append({"env": name, "env_id": env_id, "reason": "not registered"})
            continue
        try:
            row = measure(name, env_id, args.seconds)
        except Exception as err:  # one broken env should not cost the whole table
            print(f"skip {name}: {type(err).__name__}: {err}", flush=True)
            skipped.append(
                {"env": name, "env_id": env_id, "reason": f"{type(err).__name__}: {err}"}
            )
            continue
        rows.append(row)
        print(f"  {name}: {row['steps_per_s']:.0f} steps/s", flush=True)

    ref = next((r for r in rows if r["env"] == REFERENCE), None)
    for r in rows:
        r["ratio_vs_metaworld_reach"] = r["steps_per_s"] / ref["steps_per_s"] if ref else None

    header = f"{'env':24s} {'steps/s':>9s} {'ms/step':>8s} {'vs MW reach':>11s} {'mj_step/s':>10s} {'substeps':>8s} {'physics %':>9s} {'Hz':>5s} {'x realtime':>10s}"
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = f"{r['ratio_vs_metaworld_reach']:.2f}x" if r["ratio_vs_metaworld_reach"] else "-"
        mj = f"{r['mj_step_per_s']:.0f}" if "mj_step_per_s" in r else "-"
        sub = f"{r['substeps_per_env_step']:g}" if "substeps_per_env_step" in r else "-"
        share = f"{100 * r['physics_share']:.0f}" if "physics_share" in r else "-"
        hz = f"{r['control_hz']:g}" if "control_hz" in r else "-"
        rtf = f"{r['realtime_factor']:.1f}" if "realtime_factor" in r else "-"
        print(
            f"{r['env']:24s} {r['steps_per_s']:9.0f} {r['ms_per_step']:8.3f} {ratio:>11s} {mj:>10s} {sub:>8s} {share:>9s} {hz:>5s} {rtf:>10s}"
        )
    for s in skipped:
        print(f"(skipped {s['env']}: {s['reason']})")

    result = {
        "benchmark": "env_step_rate",
        "what": "random actions, one process, resets at episode end included; no learning",
        "seconds_per_env": args.seconds,
        "reference": REFERENCE,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "mujoco": mujoco.__version__,
            "loadavg_at_end": list(os.getloadavg()),
        },
        "results": rows,
        "skipped": skipped,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
