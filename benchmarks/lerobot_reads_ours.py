"""Does the ``lerobot`` package's own loader read a dataset we wrote?

lerobot pulls in its own torch/datasets/av versions, so it lives in a separate
environment and this script talks to it through a subprocess:

    uv venv /tmp/lerobot-venv --python 3.11
    uv pip install --python /tmp/lerobot-venv/bin/python lerobot
    uv run --frozen python benchmarks/lerobot_reads_ours.py --lerobot-python /tmp/lerobot-venv/bin/python
    # a dataset the sim recorder wrote (camera included):
    uv run --frozen rewardforge-record task=panda_pick_place episodes=3 cameras=[front] image_size=64 out=/tmp/pp
    uv run --frozen python benchmarks/lerobot_reads_ours.py --lerobot-python /tmp/lerobot-venv/bin/python --dataset /tmp/pp

It writes a small dataset with :class:`common.episodes.DatasetWriter` (3 episodes,
a 2-D keypoint field, one 24x32 camera, final observations), then in the lerobot
environment opens it with ``LeRobotDataset(repo_id, root=...)`` and reads every
frame. It compares frame count, episode boundaries, ``observation.state``,
``action``, ``next.reward`` and decoded camera frames (mean absolute error, in grey
levels) with our reader and writes ``benchmarks/results/lerobot_reads_ours.json``.
Exit code 1 when lerobot cannot load the dataset or the values disagree.
Without ``--lerobot-python`` it only writes the dataset and prints where.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Runs inside the lerobot environment; prints one JSON line.
_LEROBOT_SNIPPET = r"""
import json, sys
import numpy as np
root = sys.argv[1]
try:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
except ImportError:
    from lerobot.common.datasets.lerobot_dataset import LeRobotDataset
# video_backend="pyav": lerobot's default decoder (torchcodec) needs the system's FFmpeg shared
# libraries, which a bare machine lacks; PyAV bundles its own. Both decode the same mp4.
ds = LeRobotDataset("rewardforge/lerobot_reads_ours", root=root, video_backend=sys.argv[2])
cams = [k for k, f in ds.meta.features.items() if f["dtype"] == "video"]
out = {"version": __import__("lerobot").__version__ if hasattr(__import__("lerobot"), "__version__") else "?",
       "num_frames": len(ds), "num_episodes": ds.num_episodes, "state": [], "action": [], "reward": [],
       "episode_index": [], "frames": {c: [] for c in cams}}
for i in range(len(ds)):
    item = ds[i]
    out["state"].append(item["observation.state"].numpy().tolist())
    out["action"].append(item["action"].numpy().tolist())
    out["reward"].append(float(item["next.reward"]))
    out["episode_index"].append(int(item["episode_index"]))
    for c in cams:
        img = item[c].numpy()  # (C, H, W) float in [0, 1]
        out["frames"][c].append((np.transpose(img, (1, 2, 0)) * 255).round().astype(int).tolist())
