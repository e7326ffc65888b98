"""CLIP reward: how much a camera frame looks like a text description of the goal.

Method: VLM-RM (Rocamonde et al., "Vision-Language Models are Zero-Shot Reward
Models for RL"; see ../shared/design/REFERENCES.md). With x the unit CLIP embedding
of a frame, g the mean of the unit embeddings of the goal prompts, b the same for
the baseline prompts and d = g - b:

    P = a d d^T / ||d||^2 + (1 - a) I          ("goal-baseline regularisation")
    R = 1 - 1/2 ||(x - g) P||^2

a = 0 gives R = 1 - 1/2 ||x - g||^2 = x.g + (1 - ||g||^2)/2, which grows with the
cosine of x and g; a = 1 keeps only the part of x - g along d, so directions that
the goal and baseline prompts share (background, robot look) stop mattering.
g and b are means of unit vectors and are *not* re-normalised, as in the
authors' code (``target = embed(prompts).mean(0)``); with one prompt each they are
unit vectors anyway.

Why the engineering below: the model is the expensive part (ViT-B-32 encodes
tens of frames/s on this 2-core CPU), so

* the term is ``batched``: the training loop holds transitions back and hands over
  whole rollouts, as VLM-RM embeds a rollout's frames in one pass;
* frames are preprocessed as one uint8 tensor in torch (resize + the model's
  mean/std), not frame by frame through PIL as open_clip's own transform does;
* the prompt embeddings are computed once, when the term is built;
* ``every: k`` scores only every k-th step of an episode (see :meth:`ClipReward.sources`);
* bf16 where the hardware has it (``precision: auto``).

Weights: ``pretrained`` is an open_clip tag (downloads; needs network once) or a
local checkpoint file (offline). Nothing in this repository downloads at import or
test time.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.hardware import auto_precision, cpu_has_bf16
from common.spec import EmbodimentSpec
from rewards.base import RewardOutput, RewardTerm, Transitions, register

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
RANDOM_WEIGHTS = "random"  # pretrained value for a randomly initialised model (tests, benchmarks)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------
# the VLM-RM formula


def projection(goal: torch.Tensor, baseline: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """P = a d d^T / ||d||^2 + (1 - a) I with d = goal - baseline (VLM-RM, Sec. "goal-baseline
    regularisation"). ``baseline`` may be None only when ``alpha == 0``."""
    dim = goal.shape[-1]
    eye = torch.eye(dim, dtype=torch.float32, device=goal.device)
    if alpha == 0.0:
        return eye
    if baseline is None:
        raise ValueError("alpha > 0 needs baseline prompts (the direction d = g - b)")
    d = (goal - baseline).float().reshape(dim, 1)
    norm2 = float((d * d).sum())
    if norm2 < 1e-12:
        raise ValueError("goal and baseline prompts embed to the same vector (d = g - b = 0), so the "
                         "projection is undefined; make the prompts differ or set alpha to 0")
    return alpha * (d @ d.T) / norm2 + (1.0 - alpha) * eye


def vlm_rm_reward(x: torch.Tensor, goal: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """R = 1 - 1/2 ||(x - g) P||^2 for unit image embeddings x (N, D); returns (N,)."""
    diff = (x.float() - goal.float()) @ proj
    return 1.0 - 0.5 * (diff * diff).sum(-1)


# ---------------------------------------------------------------------------
# device, precision


@cache
def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ValueError(f"params.device={name!r} is not allowed; use one of {DEVICES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("params.device='cuda' but CUDA is not available here; use cpu or auto")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 on CUDA devices that support it and on CPUs with native bf16, else fp32."""
    if name not in PRECISIONS:
        raise ValueError(f"params.precision={name!r} is not allowed; use one of {PRECISIONS}")
    if name != "auto":
        return name
    return auto_precision(device.type)


# ---------------------------------------------------------------------------
# loading open_clip


def load_open_clip(model_name: str, pretrained: str, *, device: torch.device, precision: str,
                   cache_dir: str | None = None, quick_gelu: bool | None = None) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer). ``pretrained``: an open_clip tag, a checkpoint file, or
    ``"random"``. Failures raise ValueError naming the ``params`` key to change."""
    import open_clip

    schema = model_name.split(":", 1)[0] if ":" in model_name else None
    if schema is None and open_clip.get_model_config(model_name) is None:
        known = open_clip.list_models()
        raise ValueError(f"params.model={model_name!r} is not an open_clip architecture; e.g. "
                         f"{[m for m in known if m.startswith('ViT-B')][:8]} (open_clip.list_models() has all "
                         f"{len(known)}), or 'hf-hub:org/repo' / 'local-dir:/path'")
    tag_cfg: dict[str, Any] = {}
    weights: str | None = None
    if schema is None:
        if pretrained == RANDOM_WEIGHTS:
            log.warning("CLIP reward: %s with RANDOM weights (params.pretrained=random); rewards are "
                        "meaningless except for tests and speed measurements", model_name)
        else:
            tag_cfg = dict(open_clip.get_pretrained_cfg(model_name, pretrained) or {})
            if not tag_cfg and not os.path.isfile(os.path.expanduser(pretrained)):
                tags = open_clip.list_pretrained_tags_by_model(model_name)
                raise ValueError(
                    f"params.pretrained={pretrained!r} is neither a pretrained tag of {model_name!r} "
                    f"(tags: {tags[:6]}{' ...' if len(tags) > 6 else ''}) nor an existing checkpoint file. Offline, download the weights on a "
                    f"machine with internet (e.g. {_source_hint(open_clip, model_name, tags[0] if tags else '')}) "
                    f"and set params.pretrained to the file's path (.bin, .pt, .pth, .safetensors)")
            weights = pretrained if tag_cfg else os.path.expanduser(pretrained)
    if quick_gelu is None:  # OpenAI-trained weights use QuickGELU; the plain config names do not
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    try:
        model = open_clip.create_model(model_name, pretrained=weights, precision=precision, device=device,
                                       cache_dir=cache_dir, force_quick_gelu=bool(quick_gelu))
    except Exception as err:
        if tag_cfg:
            raise ValueError(
                f"params.pretrained={pretrained!r}: could not fetch the weights of tag {pretrained!r} for "
                f"{model_name!r} ({_first_line(err)}). Without network, download them on a machine with "
                f"internet ({_source_hint(open_clip, model_name, pretrained)}) and set params.pretrained to "
                f"the file's path; a copy already in the Hugging Face cache is found with HF_HUB_OFFLINE=1 "
                f"(params.cache_dir points at another cache)") from err
        key = "params.pretrained" if weights else "params.model"
        raise ValueError(f"{key}: open_clip could not build {model_name!r} with pretrained={pretrained!r}: "
                         f"{_first_line(err)} (does the checkpoint match the architecture? OpenAI "
                         f"weights also need params.quick_gelu=true)") from err
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    return model, tokenizer


def _source_hint(open_clip: Any, model_name: str, tag: str) -> str:
    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    where = []
    if cfg.get("hf_hub"):
        where.append(f"Hugging Face repo {cfg['hf_hub'].rstrip('/')!r}, file open_clip_pytorch_model.bin "
                     "or open_clip_model.safetensors")
    if cfg.get("url"):
        where.append(f"URL {cfg['url']}")
    src = " or ".join(where) or "the weights' publisher"
    return f"tag {tag!r}: {src}; or open_clip.create_model({model_name!r}, pretrained={tag!r}) fills the cache"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


# ---------------------------------------------------------------------------
# preprocessing and encoding


class FramePreprocess:
    """uint8 frames (N, H, W, 3) -> model input (N, 3, S, S), as one tensor operation.

    Does what open_clip's eval transform does per PIL image (resize, centre crop, /255,
    mean/std) on the whole batch: square frames are resized straight to S (skipped when
    already S, the usual case since the term asks the env to render at the model's size);
    other frames follow the model's ``resize_mode`` (``shortest``: shortest side to S then
    centre crop; ``squash``: to S x S; ``longest``: longest side to S, padded with
    ``fill_color``). Bicubic resampling uses antialiasing, like PIL, and is rounded and
    clamped to the uint8 range as PIL's uint8 output is.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *, device: torch.device,
                 dtype: torch.dtype, interpolation: str = "bicubic", resize_mode: str = "shortest",
                 fill_color: int = 0) -> None:
        self.size, self.device, self.dtype = int(size), device, dtype
        self.interpolation = "bicubic" if interpolation == "bicubic" else "bilinear"
        self.resize_mode, self.fill = resize_mode, float(fill_color)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)
        # (u/255 - mean)/std = u * scale + shift: one fused multiply-add per element.
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t

    def _resize(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = F.interpolate(x, size=(h, w), mode=self.interpolation, antialias=True, align_corners=False)
        return x.round_().clamp_(0.0, 255.0)

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # read-only arrays (env buffers) are fine: nothing writes to them
            warnings.simplefilter("ignore", UserWarning)
            u8 = torch.as_tensor(frames)
        if u8.dtype != torch.uint8 or u8.ndim != 4 or u8.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (N, H, W, 3), got {tuple(u8.shape)} {u8.dtype}")
        x = u8.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        h, w, s = x.shape[-2], x.shape[-1], self.size
        if (h, w) != (s, s):
            if h == w or self.resize_mode == "squash":
                x = self._resize(x, s, s)
            elif self.resize_mode == "longest":
                r = s / max(h, w)
                nh, nw = max(1, round(h * r)), max(1, round(w * r))
                x = self._resize(x, nh, nw)
                top, left = (s - nh) // 2, (s - nw) // 2
                x = F.pad(x, (left, s - nw - left, top, s - nh - top), value=self.fill)
            else:  # shortest side to s, then centre crop (open_clip's default)
                r = s / min(h, w)
                nh, nw = max(s, round(h * r)), max(s, round(w * r))
                x = self._resize(x, nh, nw)
                top, left = (nh - s) // 2, (nw - s) // 2
                x = x[..., top:top + s, left:left + s]
        return torch.addcmul(self.shift, x, self.scale).to(self.dtype)


class ClipEncoder:
    """An open_clip model with batched frame encoding and a prompt-embedding cache.

    Both return unit-norm float32 embeddings on the model's device.
    """

    def __init__(self, model: Any, tokenizer: Any, *, device: torch.device, precision: str,
                 batch_size: int = 64, preprocess: FramePreprocess | None = None) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.precision, self.dtype, self.batch_size = precision, _DTYPES[precision], int(batch_size)
        if preprocess is None:
            from open_clip import get_model_preprocess_cfg

            cfg = get_model_preprocess_cfg(model)
            size = cfg.get("size", 224)
            size = size[0] if isinstance(size, (tuple, list)) else size
            preprocess = FramePreprocess(size, cfg["mean"], cfg["std"], device=device, dtype=self.dtype,
                                         interpolation=cfg.get("interpolation", "bicubic"),
                                         resize_mode=cfg.get("resize_mode", "shortest"),
                                         fill_color=cfg.get("fill_color", 0))
        self.preprocess = preprocess
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, D) unit embeddings, ``batch_size`` frames per forward pass."""
        outs = []
        for i in range(0, len(frames), self.batch_size):
            feats = self.model.encode_image(self.preprocess(frames[i:i + self.batch_size]))
            outs.append(F.normalize(feats.float(), dim=-1))
        if not outs:
            return torch.zeros(0, 0, device=self.device)
        return torch.cat(outs)

    @torch.inference_mode()
    def encode_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """(P, D) unit embeddings; each distinct prompt is tokenized and encoded once per encoder."""
        todo = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if todo:
            tokens = self.tokenizer(todo).to(self.device)
            feats = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text_cache.update(zip(todo, feats, strict=True))
        return torch.stack([self._text_cache[p] for p in prompts])


# ---------------------------------------------------------------------------
# the term


class ClipReward(RewardTerm):
    """VLM-RM reward of the *next* observation's frame ``image_<camera>`` of each transition.

    Components: ``similarity`` = cos(x, g); ``baseline_similarity`` = cos(x, b) when there
    are baseline prompts; ``reward`` = R (before ``scale``); ``scored`` = 1 where the frame was
    encoded, 0 where the value was held (``every > 1``).
    """

    name = "clip"
    batched = True

    def __init__(self, encoder: ClipEncoder, goal_prompts: Sequence[str], baseline_prompts: Sequence[str] = (),
                 alpha: float = 0.5, camera: str = "front", image_size: int | None = 224, every: int = 1) -> None:
        self.encoder, self.alpha, self.camera, self.every = encoder, float(alpha), camera, int(every)
        self.goal_prompts, self.baseline_prompts = list(goal_prompts), list(baseline_prompts)
        self.key = f"image_{camera}"
        self.requires = (self.key,)
        self.render_size = None if image_size is None else int(image_size)
        # Prompt embeddings: once, here (a build error beats a mid-run one).
        emb = encoder.encode_texts(self.goal_prompts + self.baseline_prompts)  # one tokenizer/encoder call
        ng = len(self.goal_prompts)
        self.goal = emb[:ng].mean(0)
        self.baseline = emb[ng:].mean(0) if self.baseline_prompts else None
        self.proj = projection(self.goal, self.baseline, self.alpha)
        self._goal_unit = F.normalize(self.goal, dim=0)
        self._base_unit = None if self.baseline is None else F.normalize(self.baseline, dim=0)

    def sources(self, batch: Transitions) -> np.ndarray:
        """For each transition, the index (in this batch) of the frame whose score it takes.

        With ``every = k``: a transition with ``episode_step % k == 0`` is scored (its own
        index). Any other transition takes the value of its predecessor in the same episode
        (and so, transitively, of the most recent scored frame of that episode) when that
        predecessor is earlier in this batch; otherwise it is scored itself, so every batch
        stands alone and nothing depends on what an earlier call saw. The predecessor of
        transition i is the latest earlier transition j with ``episode_step[j] ==
        episode_step[i] - 1`` whose ``next_obs`` frame is pixel-identical to i's ``obs``
        frame (a transition's observation is its predecessor's next observation), which
        separates interleaved environments without needing environment ids. Without
        ``obs[image_<camera>]`` no predecessor can be found and every transition is scored.
        """
        n = len(batch)
        own = np.arange(n)
        if self.every == 1 or n == 0:
            return own
        if batch.episode_step is None:
            raise ValueError(f"reward term {self.name!r}: params.every={self.every} needs batch.episode_step "
                             "(the training loop and episode relabelling fill it); use every: 1 otherwise")
        steps = np.asarray(batch.episode_step).astype(np.int64).reshape(-1)
        prev_frames = batch.obs.get(self.key)
        if prev_frames is None:
            return own
        next_frames = np.asarray(batch.next_obs[self.key])
        prev_frames = np.asarray(prev_frames)
        src = own.copy()
        # (episode_step, hash of next_obs frame) -> indices of transitions ending there, latest last
        ends: dict[tuple[int, int], list[int]] = {}
        for i in range(n):
            s = int(steps[i])
            if s % self.every != 0:
                cands = ends.get((s - 1, hash(prev_frames[i].tobytes())), [])
                for j in reversed(cands):
                    if np.array_equal(next_frames[j], prev_frames[i]):
                        src[i] = src[j]
                        break
            ends.setdefault((s, hash(next_frames[i].tobytes())), []).append(i)
        return src

    @torch.inference_mode()
    def compute(self, batch: Transitions) -> RewardOutput:
        n = len(batch)
        if self.key not in batch.next_obs:
            raise KeyError(f"reward term {self.name!r} reads next_obs[{self.key!r}] (params.camera="
                           f"{self.camera!r}), which this batch lacks; it has {sorted(batch.next_obs)}")
        frames = np.asarray(batch.next_obs[self.key])
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"reward term {self.name!r}: {self.key} must be uint8 (B, H, W, 3) frames, got "
                             f"{frames.shape} {frames.dtype}")
        src = self.sources(batch)
        scored, inverse = np.unique(src, return_inverse=True)  # frames to encode; row -> its frame
        x = self.encoder.encode_frames(frames[scored]) if len(scored) else torch.zeros(0, self.goal.shape[-1])
        reward = vlm_rm_reward(x, self.goal, self.proj)
        comps = {"similarity": x @ self._goal_unit}
        if self._base_unit is not None:
            comps["baseline_similarity"] = x @ self._base_unit
        inv = torch.as_tensor(inverse.reshape(-1), device=x.device)
        out = {k: v[inv].cpu().numpy() for k, v in comps.items()}
        r = reward[inv].cpu().numpy()
        out["reward"] = r
        out["scored"] = (src == np.arange(n)).astype(np.float32)
        return RewardOutput(r, out)


# ---------------------------------------------------------------------------
# building from config

DEFAULTS: dict[str, Any] = {
    "model": "ViT-B-32",
    "pretrained": "openai",
    "goal_prompts": None,  # required
    "baseline_prompts": [],
    "alpha": 0.5,
    "camera": "front",
    "image_size": 224,
    "every": 1,
    "batch_size": 64,
    "precision": "auto",
    "device": "auto",
    "cache_dir": None,
    "quick_gelu": None,
}


def _prompts(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(p, str) and p.strip() for p in value):
        raise ValueError(f"params.{key} must be a list of non-empty strings, got {value!r}")
    return list(value)


def _int(params: Mapping[str, Any], key: str, low: int) -> int:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"params.{key}={v!r} must be an integer >= {low}")
    return int(v)


@register("clip")
def build_clip(params: Mapping[str, Any], spec: EmbodimentSpec | None) -> RewardTerm:
    """params: see configs/reward/clip.yaml (and :data:`DEFAULTS`). Loads the model now, so
    missing weights fail at build time with the key to change."""
    del spec  # bound by rewards.build
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown params {unknown} for reward kind 'clip'; allowed: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **dict(params)}
    if p["goal_prompts"] is None:
        raise ValueError("params.goal_prompts is required: texts describing the goal state, e.g. "
                         "['a robot gripper touching a green ball']")
    goal = _prompts(p["goal_prompts"], "goal_prompts")
    base = _prompts(p["baseline_prompts"], "baseline_prompts") if p["baseline_prompts"] else []
    alpha = p["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"params.alpha={alpha!r} must be a number in [0, 1] (0: plain similarity to the goal, "
                         "1: only the goal-minus-baseline direction counts)")
    if float(alpha) > 0 and not base:
        raise ValueError(f"params.alpha={alpha} > 0 needs params.baseline_prompts (the neutral description the "
                         "goal direction is measured from); give some or set alpha: 0")
    camera = p["camera"]
    if not isinstance(camera, str) or not camera:
        raise ValueError(f"params.camera={camera!r} must be a camera name such as 'front'")
    image_size = None if p["image_size"] is None else _int(p, "image_size", 8)
    every, batch_size = _int(p, "every", 1), _int(p, "batch_size", 1)
    for key in ("model", "pretrained"):
        if not isinstance(p[key], str) or not p[key]:
            raise ValueError(f"params.{key}={p[key]!r} must be a non-empty string"
                             + (" (a tag such as 'openai', a checkpoint path, or 'random')" if key == "pretrained"
                                else ""))
    if p["quick_gelu"] is not None and not isinstance(p["quick_gelu"], bool):
        raise ValueError(f"params.quick_gelu={p['quick_gelu']!r} must be true, false or null (null: from the tag)")
    device = resolve_device(str(p["device"]))
    precision = resolve_precision(str(p["precision"]), device)
    model, tokenizer = load_open_clip(p["model"], p["pretrained"], device=device, precision=precision,
                                      cache_dir=p["cache_dir"], quick_gelu=p["quick_gelu"])
    encoder = ClipEncoder(model, tokenizer, device=device, precision=precision, batch_size=batch_size)
    return ClipReward(encoder, goal, base, alpha=float(alpha), camera=camera, image_size=image_size, every=every)


__all__ = ["ClipEncoder", "ClipReward", "FramePreprocess", "build_clip", "cpu_has_bf16", "load_open_clip",
           "projection", "resolve_precision", "vlm_rm_reward"]
