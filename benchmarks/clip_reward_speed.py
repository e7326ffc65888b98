"""How fast the CLIP reward scores frames on this machine, against two yardsticks.

Variants, all with the same model, precision and torch thread count:

* ``term``:  the reward term (rewards/clip.py) on a batch of uint8 frames: batched torch
  preprocessing, ``batch_size`` frames per forward pass, the VLM-RM formula.
* ``naive``: one frame per call through open_clip's own preprocess transform (PIL
  resize/crop/normalise), ``encode_image`` on a batch of one, the same formula.
* ``raw``:   only the model's batched ``encode_image`` on already-preprocessed tensors of
  the same batch size: the ceiling the term can approach.

Targets: term >= 3x naive and >= 80% of raw. The weights are randomly initialised (no
pretrained weights can be fetched here); speed does not depend on the weight values.
Timings on a shared machine are noisy: variants are interleaved (the order rotates each
round) and the median of the rounds is reported, with the per-round ratios.

    uv run --frozen python benchmarks/clip_reward_speed.py            # 1-6 minutes on 2 shared cores
    uv run --frozen python benchmarks/clip_reward_speed.py --repeats 5 --naive-frames 8 --real
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import rewards
from rewards import Transitions
from rewards import clip as rc

ROOT = Path(__file__).resolve().parents[1]


def synthetic_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 frames (upsampled noise), the size the env would render."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (n, 3, size // 8, size // 8), generator=g).float()
    big = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return big.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def rendered_frames(n: int, size: int) -> np.ndarray:
    """Frames of PandaReach-v0's front camera under a scripted expert (slow: ~20 frames/s)."""
    import sim
    import sim.gl
    from sim.panda.experts import make_expert

    sim.gl.before_gl_context()
    env = sim.make("rewardforge/PandaReach-v0", cameras=("front",), image_size=size)
    out = []
    try:
        obs, _ = env.reset(seed=0)
        act = make_expert(env)
        while len(out) < n:
            obs, _, term, trunc, _ = env.step(act(obs))
            out.append(obs["image_front"])
            if term or trunc:
                obs, _ = env.reset()
    finally:
        env.close()
    return np.stack(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--precision", default="auto", choices=rc.PRECISIONS)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=64, help="frames per timed call of term and raw")
    ap.add_argument("--naive-frames", type=int, default=4, help="frames per timed naive loop (slow)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--real", action="store_true", help="use rendered Panda frames instead of synthetic ones")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/clip_reward_speed.json"))
    args = ap.parse_args(argv)

    from omegaconf import OmegaConf
    from open_clip import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    yaml = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/reward/clip.yaml"), resolve=True)
    params = {**yaml["params"], "model": args.model, "pretrained": "random", "precision": args.precision,
              "device": "cpu", "batch_size": args.batch_size}
    term = rewards.build({"kind": "clip", "params": params})
    enc = term.encoder
    model, dtype = enc.model, enc.dtype
    size = enc.preprocess.size
    n = args.frames
    frames = rendered_frames(n, size) if args.real else synthetic_frames(n, size)
    batch = Transitions(obs={"image_front": frames}, action=np.zeros((n, 4), np.float32),
                        next_obs={"image_front": frames})
    pil_tf = image_transform_v2(PreprocessCfg(**get_model_preprocess_cfg(model)), is_train=False)
    with torch.inference_mode():
        pre = enc.preprocess(frames)  # raw's input: preprocessed, in the model's precision
    naive_frames = frames[: args.naive_frames]

    # The naive loop at the term's precision and in fp32 (at batch 1, bf16 is slower than fp32 on
    # this CPU): the ratio is taken against the faster of the two, so it is not flattered.
    import copy

    model32 = model if dtype == torch.float32 else copy.deepcopy(model).float()

    def make_naive(m: torch.nn.Module, dt: torch.dtype):
        @torch.inference_mode()
        def naive() -> np.ndarray:
            out = []
            for f in naive_frames:
                x = pil_tf(Image.fromarray(f))[None].to(dt)
                e = torch.nn.functional.normalize(m.encode_image(x).float(), dim=-1)
                out.append(rc.vlm_rm_reward(e, term.goal, term.proj))
            return torch.cat(out).numpy()

        return naive

    @torch.inference_mode()
    def raw() -> None:
        for i in range(0, n, args.batch_size):
            model.encode_image(pre[i:i + args.batch_size])

    def term_call() -> np.ndarray:
        return term(batch).reward

    variants = {"term": (term_call, n), "naive": (make_naive(model, dtype), len(naive_frames)), "raw": (raw, n)}
    if model32 is not model:
        variants["naive_fp32"] = (make_naive(model32, torch.float32), len(naive_frames))
    threads = torch.get_num_threads()
    print(f"model {args.model} (RANDOM weights: speed only), precision {enc.precision} "
          f"(cpu native bf16: {rc.cpu_has_bf16()}), torch {torch.__version__}, threads {threads}, "
          f"batch {args.batch_size}, frames {n} ({'rendered' if args.real else 'synthetic'} "
          f"{size}x{size} uint8), naive frames {len(naive_frames)}, repeats {args.repeats}", flush=True)

    # warm-up (allocator, oneDNN kernels for both batch shapes; raw runs the term's shapes)
    r_term = term_call()
    with torch.inference_mode():
        model.encode_image(pre[:1])

    times: dict[str, list[float]] = {k: [] for k in variants}
    results: dict[str, np.ndarray | None] = {}
    names = list(variants)
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            fn, count = variants[name]
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(count / (time.perf_counter() - t0))
        print(f"round {rep + 1}: " + ", ".join(f"{k} {times[k][-1]:.2f}" for k in names) + " frames/s", flush=True)
    r_naive = results["naive"]
    max_diff = float(np.max(np.abs(r_term[: len(r_naive)] - r_naive)))
    print(f"term vs naive reward (same frames), max |diff| over {len(r_naive)} frames: {max_diff:.2e}")

    med = {k: statistics.median(v) for k, v in times.items()}
    best_naive = max((k for k in med if k.startswith("naive")), key=med.get)
    print(f"naive baseline: {best_naive} (the faster naive loop)")
    per_round = {
        "term_over_naive": [t / nv for t, nv in zip(times["term"], times[best_naive], strict=True)],
        "term_over_raw": [t / r for t, r in zip(times["term"], times["raw"], strict=True)],
    }
    ratios = {"term_over_naive": med["term"] / med[best_naive], "term_over_raw": med["term"] / med["raw"]}
    ratios_round_median = {k: statistics.median(v) for k, v in per_round.items()}
    print("median frames/s: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print(f"term / naive = {ratios['term_over_naive']:.2f}x (target >= 3; per-round median "
          f"{ratios_round_median['term_over_naive']:.2f}x)")
    print(f"term / raw   = {100 * ratios['term_over_raw']:.0f}% (target >= 80%; per-round median "
          f"{100 * ratios_round_median['term_over_raw']:.0f}%)")

    result = {
        "benchmark": "clip_reward_speed",
        "note": "random-init weights (speed only); frames/s on a shared CPU, medians of interleaved rounds",
        "model": args.model, "precision": enc.precision, "cpu_native_bf16": rc.cpu_has_bf16(),
        "torch": torch.__version__, "threads": threads, "machine": platform.processor() or platform.machine(),
        "batch_size": args.batch_size, "frames": n, "naive_frames": len(naive_frames),
        "frame_source": "rendered PandaReach-v0 front" if args.real else "synthetic",
        "image_size": size, "repeats": args.repeats,
        "frames_per_s_median": med, "frames_per_s_rounds": times, "naive_baseline": best_naive,
        "ratios_of_medians": ratios, "ratios_per_round": per_round, "ratios_per_round_median": ratios_round_median,
        "targets": {"term_over_naive_min": 3.0, "term_over_raw_min": 0.8,
                    "met": bool(ratios["term_over_naive"] >= 3.0 and ratios["term_over_raw"] >= 0.8)},
        "term_vs_naive_max_abs_reward_diff": max_diff,
        "command": "python benchmarks/clip_reward_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
