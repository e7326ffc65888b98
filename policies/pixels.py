"""Pixel observations for SAC: a small conv encoder trained by the critic, DrQ augmentation.

DrQ (Kostrikov, Yarats & Fergus 2021, "Image Augmentation Is All You Need") makes
SAC learn from pixels with two ingredients, both here:

* an encoder of 4 conv layers (32 channels, 3x3, the first with stride 2) followed by
  Linear -> LayerNorm -> tanh to a small feature vector (50), shared by actor and
  critic and trained by the critic loss only (the actor reads detached features);
* random shifts: pad the image by 4 px (replicating the border) and crop back at a
  random offset, independently for every sample of the batch, on both s and s'.

A target copy of the encoder follows the online one by Polyak averaging
(DrQ: tau = 0.05 for the encoder, 0.01 for the critic) and encodes s' for the
critic target. As in SERL, proprioception (the state vector) is concatenated to the
image features after the encoder; several cameras each get their own encoder.

Instead of the trained encoder, ``encoder=resnet18`` uses a frozen torchvision
ResNet-18 trunk from a local weights file (nothing is downloaded), average-pooled
over space, with a trained Linear -> LayerNorm -> tanh projection on top.

Observations for a pixel agent are dicts of tensors: ``"state"`` (B, S) float32 and
one ``"image_<camera>"`` (B, H, W, 3) uint8 per camera (what the replay stores:
uint8, a quarter of float32's bytes).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from common.spec import EmbodimentSpec, flatten_state
from policies.sac import SAC

ENCODERS = ("drq", "resnet18")
STATE_KEY = "state"

# ImageNet statistics torchvision's ResNet weights were trained with.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------
# image preprocessing


def random_shift(images: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """DrQ's random shift of a batch of images (B, H, W, C), any dtype, as one gather.

    Replicate-padding by ``pad`` and cropping an H x W window at offset (dy, dx) in
    [0, 2 pad] is the same as reading pixel (clamp(i + dy - pad), clamp(j + dx - pad)):
    the clamp repeats the border. Each sample gets its own offset; no copy of the padded
    image is made, and uint8 stays uint8 (the float conversion comes after)."""
    if pad <= 0:
        return images
    b, h, w = images.shape[:3]
    dev = images.device
    shift = torch.randint(0, 2 * pad + 1, (b, 2), device=dev, generator=generator) - pad
    rows = (torch.arange(h, device=dev)[None, :] + shift[:, :1]).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=dev)[None, :] + shift[:, 1:]).clamp_(0, w - 1)  # (B, W)
    batch = torch.arange(b, device=dev)[:, None, None]
    return images[batch, rows[:, :, None], cols[:, None, :]]


def to_chw_float(images: Tensor) -> Tensor:
    """uint8 (B, H, W, C) in [0, 255] -> float32 (B, C, H, W) in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


# ---------------------------------------------------------------------------
# encoders


class DrQTrunk(nn.Module):
    """DrQ's conv stack: 4 x (3x3 conv, 32 channels, ReLU), stride 2 then 1, 1, 1."""

    def __init__(self, shape: tuple[int, int, int], channels: int = 32, layers: int = 4) -> None:
        super().__init__()
        h, w, c = shape
        convs: list[nn.Module] = []
        for i in range(layers):
            convs += [nn.Conv2d(c if i == 0 else channels, channels, 3, stride=2 if i == 0 else 1), nn.ReLU()]
        self.net = nn.Sequential(*convs)
        with torch.no_grad():
            self.out_dim = int(self.net(torch.zeros(1, c, h, w)).numel())

    def forward(self, x: Tensor) -> Tensor:
        # DrQ centres the pixels: x / 255 - 0.5
        return self.net(x - 0.5).flatten(1)


class ResNetTrunk(nn.Module):
    """A frozen torchvision ResNet-18 up to its last residual stage, average-pooled over space.

    Always in eval mode (BatchNorm uses the stored statistics) and without gradients."""

    frozen = True

    def __init__(self, weights: str | None) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)  # architecture only; the weights come from a local file
        if weights is not None:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            net.load_state_dict(state, strict=False)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                                  net.layer3, net.layer4)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.out_dim = 512
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ResNetTrunk:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.body((x - self.mean) / self.std).mean((2, 3))