print(json.dumps(out))
"""


def write_dataset(root: Path) -> None:
    from common.episodes import DatasetWriter
    from common.spec import ActionSpec, EmbodimentSpec, ObsField

    spec = EmbodimentSpec(
        "bench/toy", 10.0, ActionSpec(("dx", "dy", "dz", "gripper"), (0.05, 0.05, 0.05, 1.0)),
        (ObsField("ee_pos", (3,)), ObsField("keypoints", (2, 3)),
         ObsField("image_front", (24, 32, 3), dtype="uint8", frame="camera", units="px")),
    )
    yy, xx = np.mgrid[0:24, 0:32].astype(np.float32)

    def obs(t, e):
        img = np.stack([40 + 4 * xx + 6 * t, 60 + 5 * yy, 100 + 30 * e + 0 * xx], -1)
        return {"ee_pos": np.array([0.1 * t, e, 0.3]), "keypoints": np.full((2, 3), t + e),
                "image_front": np.clip(img, 0, 255).astype(np.uint8)}

    with DatasetWriter(root, spec) as w:
        for e, length in enumerate((5, 7, 4)):
            w.begin_episode("pick the block" if e != 1 else "open the drawer", source="expert")
            for t in range(length):
                w.add_frame(obs(t, e), np.array([np.sin(t), np.cos(t), 0.0, 1.0]), reward=t * 0.1,
                            done=t == length - 1)
            w.end_episode(final_obs=obs(length, e))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lerobot-python", help="python of an environment with lerobot installed")
    parser.add_argument("--video-backend", default="pyav", choices=["pyav", "torchcodec"],
                        help="lerobot's video decoder (torchcodec needs the system's FFmpeg libraries)")
    parser.add_argument("--root", help="where to write the dataset (default: a temporary directory)")
    parser.add_argument("--dataset", help="check this existing dataset instead of writing the toy one "
                                          "(e.g. one recorded by rewardforge-record with cameras=[front])")
    args = parser.parse_args()
    if args.dataset:
        root = Path(args.dataset)
    else:
        root = Path(args.root or tempfile.mkdtemp(prefix="rf_lerobot_")) / "ds"
        write_dataset(root)
        print(f"wrote {root}")
    if not args.lerobot_python:
        print("no --lerobot-python given: not checked with lerobot")
        return

    from common.episodes import Dataset

    proc = subprocess.run([args.lerobot_python, "-c", _LEROBOT_SNIPPET, str(root), args.video_backend],
                          capture_output=True, text=True, timeout=600)
    result: dict = {"root": str(root), "toy_dataset": not args.dataset, "video_backend": args.video_backend,
                    "loaded": proc.returncode == 0}
    problems: list[str] = []
    if proc.returncode != 0:
        problems.append("lerobot failed to load the dataset:\n" + proc.stderr[-3000:])
    else:
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        ours = Dataset(root)
        eps = [ours.episode(i, images=True) for i in range(ours.num_episodes)]
        state = np.concatenate([e["observation.state"] for e in eps])
        action = np.concatenate([e["action"] for e in eps])
        reward = np.concatenate([e["next.reward"] for e in eps])
        cams = sorted(got["frames"])
        result.update({
            "lerobot_version": got["version"], "frames": got["num_frames"], "episodes": got["num_episodes"],
            "state_max_abs_diff": float(np.abs(np.asarray(got["state"]) - state).max()),
            "action_max_abs_diff": float(np.abs(np.asarray(got["action"]) - action).max()),
            "reward_max_abs_diff": float(np.abs(np.asarray(got["reward"]) - reward).max()),
            "cameras": cams,
            "image_mean_abs_diff_vs_our_decoder": max(
                (float(np.abs(np.asarray(got["frames"][c]) - np.concatenate([e[c] for e in eps]).astype(int)).mean())
                 for c in cams), default=0.0),
        })
        if got["num_frames"] != ours.num_frames or got["num_episodes"] != ours.num_episodes:
            problems.append(f"lerobot sees {got['num_frames']} frames / {got['num_episodes']} episodes, "
                            f"we wrote {ours.num_frames} / {ours.num_episodes}")
        if got["episode_index"] != np.concatenate([e["episode_index"] for e in eps]).tolist():
            problems.append("episode_index per frame differs")
        for key in ("state", "action", "reward"):
            if result[f"{key}_max_abs_diff"] > 1e-6:
                problems.append(f"{key} differs by {result[f'{key}_max_abs_diff']}")
        if result["image_mean_abs_diff_vs_our_decoder"] > 2.0:
            problems.append(f"decoded frames differ by {result['image_mean_abs_diff_vs_our_decoder']:.2f} grey levels")
    result["problems"] = problems
    out = REPO / "benchmarks" / "results" / f"lerobot_reads_ours{'' if not args.dataset else '_' + root.name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
