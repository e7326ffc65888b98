"""Learning sanity check for pixel SAC (DrQ, policies/pixels.py) on Panda reach: does the
evaluation return rise above the untrained policy's within a short CPU budget?

Not a test: CPU pixel RL is slow (each env step renders the camera, each update encodes
2 x batch images). The first evaluation falls inside the random warm-up, so it scores the
untrained policy; later ones score what DrQ learned. The agent reads the front camera and
the state vector (SERL's layout; ``--images-only`` drops the state except proprioception,
which makes the task much harder: the goal is then only in the image).

    uv run --frozen python benchmarks/drq_reach.py                    # ~10 min on 2 busy cores
    uv run --frozen python benchmarks/drq_reach.py --steps 20000      # a longer run
Writes benchmarks/results/drq_reach[_images_only].json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-episodes", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images-only", action="store_true", help="state: proprioception only (ee_pos, ee_vel, gripper)")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from policies.config import compose
    from policies.train import run

    overrides = ["task=panda_reach", "agent=drq", f"seed={args.seed}", f"total_steps={args.steps}",
                 f"warmup_steps={args.warmup}", f"eval_every={args.eval_every}", f"eval_episodes={args.eval_episodes}",
                 "checkpoint_every=0", "video=false", "progress=false", f"agent.image_size={args.image_size}",
                 f"agent.batch_size={args.batch_size}"]
    if args.images_only:
        overrides.append("agent.state_fields=[ee_pos,ee_vel,gripper]")
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(compose([*overrides, f"run_dir={tmp}/run"]))
    wall = time.time() - t0
    curve = result["eval_curve"]
    untrained = [r for s, _, r in curve if s <= args.warmup]
    trained = curve[-1]
    print(f"DrQ on Panda reach ({args.image_size} px front camera + "
          f"{'proprioception' if args.images_only else 'state'}), seed {args.seed}, {args.steps} env steps, "
          f"{wall / 60:.1f} min, {result['steps_per_s']:.1f} steps/s")
    print(f"{'step':>6}{'success':>9}{'return':>9}")
    for step, success, ret in curve:
        print(f"{step:>6}{success:>9.2f}{ret:>9.2f}")
    improved = bool(untrained) and trained[2] > max(untrained)
    print(f"eval return: untrained {max(untrained) if untrained else float('nan'):.2f} -> {trained[2]:.2f} "
          f"({'improved' if improved else 'no improvement'})")
    name = "drq_reach_images_only.json" if args.images_only else "drq_reach.json"
    out = ROOT / "benchmarks" / "results" / name
    out.write_text(json.dumps({
        "curve": [{"step": s, "success": su, "return": r} for s, su, r in curve], "improved": improved,
        "wall_s": wall, "steps_per_s": result["steps_per_s"], "args": vars(args),
        "command": "uv run --frozen python benchmarks/drq_reach.py"
                   + (" --images-only" if args.images_only else "") + f" --steps {args.steps}",
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
