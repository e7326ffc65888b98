"""Train an image success classifier and report how well it does on held-out episodes.

    python -m rewards.train_classifier --env-id rewardforge/PandaReach-v0 --camera handcam_rgb \
        --image-size 48 --n-expert 20 --n-noisy 20 --n-random 20 --out runs/classifier/reach

Frames come from simulation (``rewards.frames.collect``) or from a labelled-frames
``.npz`` (``--frames``). They are split by episode into train / validation / held-out;
the threshold is calibrated on validation (lowest threshold reaching
``--precision-target``, else 0.5); precision / recall are measured on held-out
episodes. Writes ``<out>/classifier.pt`` (use it as ``reward.params.checkpoint``),
``<out>/report.json`` and ``<out>/probability.png`` (success probability over time for
held-out episodes that succeed and that fail).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_open


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rewardforge-train-classifier", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("frames")
    data.add_argument("--frames", type=Path, help="labelled-frames .npz to train on (skips collection)")
    data.add_argument("--env-id", default="rewardforge/PandaReach-v0")
    data.add_argument("--camera", default="handcam_rgb",
                      help="front | side | handcam_rgb; pick one where success is visible (reach: handcam_rgb)")
    data.add_argument("--image-size", type=int, default=48)
    data.add_argument("--n-expert", type=int, default=20)
    data.add_argument("--n-noisy", type=int, default=20)
    data.add_argument("--n-random", type=int, default=20)
    data.add_argument("--max-steps", type=int, default=None, help="episode length (default: the env's limit)")
    data.add_argument("--save-frames", type=Path, help="also write the collected frames here (.npz)")
    data.add_argument("--split", type=float, nargs=3, default=(0.6, 0.2, 0.2), metavar=("TRAIN", "VAL", "HELD_OUT"),
                      help="episode fractions")
    train = p.add_argument_group("training")
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--batch-size", type=int, default=64, help="per ensemble member, half success frames")
    train.add_argument("--lr", type=float, default=3e-4)
    train.add_argument("--pad", type=int, default=4, help="random-crop padding in px (0: no augmentation)")
    train.add_argument("--ensemble", type=int, default=3)
    train.add_argument("--hidden", type=int, default=128)
    train.add_argument("--encoder", choices=("cnn", "open_clip", "resnet18"), default="cnn")
    train.add_argument("--encoder-weights", help="local weights file for open_clip / resnet18 (never downloaded)")
    train.add_argument("--encoder-model", default="ViT-B-32", help="open_clip model name")
    train.add_argument("--precision-target", type=float, default=0.95)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def plot_probabilities(model: Any, test: Any, path: Path, max_each: int = 5) -> None:
    """Success probability vs step for up to ``max_each`` held-out episodes that reach success
    (green) and that never do (red), with the threshold; shows at a glance whether the
    classifier fires when, and only when, the task is done."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    shown = {True: 0, False: 0}
    for ep in test.episodes:
        e = test.episode_frames(int(ep))
        ok = bool(e.success.any())
        if shown[ok] >= max_each:
            continue
        shown[ok] += 1
        prob = model.predict(e.frames)
        ax.plot(e.step, prob, color="tab:green" if ok else "tab:red", alpha=0.8,
                label=("reaches success" if ok else "never succeeds") if shown[ok] == 1 else None)
        if ok:
            first = int(e.step[np.argmax(e.success)])
            ax.axvline(first, color="tab:green", alpha=0.2, lw=1)
    ax.axhline(model.threshold, color="k", ls="--", lw=1, label=f"threshold {model.threshold:.2f}")
    ax.set(xlabel="step", ylabel="P(success)", ylim=(-0.02, 1.02), title="held-out episodes")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``rewardforge-train-classifier``)."""
    args = parse_args(argv)
    from rewards.base import RewardConfigError
    from rewards.frames import LabelledFrames, collect, split_by_episode

    if args.frames is not None:
        if not args.frames.is_file():
            print(f"error: --frames {str(args.frames)!r} does not exist", file=sys.stderr)
            return 2
        data = LabelledFrames.load(args.frames)
    else:
        data = collect(args.env_id, args.n_expert, args.n_noisy, args.n_random, camera=args.camera,
                       image_size=args.image_size, seed=args.seed, max_steps=args.max_steps,
                       progress_bar=not args.no_progress)
        if args.save_frames:
            data.save(args.save_frames)
    # torch after rendering is fine: collect() loaded triton first (sim/gl.py)
    from rewards.learned import ClassifierTrainConfig, train_classifier

    encoder: dict[str, Any] = {"type": args.encoder}
    if args.encoder != "cnn":
        encoder["weights"] = args.encoder_weights
        if args.encoder == "open_clip":
            encoder["model"] = args.encoder_model
    cfg = ClassifierTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, pad=args.pad,
                                ensemble=args.ensemble, hidden=args.hidden, encoder=encoder,
                                precision_target=args.precision_target, seed=args.seed, device=args.device)
    train, val, test = split_by_episode(data, tuple(args.split), seed=args.seed)
    print(f"{len(data)} frames ({int(data.success.sum())} success) in {len(data.episodes)} episodes: "
          f"{len(train.episodes)} train / {len(val.episodes)} validation / {len(test.episodes)} held out")
    try:
        model = train_classifier(train, val, cfg, test=test, progress_bar=not args.no_progress)
    except RewardConfigError as e:
        msg = str(e).replace("encoder.weights", "--encoder-weights (encoder.weights)")
        print(f"error: {msg}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "classifier.pt")
    report = {**model.metrics, "frames_source": str(args.frames) if args.frames else args.env_id,
              "camera": data.camera, "image_size": data.image_size}
    with atomic_open(args.out / "report.json") as f:
        f.write(json.dumps(report, indent=2, default=str).encode())
    if len(test):
        plot_probabilities(model, test, args.out / "probability.png")
    m = model.metrics
    held = m.get("held_out", {})

    def num(key: str) -> str:  # None: undefined (e.g. precision when nothing was predicted a success)
        v = held.get(key)
        return "n/a" if v is None else f"{v:.3f}"

    print(f"threshold {m['threshold']:.3f} ({m['threshold_source']}, target precision {m['precision_target']}); "
          f"held-out precision {num('precision')} recall {num('recall')} f1 {num('f1')} auroc {num('auroc')} "
          f"on {held.get('n_frames', 0)} frames ({held.get('n_positive', 0)} success)")
    val_recall = m["validation"].get("recall")
    if val_recall is not None and val_recall < 0.5:
        print(f"warning: at this threshold the classifier finds only {val_recall:.0%} of validation successes; "
              "more data, more --steps, a larger --image-size or a camera that shows success better "
              "(e.g. the wrist camera) may help", file=sys.stderr)
    print(f"wrote {args.out / 'classifier.pt'}, report.json, probability.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
