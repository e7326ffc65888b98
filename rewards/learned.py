"""Learned rewards: an image success classifier and a VIP-style perceptual reward.

Success classifier (the SERL / HIL-SERL recipe, see REFERENCES.md): an image encoder
(a small CNN trained from scratch, or a frozen pretrained network from a local file),
a small MLP head, random-crop augmentation, batches balanced between success and
failure frames. We train an *ensemble* of k members (default 3; own CNN + head each,
or k heads on one frozen encoder) on independently drawn batches: where the members
disagree (``prob_std``) the frame is unlike the training data, which is exactly where
a policy can hack a learned reward.

Data are split *by episode* into train / validation / held-out (rewards.frames), the
decision threshold is calibrated on validation episodes and the reported precision /
recall come from held-out episodes only.

VIP-style reward (Ma et al., "VIP", REFERENCES.md): with an embedding phi and a goal
embedding phi(g) (mean over the last frames of a few demonstrations),

    Phi(o) = -||phi(o) - phi(g)||_2 / d0        (d0 = 1, or the demos' mean initial distance)
    r(o, o') = gamma * Phi(o') - Phi(o)

a potential difference: over an episode (gamma = 1) the rewards telescope to
Phi(o_T) - Phi(o_0), and potential-based shaping leaves the optimal policy unchanged.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.atomic import atomic_open
from common.spec import EmbodimentSpec
from rewards.base import RewardConfigError, RewardOutput, RewardTerm, Transitions, register
from rewards.encoders import SmallCNN, build_encoder, is_frozen, pick_device, random_crop
from rewards.frames import LabelledFrames

CHECKPOINT_FORMAT = "rewardforge.success_classifier/1"


# ---------------------------------------------------------------------------
# the classifier


class SuccessClassifier(nn.Module):
    """An ensemble of ``k`` binary success classifiers on ``(B, H, W, 3)`` uint8 frames.

    ``config`` (plain dict, stored in checkpoints): ``image_size``, ``ensemble``,
    ``hidden``, ``encoder`` (see rewards.encoders), ``camera``.
    """

    def __init__(self, config: Mapping[str, Any], where: str = "encoder", weights_key: str | None = None) -> None:
        super().__init__()
        self.config = dict(config)
        self.image_size = int(self.config["image_size"])
        self.k = int(self.config.get("ensemble", 3))
        if self.k < 1:
            raise RewardConfigError(f"ensemble must be >= 1, got {self.k}")
        enc_cfg = dict(self.config.get("encoder") or {"type": "cnn"})
        self.frozen = is_frozen(enc_cfg)
        if self.frozen:  # one fixed feature extractor shared by all heads
            self.shared = build_encoder(enc_cfg, self.image_size, where, weights_key)
            self.encoders = nn.ModuleList()
            dims = [self.shared.out_dim] * self.k
        else:  # each member learns its own encoder: more diverse members, more honest disagreement
            self.shared = None
            self.encoders = nn.ModuleList(build_encoder(enc_cfg, self.image_size, where) for _ in range(self.k))
            dims = [e.out_dim for e in self.encoders]
        hidden = int(self.config.get("hidden", 128))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
            for d in dims
        )
        self.threshold = 0.5
        self.metrics: dict[str, Any] = {}

    @property
    def camera(self) -> str:
        return str(self.config.get("camera", "front"))

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    def member_logits(self, frames: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """(k, B) logits. ``frames`` is one (B, H, W, 3) uint8 batch for every member, or a
        list of k batches (training: each member sees its own batch)."""
        per_member = frames if isinstance(frames, list) else [frames] * self.k
        if self.shared is not None:
            if isinstance(frames, list):
                sizes = [len(f) for f in frames]
                feats = self.shared(torch.cat(frames)).split(sizes)
            else:
                feats = [self.shared(frames)] * self.k
        else:
            feats = [enc(f) for enc, f in zip(self.encoders, per_member, strict=True)]
        return torch.stack([head(z).squeeze(-1) for head, z in zip(self.heads, feats, strict=True)])

    @torch.no_grad()
    def member_probs(self, frames: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """(k, B) success probabilities of every member, in eval mode."""
        was_training = self.training
        self.eval()
        x = torch.as_tensor(np.asarray(frames))
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames must be (B, H, W, 3) uint8, got {tuple(x.shape)}")
        out = [torch.sigmoid(self.member_logits(x[i:i + batch_size].to(self.device))).cpu()
               for i in range(0, len(x), batch_size)]
        self.train(was_training)
        return torch.cat(out, dim=1).numpy() if out else np.zeros((self.k, 0), np.float32)

    def predict(self, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(B,) ensemble-mean success probability."""
        return self.member_probs(frames, batch_size).mean(axis=0)

    @torch.no_grad()
    def embed(self, frames: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(B, D) features: the shared encoder's, or the k members' concatenated (each
        unit-normalised so that no member dominates distances)."""
        self.eval()
        x = torch.as_tensor(np.asarray(frames))
        outs = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(self.device)
            if self.shared is not None:
                outs.append(self.shared(xb))
            else:
                outs.append(torch.cat([F.normalize(e(xb), dim=-1) for e in self.encoders], dim=-1))
        return torch.cat(outs)

    # ---- files ----------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """One torch file: config, threshold, metrics, weights (a frozen encoder's weights are
        not copied: the config names their file). Written atomically."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()
                 if not (self.frozen and k.startswith("shared."))}
        payload = {"format": CHECKPOINT_FORMAT, "config": _plain(self.config), "threshold": float(self.threshold),
                   "metrics": _plain(self.metrics), "state_dict": state}
        path = Path(path)
        with atomic_open(path) as f:
            torch.save(payload, f)
        return path


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu", encoder_weights: str | None = None,
                    where: str = "checkpoint") -> SuccessClassifier:
    """Load a classifier saved by :meth:`SuccessClassifier.save` (``weights_only`` unpickling).

    ``where`` names the config key holding ``path`` in error messages; ``encoder_weights``
    overrides the frozen encoder's file recorded in the checkpoint (moved machines)."""
    if not path:
        raise RewardConfigError(f"{where} is required: the path of a classifier checkpoint "
                                "(train one with rewardforge-train-classifier / rewards/train_classifier.py)")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise RewardConfigError(f"{where}: classifier checkpoint {str(path)!r} does not exist "
                                "(train one with rewards/train_classifier.py)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise RewardConfigError(f"{where}: {str(path)!r} is not a success-classifier checkpoint "
                                f"(expected format {CHECKPOINT_FORMAT!r})")
    config = dict(payload["config"])
    if encoder_weights:
        config["encoder"] = {**config.get("encoder", {}), "weights": str(encoder_weights)}
    try:
        model = SuccessClassifier(config, "encoder", "reward.params.encoder_weights" if encoder_weights else None)
    except RewardConfigError as e:
        hint = "" if encoder_weights else " (recorded in the checkpoint; override it with reward.params.encoder_weights)"
        raise RewardConfigError(f"{where}={str(path)!r}: {e}{hint}") from e
    try:
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as e:
        raise RewardConfigError(f"{where}: weights in {str(path)!r} do not fit its config: {e}") from e
    missing = [k for k in missing if not (model.frozen and k.startswith("shared."))]
    if missing or unexpected:
        raise RewardConfigError(f"{where}: {str(path)!r} lacks {missing[:5]} / has unexpected {unexpected[:5]}")
    model.threshold = float(payload["threshold"])
    model.metrics = dict(payload.get("metrics") or {})
    return model.to(device).eval()