class CameraEncoder(nn.Module):
    """One camera: trunk -> Linear -> LayerNorm -> tanh (DrQ / SAC-AE head)."""

    def __init__(self, trunk: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(nn.Linear(trunk.out_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


class PixelEncoder(nn.Module):
    """Cameras (one encoder each) + the state vector -> one feature vector per sample.

    ``out_dim`` = cameras x feature_dim + state_dim: the ``obs_dim`` SAC's actor and critic see."""

    def __init__(self, image_shapes: Mapping[str, Sequence[int]], state_dim: int, kind: str = "drq",
                 feature_dim: int = 50, weights: str | None = None) -> None:
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"encoder {kind!r} unknown; allowed: {', '.join(ENCODERS)}")
        if not image_shapes:
            raise ValueError("a pixel encoder needs at least one camera")
        self.names = tuple(image_shapes)
        self.kind, self.state_dim, self.feature_dim = kind, int(state_dim), int(feature_dim)
        self.cams = nn.ModuleDict()
        for name, shape in image_shapes.items():
            shape = tuple(int(s) for s in shape)
            trunk = DrQTrunk(shape) if kind == "drq" else ResNetTrunk(weights)
            self.cams[name] = CameraEncoder(trunk, feature_dim)
        self.out_dim = len(self.names) * self.feature_dim + self.state_dim

    def forward(self, obs: Mapping[str, Tensor], augment_pad: int = 0) -> Tensor:
        parts = [self.cams[n](to_chw_float(random_shift(obs[n], augment_pad))) for n in self.names]
        if self.state_dim:
            parts.append(obs[STATE_KEY].float())
        return torch.cat(parts, dim=-1)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def build_encoder(cfg: Any, image_shapes: Mapping[str, Sequence[int]], state_dim: int,
                  from_checkpoint: bool = False) -> PixelEncoder:
    """The encoder an agent config asks for. ``encoder=resnet18`` needs ``encoder_weights`` (a local
    file) unless the weights will come from a checkpoint (``from_checkpoint``)."""
    from policies.config import ConfigError

    kind = _get(cfg, "encoder", "drq")
    weights = _get(cfg, "encoder_weights", None)
    if kind not in ENCODERS:
        raise ConfigError(f"invalid config value agent.encoder={kind!r}: allowed values: {', '.join(ENCODERS)}")
    if kind == "resnet18" and not from_checkpoint:
        if not weights:
            raise ConfigError("agent.encoder=resnet18 needs agent.encoder_weights: a local file with a torchvision "
                              "resnet18 state dict (nothing is downloaded)")
        if not os.path.isfile(weights):
            raise ConfigError(f"invalid config value agent.encoder_weights={weights!r}: no such file (a local "
                              "torchvision resnet18 state dict; nothing is downloaded)")
    return PixelEncoder(image_shapes, state_dim, kind, int(_get(cfg, "feature_dim", 50)),
                        None if from_checkpoint else weights)


def _get(cfg: Any, key: str, default: Any) -> Any:
    if isinstance(cfg, Mapping | DictConfig):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


# ---------------------------------------------------------------------------
# observations: env dicts -> what the agent reads


class PixelObs:
    """Reads a pixel agent's inputs out of env observation dicts: the chosen state fields as one
    float32 vector (``"state"``) and the cameras' uint8 images, unchanged.

    ``state_fields`` None: every state field of the spec (in spec order); [] none."""

    def __init__(self, spec: EmbodimentSpec, cameras: Sequence[str], state_fields: Sequence[str] | None = None) -> None:
        names = [f"image_{c}" for c in cameras]
        missing = [n for n in names if n not in spec.obs_names]
        if missing:
            raise ValueError(f"{spec.name} has no {missing}; its observations: {spec.obs_names}")
        self.image_names = tuple(names)
        self.image_shapes = {n: tuple(spec.field(n).shape) for n in names}
        known = [f.name for f in spec.state_fields]
        if state_fields is not None:
            bad = [n for n in state_fields if n not in known]
            if bad:
                raise ValueError(f"agent.state_fields names {bad}, not state fields of {spec.name}; allowed: {known}")
        keep = known if state_fields is None else [n for n in known if n in state_fields]
        self.state_spec = replace(spec, observations=tuple(f for f in spec.state_fields if f.name in keep))
        self.state_dim = self.state_spec.state_dim

    def __call__(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One observation or a batch (leading axis) -> {"state": float32, "image_*": uint8}."""
        out = {n: np.array(obs[n], np.uint8) for n in self.image_names}  # a copy: vector envs reuse arrays
        if self.state_dim:
            out[STATE_KEY] = flatten_state(self.state_spec, obs)
        else:
            lead = out[self.image_names[0]].shape[:-3]
            out[STATE_KEY] = np.zeros((*lead, 0), np.float32)
        return out

    def storage_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.image_shapes)


def to_device(obs: Mapping[str, np.ndarray] | np.ndarray, device: torch.device | str) -> Any:
    """numpy -> torch on ``device``: an array, or each value of a dict."""
    if isinstance(obs, Mapping):
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in obs.items()}
    return torch.from_numpy(obs).to(device)


# ---------------------------------------------------------------------------
# the agent


def _plain(cfg: Any) -> Any:
    return SimpleNamespace(**OmegaConf.to_container(cfg, resolve=True)) if isinstance(cfg, DictConfig) else cfg


class PixelSAC(SAC):
    """SAC on {state, image_*} observations through a :class:`PixelEncoder` (DrQ).

    ``update`` takes observation dicts; the encoder's features of the (augmented) current
    observations go to :meth:`SAC.update` with their graph, so the critic loss trains the
    encoder and the actor loss (on detached features) does not. The next observations are
    encoded by the Polyak target encoder without gradient; SAC samples the next action from
    those same features (its update takes one next-state vector), a small departure from
    DrQ, whose actor reads the online encoder there.
    """

    def __init__(self, image_shapes: Mapping[str, Sequence[int]], state_dim: int, act_dim: int, cfg: Any,
                 device: torch.device | str = "cpu", from_checkpoint: bool = False) -> None:
        plain = _plain(cfg)
        self.encoder = build_encoder(plain, image_shapes, state_dim, from_checkpoint).to(device)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.encoder_tau = float(_get(plain, "encoder_tau", 0.05))
        self.augment_pad = int(_get(plain, "augment_pad", 4))
        self.image_shapes = {k: tuple(int(s) for s in v) for k, v in image_shapes.items()}
        self.state_dim = int(state_dim)
        self._enc_online = self.encoder.trainable()
        # the target's parameters that follow the online ones (a frozen trunk is never updated)
        online_ids = {id(p) for p in self._enc_online}
        self._enc_target = [q for p, q in zip(self.encoder.parameters(), self.encoder_target.parameters(), strict=True)
                            if id(p) in online_ids]
        self._enc_updates = 0
        super().__init__(self.encoder.out_dim, act_dim, cfg, device)

    def _extra_param_groups(self) -> list[dict[str, Any]]:
        c = self.cfg
        lr = _get(c, "encoder_lr", None) or c.critic_lr or c.lr
        return [{"params": self._enc_online, "lr": lr}] if self._enc_online else []

    # ---- acting -----------------------------------------------------------
    def encode(self, obs: Mapping[str, Tensor], target: bool = False, augment: bool = False) -> Tensor:
        enc = self.encoder_target if target else self.encoder
        with self._autocast():
            return enc(obs, self.augment_pad if augment else 0).float()

    @torch.inference_mode()
    def act(self, obs: Mapping[str, Tensor], deterministic: bool = False) -> Tensor:  # type: ignore[override]
        return self.actor.act(self.encode(obs), deterministic)

    # ---- learning ---------------------------------------------------------
    def update(self, obs: Mapping[str, Tensor], act: Tensor, rew: Tensor,  # type: ignore[override]
               next_obs: Mapping[str, Tensor], discount: Tensor, update_actor: bool = True,
               demo_rows: int = 0) -> dict[str, Tensor]:
        """One DrQ step: augment s and s' (independent shifts), encode, SAC update, Polyak the encoder.

        Encoder target (Polyak, as the critic's): phi' <- (1 - tau_enc) phi' + tau_enc phi."""
        feats = self.encode(obs, augment=True)
        with torch.no_grad():
            next_feats = self.encode(next_obs, target=True, augment=True)
        metrics = super().update(feats, act, rew, next_feats, discount, update_actor, demo_rows)
        self._enc_updates += 1
        if self._enc_target and self._enc_updates % self.cfg.target_update_every == 0:
            with torch.no_grad():
                torch._foreach_lerp_(self._enc_target, self._enc_online, self.encoder_tau)
        return metrics

    def bc_update(self, obs: Mapping[str, Tensor], act: Tensor, loss: str = "mse",  # type: ignore[override]
                  eps: float = 0.05) -> Tensor:
        """Behaviour cloning of the actor on (detached) encoder features."""
        with torch.no_grad():
            feats = self.encode(obs, augment=True)
        return super().bc_update(feats, act, loss, eps)

    # ---- state ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["encoder"] = self.encoder.state_dict()
        state["encoder_target"] = self.encoder_target.state_dict()
        state["encoder_updates"] = self._enc_updates
        return state

    def load_state_dict(self, state: dict[str, Any], load_optimizer: bool = True) -> None:
        super().load_state_dict(state, load_optimizer)
        self.encoder.load_state_dict(state["encoder"])
        self.encoder_target.load_state_dict(state["encoder_target"])
        self._enc_updates = int(state.get("encoder_updates", 0))


def pixel_agent_config(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The agent section of a resolved run config if that agent reads cameras, else None."""
    agent = config.get("agent", {}) or {}
    return agent if agent.get("cameras") else None
