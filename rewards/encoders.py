"""Image encoders for learned rewards: a small CNN trained from scratch, or a frozen
pretrained network loaded from a local file (never downloaded).

All encoders take ``(B, H, W, 3)`` uint8 frames (the env's ``image_<camera>``
layout, as a tensor) and return ``(B, D)`` float features, so the classifier and
the VIP term do not care which one they hold.

Encoder configs are plain dicts (they are stored inside classifier checkpoints)::

    {"type": "cnn", "channels": [32, 64, 64], "feature_dim": 64}
    {"type": "open_clip", "model": "ViT-B-32", "weights": "/path/open_clip_model.bin"}
    {"type": "resnet18", "weights": "/path/resnet18.pth"}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rewards.base import RewardConfigError

ENCODER_TYPES = ("cnn", "open_clip", "resnet18")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def pick_device(name: str | None) -> torch.device:
    """``auto`` (or None) picks CUDA when present, else the CPU."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_float(frames: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, size, size) in [0, 1]; resized (antialiased) if asked."""
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None and (x.shape[-1] != size or x.shape[-2] != size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def random_crop(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style shift augmentation: pad each frame by ``pad`` px (edge replicate) and crop
    back to its size at a random offset, independently per frame. Works on (B, H, W, C)."""
    if pad <= 0:
        return frames
    b, h, w, _ = frames.shape
    x = F.pad(frames.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    x = x.permute(0, 2, 3, 1).to(frames.dtype)
    oy = torch.randint(0, 2 * pad + 1, (b,), device=frames.device, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=frames.device, generator=generator)
    rows = (torch.arange(h, device=frames.device)[None, :, None] + oy[:, None, None])  # (B, H, 1)
    cols = (torch.arange(w, device=frames.device)[None, None, :] + ox[:, None, None])  # (B, 1, W)
    return x[torch.arange(b, device=frames.device)[:, None, None], rows, cols]


class SmallCNN(nn.Module):
    """A DrQ-like conv stack (stride-2 3x3 convs, then linear + LayerNorm + tanh) for
    32-128 px frames. Keeps spatial layout up to the linear layer, since success often
    depends on *where* things are (the fingertips over the goal), not only on what is seen."""

    def __init__(self, image_size: int, channels: Sequence[int] = (32, 64, 64), feature_dim: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, int(c), 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = int(c)
        self.convs = nn.Sequential(*layers)
        self.image_size = int(image_size)
        with torch.no_grad():
            n_flat = self.convs(torch.zeros(1, 3, self.image_size, self.image_size)).numel()
        self.proj = nn.Sequential(nn.Linear(n_flat, int(feature_dim)), nn.LayerNorm(int(feature_dim)), nn.Tanh())
        self.out_dim = int(feature_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = to_float(frames, self.image_size) - 0.5
        return self.proj(self.convs(x).flatten(1))


class FrozenEncoder(nn.Module):
    """A pretrained image network used as a fixed feature extractor (no gradients, eval mode).

    Frames are resized to the network's input size and normalised with its training
    statistics. ``l2_normalize`` is on for CLIP towers, whose features are compared by
    angle; the head's LayerNorm takes care of the scale otherwise.
    """

    trainable = False

    def __init__(self, net: nn.Module, input_size: int, mean: Sequence[float], std: Sequence[float], out_dim: int,
                 l2_normalize: bool = False) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.input_size, self.out_dim, self.l2_normalize = int(input_size), int(out_dim), bool(l2_normalize)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FrozenEncoder:  # stays in eval mode (BatchNorm statistics fixed)
        super().train(mode)
        self.net.eval()
        return self

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (to_float(frames, self.input_size) - self.mean) / self.std
        z = self.net(x).float().flatten(1)
        return F.normalize(z, dim=-1) if self.l2_normalize else z


def _weights_path(cfg: Mapping[str, Any], key: str) -> Path:
    raw = cfg.get("weights")
    if not raw:
        raise RewardConfigError(
            f"{key} is required for encoder type {cfg.get('type')!r}: a local checkpoint file "
            "(nothing is downloaded); use type 'cnn' to train a small encoder from scratch instead")
    path = Path(str(raw)).expanduser()
    if not path.is_file():
        raise RewardConfigError(f"{key}: file {str(path)!r} does not exist (encoder type "
                                f"{cfg.get('type')!r} needs a local checkpoint; nothing is downloaded)")
    return path


def build_encoder(cfg: Mapping[str, Any], image_size: int, where: str = "encoder",
                  weights_key: str | None = None) -> nn.Module:
    """An encoder from its config dict (see the module docstring). ``where`` prefixes error
    messages; ``weights_key`` is the config key named when the weights file is missing
    (default ``<where>.weights``)."""
    weights_key = weights_key or f"{where}.weights"
    kind = cfg.get("type", "cnn")
    if kind == "cnn":
        unknown = set(cfg) - {"type", "channels", "feature_dim"}
        if unknown:
            raise RewardConfigError(f"{where}: unknown keys {sorted(unknown)} for type 'cnn' "
                                    "(allowed: channels, feature_dim)")
        return SmallCNN(image_size, cfg.get("channels", (32, 64, 64)), int(cfg.get("feature_dim", 64)))
    if kind == "resnet18":
        path = _weights_path(cfg, weights_key)
        import torchvision

        net = torchvision.models.resnet18(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing, unexpected = net.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")] or unexpected:
            raise RewardConfigError(f"{weights_key}: {str(path)!r} is not a torchvision resnet18 state dict "
                                    f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        net.fc = nn.Identity()
        return FrozenEncoder(net, 224, IMAGENET_MEAN, IMAGENET_STD, 512)
    if kind == "open_clip":
        path = _weights_path(cfg, weights_key)
        import open_clip

        model_name = str(cfg.get("model", "ViT-B-32"))
        try:
            model = open_clip.create_model(model_name, pretrained=str(path), device="cpu")
        except RuntimeError as e:
            raise RewardConfigError(f"{where}: could not load open_clip model {model_name!r} "
                                    f"from {str(path)!r}: {e}") from e
        visual = model.visual
        size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else int(visual.image_size)
        mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        return FrozenEncoder(visual, size, mean, std, int(visual.output_dim), l2_normalize=True)
    raise RewardConfigError(f"{where}.type={kind!r} is not an encoder type; allowed: {', '.join(ENCODER_TYPES)}")


def is_frozen(cfg: Mapping[str, Any]) -> bool:
    return cfg.get("type", "cnn") != "cnn"


__all__ = ["ENCODER_TYPES", "FrozenEncoder", "SmallCNN", "build_encoder", "is_frozen", "pick_device",
           "random_crop", "to_float"]
