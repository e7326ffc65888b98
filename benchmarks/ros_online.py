"""Online learning through ROS with a scripted person (HIL-SERL in simulation), end to end.

    uv run --frozen python benchmarks/ros_online.py                 # 3000 env steps on reach (~6 min)
    uv run --frozen python benchmarks/ros_online.py --steps 1000 --eval-every 500

The setup of tests/test_ros_online.py at a useful size: the learner (policies.distributed, here in a
thread on 127.0.0.1, ephemeral ports) and, each its own ROS process, the sim robot (real time,
100 Hz), the command gate, the policy node as the learner's actor (random actions until the first
weights, then SAC's stochastic policy), the scripted person (takes over on ``spacenav/twist`` when
progress stalls, resets episodes at the task's time limit) and the recorder. The sim runs in real
time (10 control steps/s), so N env steps take about N / 10 seconds plus start-up.

Prints, per block of episodes, the training success rate and the share of steps a person drove,
and the learner's deterministic evaluations (``--eval-every`` env steps; the learner's own sim env,
no ROS); writes JSON to benchmarks/results/ros_online_<task>.json and a plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {"reach": ("panda_reach", "rewardforge/PandaReach-v0")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="reach")
    ap.add_argument("--steps", type=int, default=3000, help="env steps the learner trains for")
    ap.add_argument("--warmup", type=int, default=300, help="random-action steps before learning")
    ap.add_argument("--eval-every", type=int, default=1000, help="env steps between evaluations (learner's env)")
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--block", type=int, default=10, help="episodes per row of the printed table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-interventions", action="store_true", help="the person only resets episodes")
    ap.add_argument("--ros-eval-every", type=int, default=5,
                    help="every N-th episode is an evaluation on the robot: the policy's mean action, nobody steps "
                         "in (0: none)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/ros_online_<task>.json)")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 1 or args.eval_every < 0:
        ap.error("--steps and --warmup must be >= 1, --eval-every >= 0")

    # every ROS process stays on this machine, in a domain of its own (robot/harness.py refuses otherwise)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    os.environ.setdefault("MUJOCO_GL", "egl")
    from std_msgs.msg import Int64

    from common.episodes import Dataset
    from policies.distributed import Learner, compose_all
    from robot.harness import Probe, processes
    from robot.ros_io import STATE_QOS

    train_task, task_id = TASKS[args.task]
    work = Path(tempfile.mkdtemp(prefix="ros_online_"))
    cfg, d = compose_all([
        f"task={train_task}", f"run_dir={work / 'run'}", f"total_steps={args.steps}", f"warmup_steps={args.warmup}",
        f"seed={args.seed}", f"eval_every={args.eval_every}", f"eval_episodes={args.eval_episodes}",
        "checkpoint_every=0", "video=false", "progress=false", "log_every=500",
        f"intervention.enabled={str(not args.no_interventions).lower()}", "idle_timeout_s=120",
        "weights_interval_s=1.0"])
    learner = Learner(cfg, d)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            learner.summary = learner.run(lambda lr: time.sleep(0.0005))  # leave the nodes some CPU
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    tport, wport = (int(ep.rsplit(":", 1)[1]) for ep in (learner.transitions_endpoint, learner.weights_endpoint))
    probe = Probe("ros_online_probe")
    probe.sub(Int64, "policy/version", STATE_QOS)
    t0 = time.monotonic()
    person = {"embodiment_task": task_id, "interventions": not args.no_interventions, "eval_every": args.ros_eval_every}
    try:
        with processes(
                ("sim_robot", {"task": task_id, "seed": args.seed}),
                ("command_gate", {"max_speed": 0.5, "max_accel": 20.0}),  # as launch/params/online_sim.yaml
                ("policy_node", {"checkpoint": "", "embodiment_task": task_id, "learner_host": "127.0.0.1",
                                 "transitions_port": tport, "weights_port": wport, "actor_id": "ros-arm",
                                 "explore": True, "seed": args.seed, "eval_every": args.ros_eval_every}),
                ("scripted_person", person),
                ("recorder", {"root": str(work / "episodes"), "embodiment_task": task_id, "source": "intervention",
                              "auto_start": True, "success_topic": "sim/success"})) as procs:
            last_print = 0.0
            while thread.is_alive():
                probe.spin_until(lambda: not thread.is_alive(), 5.0, procs)
                if time.monotonic() - last_print > 30:
                    last_print = time.monotonic()
                    print(f"[{time.monotonic() - t0:5.0f} s] learner: {learner.trainer.step} env steps received, "
                          f"{learner.trainer.num_updates} learned, demo buffer "
                          f"{len(learner.trainer.demo_buffer) if learner.trainer.demo_buffer is not None else 0}",
                          flush=True)
    finally:
        probe.close()
        thread.join(120)
        learner.close()
    if errors:
        raise errors[0]
    wall = time.monotonic() - t0

    rows = learner.trainer.rows
    everything = [r for r in rows if r["kind"] == "episode"]
    episodes = [r for r in everything if not r.get("eval")]  # training episodes (exploring, person on call)
    ros_evals = [{"step": r["step"], "success": bool(r["success"]), "return": r["episode_return"]}
                 for r in everything if r.get("eval")]
    evals = [{"step": r["step"], "success": r["eval_success_rate"], "return": r["eval_return"]}
             for r in rows if r["kind"] == "eval"]
    blocks = []
    for i in range(0, len(episodes), args.block):
        b = episodes[i:i + args.block]
        steps = sum(r["episode_length"] for r in b)
        blocks.append({"episodes": f"{i + 1}-{i + len(b)}", "last_step": b[-1]["step"],
                       "train_success": float(np.mean([r["success"] for r in b])),
                       "intervention_rate": sum(r.get("intervention_steps", 0) for r in b) / max(steps, 1),
                       "mean_return": float(np.mean([r["episode_return"] for r in b]))})
    versions = sorted({m.data for m in probe.msgs.get("policy/version", [])})
    try:
        recorded = Dataset(work / "episodes").num_episodes
    except (FileNotFoundError, ValueError):
        recorded = 0
    summary = getattr(learner, "summary", {})
    actor = summary.get("actors", {}).get("ros-arm", {})
    result = {
        "task": task_id, "env_steps": args.steps, "warmup_steps": args.warmup, "seed": args.seed,
        "interventions": not args.no_interventions, "wall_time_s": wall, "episodes": len(episodes),
        "intervention_steps": actor.get("intervention_steps", 0), "demo_buffer": actor.get("demo_steps", 0),
        "policy_versions_acted_with": len([v for v in versions if v >= 0]), "recorded_episodes": recorded,
        "final_eval_success": summary.get("final_eval_success"), "evals": evals, "blocks": blocks,
        "ros_eval_every": args.ros_eval_every, "ros_evals": ros_evals,
        "per_episode": [{k: r.get(k) for k in ("step", "success", "episode_length", "intervention_steps",
                                                 "episode_return", "eval")} for r in everything],
        "command": "uv run --frozen python benchmarks/ros_online.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "no_interventions")),
    }
    print(f"\n{task_id}: {args.steps} env steps through ROS in {wall:.0f} s; {len(episodes)} episodes, "
          f"{result['intervention_steps']} steps driven by the scripted person, "
          f"{result['policy_versions_acted_with']} weight versions acted with, {recorded} episodes recorded")
    print(f"{'episodes':>10} {'to step':>8} {'train success':>14} {'intervention':>13} {'return':>8}")
    for b in blocks:
        print(f"{b['episodes']:>10} {b['last_step']:>8} {b['train_success']:>14.2f} {b['intervention_rate']:>13.2f} "
              f"{b['mean_return']:>8.2f}")
    for e in evals:
        print(f"eval at {e['step']:>6} env steps (learner's gym env): success {e['success']:.2f}, "
              f"return {e['return']:.2f}")
    for i in range(0, len(ros_evals), 4):
        b = ros_evals[i:i + 4]
        print(f"eval episodes through ROS to step {b[-1]['step']:>6}: success {np.mean([e['success'] for e in b]):.2f} "
              f"({len(b)} episodes), return {np.mean([e['return'] for e in b]):.2f}")
    out = args.out or RESULTS / f"ros_online_{args.task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if result["blocks"]:
        x = [b["last_step"] for b in result["blocks"]]
        ax.plot(x, [b["train_success"] for b in result["blocks"]], "o-", label="training success (per block)")
        ax.plot(x, [b["intervention_rate"] for b in result["blocks"]], "s--", label="steps driven by the person")
    if result["evals"]:
        ax.plot([e["step"] for e in result["evals"]], [e["success"] for e in result["evals"]], "^-",
                label="eval success (learner's env)")
    if result.get("ros_evals"):
        ev = result["ros_evals"]
        x = [ev[i:i + 4][-1]["step"] for i in range(0, len(ev), 4)]
        ax.plot(x, [np.mean([e["success"] for e in ev[i:i + 4]]) for i in range(0, len(ev), 4)], "v-",
                label="eval success through ROS (4 episodes)")
    ax.set_xlabel("env steps")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{result['task']} online through ROS, scripted person")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