def _plain(x: Any) -> Any:
    """Numbers, strings, lists and dicts only (what ``torch.load(weights_only=True)`` and strict JSON
    accept); NaN becomes None."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.generic,)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # undefined metric (e.g. precision with no predicted successes): JSON null
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


# ---------------------------------------------------------------------------
# calibration and metrics


def binary_metrics(prob: np.ndarray, label: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1, accuracy at ``prob >= threshold``, plus threshold-free AUROC."""
    prob, label = np.asarray(prob, np.float64), np.asarray(label, bool)
    pred = prob >= threshold
    tp, fp, fn = int(np.sum(pred & label)), int(np.sum(pred & ~label)), int(np.sum(~pred & label))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": float(np.mean(pred == label)) if len(label) else float("nan"),
            "auroc": auroc(prob, label), "n_frames": len(label), "n_positive": int(label.sum()),
            "n_predicted_positive": int(pred.sum()), "threshold": float(threshold)}


def auroc(prob: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties half
    (the Mann-Whitney U statistic over n_pos * n_neg)."""
    prob, label = np.asarray(prob, np.float64), np.asarray(label, bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(prob, kind="mergesort")
    ranks = np.empty(len(prob))
    sorted_p = prob[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def calibrate_threshold(prob: np.ndarray, label: np.ndarray, precision_target: float = 0.95,
                        fallback: float = 0.5) -> tuple[float, str]:
    """The lowest threshold t such that frames with ``prob >= t`` reach ``precision_target``.

    Lowest, because among thresholds that keep false positives rare enough (a false
    success is what a policy learns to exploit) it keeps the most true successes.
    Candidates are the observed probabilities. When none qualifies (no positives in the
    validation set, or the classifier never gets precise enough) return ``fallback``
    (0.5) and say so. Returns (threshold, "precision_target" or "fallback").
    """
    prob, label = np.asarray(prob, np.float64), np.asarray(label, bool)
    if not label.any():
        return float(fallback), "fallback"
    values = np.unique(prob)[::-1]  # candidate thresholds, high to low
    order = np.argsort(-prob, kind="mergesort")
    sp, sl = prob[order], label[order]
    tp = np.cumsum(sl)
    # number of frames with prob >= v, for each candidate v (descending probs)
    n_pred = np.searchsorted(-sp, -values, side="right")
    precision = tp[n_pred - 1] / n_pred
    ok = precision >= precision_target
    if not ok.any():
        return float(fallback), "fallback"
    return float(values[np.flatnonzero(ok)[-1]]), "precision_target"


# ---------------------------------------------------------------------------
# training


@dataclass
class ClassifierTrainConfig:
    """Knobs of :func:`train_classifier` (the CLI exposes each one)."""

    steps: int = 300  # gradient steps per member (SERL: ~150 steps of batch 256)
    batch_size: int = 64  # per member, half success and half failure frames
    lr: float = 3e-4
    weight_decay: float = 1e-4
    pad: int = 4  # random-crop padding (px); 0 turns augmentation off
    ensemble: int = 3
    hidden: int = 128
    encoder: dict[str, Any] = field(default_factory=lambda: {"type": "cnn"})
    precision_target: float = 0.95  # threshold = lowest validation threshold reaching this precision
    seed: int = 0
    device: str = "auto"


def train_classifier(train: LabelledFrames, val: LabelledFrames, cfg: ClassifierTrainConfig | None = None,
                     test: LabelledFrames | None = None, progress_bar: bool = True) -> SuccessClassifier:
    """Train the ensemble on ``train``, calibrate its threshold on ``val``, measure on ``test``.

    ``model.metrics`` holds the report: threshold and how it was chosen, validation and
    held-out metrics, frame and episode counts, loss, time.
    """
    from tqdm import tqdm

    cfg = cfg or ClassifierTrainConfig()
    pos, neg = np.flatnonzero(train.success), np.flatnonzero(~train.success)
    if not len(pos) or not len(neg):
        raise ValueError(f"training frames need successes and failures, got {len(pos)} success and "
                         f"{len(neg)} failure frames; collect more (noisy) expert and random episodes")
    overlap = set(train.episodes.tolist()) & (set(val.episodes.tolist()) | set(test.episodes.tolist() if test else []))
    if overlap:
        raise ValueError(f"episodes {sorted(overlap)[:10]} are in the training set and in validation/held-out")
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model = SuccessClassifier({"image_size": train.image_size, "ensemble": cfg.ensemble, "hidden": cfg.hidden,
                               "encoder": dict(cfg.encoder), "camera": train.camera, "env_id": train.env_id},
                              where="encoder").to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    frames = torch.as_tensor(train.frames)  # stays uint8 on the CPU; batches move to the device
    rng = np.random.default_rng(cfg.seed)
    half = max(cfg.batch_size // 2, 1)
    labels = torch.cat([torch.ones(half), torch.zeros(half)]).to(device)
    model.train()
    t0, loss_ema = time.perf_counter(), float("nan")
    bar = tqdm(range(int(cfg.steps)), desc="classifier", disable=not progress_bar)
    for _ in bar:
        batches = []
        for _m in range(model.k):  # every member draws its own balanced batch (bootstrap-like diversity)
            idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, half)])
            batches.append(random_crop(frames[idx].to(device), cfg.pad))
        logits = model.member_logits(batches)
        loss = F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_ema = loss.item() if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{loss_ema:.3f}")
    train_s = time.perf_counter() - t0
    model.eval()
    val_prob = model.predict(val.frames) if len(val) else np.zeros(0)
    model.threshold, source = calibrate_threshold(val_prob, val.success, cfg.precision_target)
    report: dict[str, Any] = {
        "threshold": model.threshold, "threshold_source": source, "precision_target": cfg.precision_target,
        "train_config": asdict(cfg), "train_seconds": train_s, "final_loss": loss_ema,
        "episodes": {"train": len(train.episodes), "validation": len(val.episodes),
                     "held_out": len(test.episodes) if test is not None else 0},
        "frames": {"train": len(train), "train_positive": len(pos), "validation": len(val),
                   "held_out": len(test) if test is not None else 0},
        "validation": binary_metrics(val_prob, val.success, model.threshold),
    }
    if test is not None and len(test):
        report["held_out"] = binary_metrics(model.predict(test.frames), test.success, model.threshold)
    model.metrics = _plain(report)
    return model


# ---------------------------------------------------------------------------
# reward terms


def _frames(obs: Mapping[str, np.ndarray], key: str, term: str) -> np.ndarray:
    if key not in obs:
        raise KeyError(f"reward term {term!r} needs observation {key!r}; the batch has {sorted(obs)}")
    return np.asarray(obs[key])


class ClassifierReward(RewardTerm):
    """Success classifier as a reward on the frame *after* each transition (``next_obs``).

    ``mode="sparse"``: 1 where the ensemble-mean probability reaches the calibrated
    threshold, else 0; ``mode="prob"``: the probability itself. Both set the success
    verdict. With ``max_prob_std``, a frame whose members disagree by more than that
    never counts as success (a guard against out-of-distribution frames that fool the
    mean). Components: ``prob``, ``prob_std``, ``member<i>``.
    """

    name = "classifier"
    batched = True

    def __init__(self, model: SuccessClassifier, camera: str | None = None, mode: str = "sparse",
                 threshold: float | None = None, max_prob_std: float | None = None, batch_size: int = 256) -> None:
        if mode not in ("sparse", "prob"):
            raise RewardConfigError(f"reward.params.mode={mode!r}; allowed: sparse, prob")
        self.model = model.eval()
        self.camera = camera or model.camera
        self.key = f"image_{self.camera}"
        self.requires = (self.key,)
        self.render_size = model.image_size
        self.mode = mode
        self.threshold = float(model.threshold if threshold is None else threshold)
        self.max_prob_std = None if max_prob_std is None else float(max_prob_std)
        self.batch_size = int(batch_size)

    def compute(self, batch: Transitions) -> RewardOutput:
        members = self.model.member_probs(_frames(batch.next_obs, self.key, self.name), self.batch_size)
        prob, std = members.mean(axis=0), members.std(axis=0)
        success = prob >= self.threshold
        if self.max_prob_std is not None:
            success &= std <= self.max_prob_std
        reward = success.astype(np.float32) if self.mode == "sparse" else prob
        comps = {"prob": prob, "prob_std": std, **{f"member{i}": m for i, m in enumerate(members)}}
        return RewardOutput(reward, comps, success)


@register("classifier")
def build_classifier_reward(params: Mapping[str, Any], spec: EmbodimentSpec | None) -> RewardTerm:
    """params: ``checkpoint`` (required), ``camera``, ``mode`` (sparse|prob), ``threshold``,
    ``max_prob_std``, ``encoder_weights``, ``device``, ``batch_size``."""
    allowed = {"checkpoint", "camera", "mode", "threshold", "max_prob_std", "encoder_weights", "device", "batch_size"}
    unknown = set(params) - allowed
    if unknown:
        raise RewardConfigError(f"reward.params: unknown keys {sorted(unknown)} for kind 'classifier'; "
                                f"allowed: {', '.join(sorted(allowed))}")
    model = load_classifier(params.get("checkpoint"), device=pick_device(params.get("device", "auto")),
                            encoder_weights=params.get("encoder_weights"), where="reward.params.checkpoint")
    return ClassifierReward(model, camera=params.get("camera"), mode=str(params.get("mode", "sparse")),
                            threshold=params.get("threshold"), max_prob_std=params.get("max_prob_std"),
                            batch_size=int(params.get("batch_size", 256)))


class Embedder:
    """``frames (B, H, W, 3) uint8 -> (B, D)`` features for the VIP term, and the frame size
    it prefers (None: any; frozen networks resize)."""

    def __init__(self, fn: Any, image_size: int | None, batch_size: int = 256) -> None:
        self.fn, self.image_size, self.batch_size = fn, image_size, int(batch_size)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(frames))
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames must be (B, H, W, 3) uint8, got {tuple(x.shape)}")
        out = [self.fn(x[i:i + self.batch_size]).float().cpu() for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, 1))

    @staticmethod
    def from_classifier(model: SuccessClassifier) -> Embedder:
        return Embedder(lambda x: model.embed(x.to(model.device)), model.image_size)

    @staticmethod
    def random_cnn(image_size: int, seed: int = 0, feature_dim: int = 64) -> Embedder:
        """An untrained small CNN: only for tests (it has no notion of the task)."""
        torch.manual_seed(seed)
        net = SmallCNN(image_size, feature_dim=feature_dim).eval()
        return Embedder(net, image_size)

    @staticmethod
    def from_config(cfg: Mapping[str, Any], where: str = "reward.params.encoder") -> Embedder:
        """``{type: classifier, checkpoint}``, ``{type: open_clip|resnet18, weights, ...}``,
        or ``{type: cnn, image_size, seed}`` (random, tests only)."""
        cfg = dict(cfg)
        kind = cfg.get("type", "classifier")
        device = pick_device(cfg.pop("device", "auto"))
        if kind == "classifier":
            model = load_classifier(cfg.get("checkpoint"), device=device, encoder_weights=cfg.get("encoder_weights"),
                                    where=f"{where}.checkpoint")
            return Embedder.from_classifier(model)
        if kind == "cnn":
            if "image_size" not in cfg:
                raise RewardConfigError(f"{where}.image_size is required for a random 'cnn' encoder")
            return Embedder.random_cnn(int(cfg["image_size"]), int(cfg.get("seed", 0)))
        if kind in ("open_clip", "resnet18"):
            net = build_encoder(cfg, 224, where).to(device)
            return Embedder(lambda x: net(x.to(device)), None)
        raise RewardConfigError(f"{where}.type={kind!r}; allowed: classifier, open_clip, resnet18, cnn (random, tests)")


class VIPReward(RewardTerm):
    """r = gamma * Phi(o') - Phi(o), Phi(o) = -||phi(o) - phi(g)||_2 / d0 (module docstring).

    Scores both ``obs`` and ``next_obs`` frames (one batched forward pass).
    Components: ``potential`` = Phi(o'), ``goal_distance`` = ||phi(o') - phi(g)|| (unnormalised).
    """

    name = "vip"
    batched = True

    def __init__(self, embedder: Embedder, goal: np.ndarray, camera: str = "front", gamma: float = 1.0,
                 scale: float = 1.0) -> None:
        self.embedder, self.goal = embedder, np.asarray(goal, np.float64).reshape(-1)
        self.camera, self.key = camera, f"image_{camera}"
        self.requires = (self.key,)
        self.render_size = embedder.image_size
        self.gamma = float(gamma)
        if not scale > 0:
            raise RewardConfigError(f"VIP distance scale must be > 0, got {scale}")
        self.scale = float(scale)

    @staticmethod
    def from_demos(embedder: Embedder, demos: LabelledFrames, goal_frames: int = 3, camera: str | None = None,
                   gamma: float = 1.0, normalize: bool = True, successful_only: bool = True) -> VIPReward:
        """Goal = mean embedding of the last ``goal_frames`` frames of every demo episode
        (those ending in success, by default). ``normalize`` divides distances by the demos'
        mean initial distance d0, so Phi is about -1 at a demo's start and near 0 at its end."""
        goal = embedder(demos.last_frames(goal_frames, successful_only=successful_only)).mean(axis=0)
        scale = 1.0
        if normalize:
            firsts = np.stack([demos.episode_frames(int(e)).frames[0] for e in demos.episodes])
            scale = float(np.mean(np.linalg.norm(embedder(firsts) - goal, axis=-1)))
            if not scale > 1e-8:
                raise ValueError("demos start at their goal (zero initial distance); use normalize=False")
        return VIPReward(embedder, goal, camera or demos.camera, gamma, scale)

    def distance(self, frames: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.embedder(frames) - self.goal, axis=-1)

    def potential(self, frames: np.ndarray) -> np.ndarray:
        return -self.distance(frames) / self.scale

    def compute(self, batch: Transitions) -> RewardOutput:
        o, o2 = _frames(batch.obs, self.key, self.name), _frames(batch.next_obs, self.key, self.name)
        d = self.distance(np.concatenate([o, o2]))
        d0, d1 = d[: len(o)], d[len(o):]
        phi0, phi1 = -d0 / self.scale, -d1 / self.scale
        return RewardOutput(self.gamma * phi1 - phi0, {"potential": phi1, "goal_distance": d1})


@register("vip")
def build_vip_reward(params: Mapping[str, Any], spec: EmbodimentSpec | None) -> RewardTerm:
    """params: ``encoder`` ({type: classifier, checkpoint} | {type: open_clip|resnet18, weights}),
    ``demos`` (labelled-frames .npz), ``goal_frames``, ``successful_only``, ``source``
    (keep only demo episodes with this source tag, e.g. expert), ``camera``, ``gamma``, ``normalize``."""
    allowed = {"encoder", "demos", "goal_frames", "successful_only", "source", "camera", "gamma", "normalize"}
    unknown = set(params) - allowed
    if unknown:
        raise RewardConfigError(f"reward.params: unknown keys {sorted(unknown)} for kind 'vip'; "
                                f"allowed: {', '.join(sorted(allowed))}")
    if not isinstance(params.get("encoder"), Mapping):
        raise RewardConfigError("reward.params.encoder must be a mapping, e.g. {type: classifier, checkpoint: ...}")
    demos_path = params.get("demos")
    if not demos_path or not Path(str(demos_path)).expanduser().is_file():
        raise RewardConfigError(f"reward.params.demos: labelled-frames file {demos_path!r} does not exist "
                                "(write one with rewards.frames.collect(...).save(path) or the classifier CLI's "
                                "--save-frames)")
    demos = LabelledFrames.load(Path(str(demos_path)).expanduser())
    if params.get("source"):
        demos = demos.select(demos.source == str(params["source"]))
        if not len(demos):
            raise RewardConfigError(f"reward.params.source={params['source']!r}: no demo frames with that source")
    embedder = Embedder.from_config(params["encoder"])
    return VIPReward.from_demos(embedder, demos, goal_frames=int(params.get("goal_frames", 3)),
                                camera=params.get("camera"), gamma=float(params.get("gamma", 1.0)),
                                normalize=bool(params.get("normalize", True)),
                                successful_only=bool(params.get("successful_only", True)))


__all__ = [
    "CHECKPOINT_FORMAT", "ClassifierReward", "ClassifierTrainConfig", "Embedder", "SuccessClassifier", "VIPReward",
    "auroc", "binary_metrics", "calibrate_threshold", "load_classifier", "train_classifier",
]
