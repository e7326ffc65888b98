"""The one interface every reward term follows, and the ways terms combine.

A reward term scores a *batch* of transitions (observation, action, next
observation; images are observation fields such as ``image_front``) and returns
a reward per transition plus named components for logging. Nothing here knows
where the batch came from, so the same term object runs

* inside the training loop (a few transitions per env step, or a whole rollout
  at once for expensive terms: ``batched = True``),
* when relabelling a replay buffer or a recorded episode set (:func:`relabel`), and
* on live robot data (the ROS reward-monitor node builds the same ``Transitions``).

Terms are built from config mappings ``{kind, params, ...}`` by :func:`build`;
``kind`` names a registered builder. Kinds that need heavy imports (open_clip,
torch models) live in their own modules and are imported only when used.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from common.spec import EmbodimentSpec

Obs = dict[str, np.ndarray]


class RewardConfigError(ValueError):
    """A reward config that cannot be built; the message names the key and what is allowed."""


@dataclass
class Transitions:
    """B transitions. Observation dicts follow the embodiment spec, each value ``(B, *shape)``.

    The ground-truth fields are filled where they are known (in simulation, or in a
    recorded episode with labels) and are what learned rewards are judged against;
    a term must not *need* them, except the ``task`` term, whose reward is the env's.
    """

    obs: Obs
    action: np.ndarray  # (B, A), normalised [-1, 1]
    next_obs: Obs
    env_reward: np.ndarray | None = None  # (B,) the task's own reward
    success: np.ndarray | None = None  # (B,) bool, ground-truth success at next_obs
    progress: np.ndarray | None = None  # (B,) ground-truth progress in [0, 1] at next_obs
    episode_step: np.ndarray | None = None  # (B,) int, index of the transition in its episode
    info: dict[str, np.ndarray] = field(default_factory=dict)  # anything else, (B, ...) per key

    def __len__(self) -> int:
        return int(np.asarray(self.action).shape[0])

    def select(self, idx: np.ndarray | slice) -> Transitions:
        """The transitions at ``idx`` (an index array, boolean mask or slice)."""

        def pick(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, dict):
                return {k: np.asarray(x)[idx] for k, x in v.items()}
            return np.asarray(v)[idx]

        return Transitions(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence[Transitions]) -> Transitions:
        """Stack batches along the transition axis; optional fields survive if every part has them."""
        if not parts:
            raise ValueError("nothing to concatenate")
        if len(parts) == 1:
            return parts[0]

        def cat(values: list[Any]) -> Any:
            if any(v is None for v in values):
                return None
            if isinstance(values[0], dict):
                keys = set(values[0]).intersection(*values[1:])
                return {k: np.concatenate([np.asarray(v[k]) for v in values]) for k in values[0] if k in keys}
            return np.concatenate([np.asarray(v) for v in values])

        return Transitions(**{f.name: cat([getattr(p, f.name) for p in parts]) for f in fields(Transitions)})


@dataclass
class RewardOutput:
    """What a term returns: ``reward`` (B,) float32, its named components (B,) each, and,
    for terms that detect success (classifiers, sparse terms), their verdict (B,) bool."""

    reward: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)
    success: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.reward = np.asarray(self.reward, dtype=np.float32).reshape(-1)
        self.components = {k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in self.components.items()}
        if self.success is not None:
            self.success = np.asarray(self.success, dtype=bool).reshape(-1)


class RewardTerm(ABC):
    """Base class. Subclasses implement :meth:`compute`; calling the term checks the result.

    Class attributes a subclass sets:
      ``requires``: observation keys the term reads (e.g. ``("image_front",)``); the
          training loop asks the env for the cameras named here, and :meth:`bind` fails
          early with a clear message when a spec lacks one.
      ``batched``: the term is expensive per call (a vision model) and should see many
          transitions at once; the training loop then holds transitions back until a
          batch is full or an episode ends, and never trains on one without its reward.
      ``render_size``: for image terms, the square frame size (px) the env should render
          ``image_<camera>`` at; None leaves the task's own ``image_size``.
    """

    name: str = "term"
    requires: tuple[str, ...] = ()
    batched: bool = False
    render_size: int | None = None

    def bind(self, spec: EmbodimentSpec) -> RewardTerm:
        """Check that observations of ``spec`` carry what this term reads. Returns self."""
        missing = [k for k in self.requires if k not in spec.obs_names]
        if missing:
            hint = ""
            if any(k.startswith("image_") for k in missing):
                hint = " (image_<camera> fields appear when the task is made with that camera, task.kwargs.cameras)"
            raise RewardConfigError(
                f"reward term {self.name!r} reads {missing}, which {spec.name!r} does not provide{hint}; "
                f"it provides {list(spec.obs_names)}"
            )
        return self

    @abstractmethod
    def compute(self, batch: Transitions) -> RewardOutput: ...

    def __call__(self, batch: Transitions) -> RewardOutput:
        out = self.compute(batch)
        n = len(batch)
        if out.reward.shape != (n,):
            raise ValueError(f"reward term {self.name!r} returned {out.reward.shape} rewards for {n} transitions")
        return out

    def train_mode(self, on: bool) -> None:
        """Terms with running statistics update them only in train mode (the training loop);
        relabelling and live monitoring use frozen statistics. Default: nothing to do."""
        del on

    def state_dict(self) -> dict[str, Any]:
        """Running state worth saving with a run (normalisation statistics); default none."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        del state


# ---------------------------------------------------------------------------
# basic terms and combinators


class TaskReward(RewardTerm):
    """The env's own hand-written dense reward (the "expert reward" baseline)."""

    name = "task"

    def compute(self, batch: Transitions) -> RewardOutput:
        if batch.env_reward is None:
            raise ValueError("the 'task' reward needs env_reward in the batch (the env's own reward), "
                             "which this data does not carry")
        return RewardOutput(batch.env_reward, {"task": batch.env_reward})


class WeightedSum(RewardTerm):
    """r = sum_i w_i r_i; components are prefixed by the term names (``clip/similarity``)."""

    name = "sum"

    def __init__(self, terms: Mapping[str, RewardTerm], weights: Mapping[str, float]) -> None:
        self.terms, self.weights = dict(terms), {k: float(weights.get(k, 1.0)) for k in terms}
        self.requires = tuple(dict.fromkeys(k for t in self.terms.values() for k in t.requires))
        self.batched = any(t.batched for t in self.terms.values())

    def bind(self, spec: EmbodimentSpec) -> RewardTerm:
        for t in self.terms.values():
            t.bind(spec)
        return self

    def compute(self, batch: Transitions) -> RewardOutput:
        total = np.zeros(len(batch), np.float32)
        comps: dict[str, np.ndarray] = {}
        successes = []
        for name, term in self.terms.items():
            out = term(batch)
            total += self.weights[name] * out.reward
            comps[name] = out.reward
            comps.update({f"{name}/{k}": v for k, v in out.components.items() if k != name})
            if out.success is not None:
                successes.append(out.success)
        success = np.logical_or.reduce(successes) if successes else None
        return RewardOutput(total, comps, success)

    def train_mode(self, on: bool) -> None:
        for t in self.terms.values():
            t.train_mode(on)

    def state_dict(self) -> dict[str, Any]:
        return {k: t.state_dict() for k, t in self.terms.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k, t in self.terms.items():
            t.load_state_dict(state.get(k, {}))


class SparseOverride(RewardTerm):
    """KAGI's combination: r = r_sparse where r_sparse != 0, else r_dense.

    The sparse term is usually a success detector (a classifier, or a state test); its
    success verdict becomes this term's verdict.
    """

    name = "sparse_override"

    def __init__(self, sparse: RewardTerm, dense: RewardTerm) -> None:
        self.sparse, self.dense = sparse, dense
        self.requires = tuple(dict.fromkeys((*sparse.requires, *dense.requires)))
        self.batched = sparse.batched or dense.batched

    def bind(self, spec: EmbodimentSpec) -> RewardTerm:
        self.sparse.bind(spec)
        self.dense.bind(spec)
        return self

    def compute(self, batch: Transitions) -> RewardOutput:
        s, d = self.sparse(batch), self.dense(batch)
        fired = s.reward != 0
        comps = {"sparse": s.reward, "dense": d.reward, "override": fired.astype(np.float32)}
        comps.update({f"dense/{k}": v for k, v in d.components.items()})
        return RewardOutput(np.where(fired, s.reward, d.reward), comps, s.success)

    def train_mode(self, on: bool) -> None:
        self.sparse.train_mode(on)
        self.dense.train_mode(on)

    def state_dict(self) -> dict[str, Any]:
        return {"sparse": self.sparse.state_dict(), "dense": self.dense.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sparse.load_state_dict(state.get("sparse", {}))
        self.dense.load_state_dict(state.get("dense", {}))


class Normalize(RewardTerm):
    """(r - mean) / std with running statistics (Chan et al.'s parallel Welford update).

    Statistics update only in train mode, so relabelling or monitoring with a trained
    run's saved statistics gives the rewards that run trained on. ``center=False``
    only rescales (keeps the sign of a success bonus meaningful).
    """

    name = "normalize"

    def __init__(self, term: RewardTerm, center: bool = True, clip: float | None = 10.0, eps: float = 1e-8) -> None:
        self.term, self.center, self.clip, self.eps = term, bool(center), clip, float(eps)
        self.requires, self.batched = term.requires, term.batched
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self._train = True

    def bind(self, spec: EmbodimentSpec) -> RewardTerm:
        self.term.bind(spec)
        return self

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.count)) if self.count > 1 else 1.0

    def _update(self, x: np.ndarray) -> None:
        n, mean, m2 = len(x), float(np.mean(x)), float(np.sum((x - np.mean(x)) ** 2))
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    def compute(self, batch: Transitions) -> RewardOutput:
        out = self.term(batch)
        x = out.reward.astype(np.float64)
        finite = x[np.isfinite(x)]
        if self._train and len(finite):
            self._update(finite)
        y = (x - (self.mean if self.center else 0.0)) / (self.std + self.eps)
        if self.clip is not None:
            y = np.clip(y, -self.clip, self.clip)
        return RewardOutput(y, {"raw": out.reward, **out.components}, out.success)

    def train_mode(self, on: bool) -> None:
        self._train = bool(on)
        self.term.train_mode(on)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2, "term": self.term.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count, self.mean, self.m2 = int(state.get("count", 0)), float(state.get("mean", 0.0)), float(state.get("m2", 0.0))
        self.term.load_state_dict(state.get("term", {}))


# ---------------------------------------------------------------------------
# building terms from config

Builder = Callable[[Mapping[str, Any], EmbodimentSpec | None], RewardTerm]
_BUILDERS: dict[str, Builder] = {}
# Kinds whose builders live in modules with heavy imports; imported on first use.
_LAZY = {
    "clip": "rewards.clip",
    "keypoints": "rewards.keypoints",
    "classifier": "rewards.learned",
    "vip": "rewards.learned",
    "code": "rewards.code",
}


def register(kind: str) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("clip")`` on ``def build_clip(params, spec) -> RewardTerm``."""

    def deco(fn: Builder) -> Builder:
        _BUILDERS[kind] = fn
        return fn

    return deco


def known_kinds() -> list[str]:
    return sorted(set(_BUILDERS) | set(_LAZY))


def build(cfg: Mapping[str, Any], spec: EmbodimentSpec | None = None, where: str = "reward") -> RewardTerm:
    """A term from ``{kind: ..., params: {...}}`` (a plain mapping or DictConfig).

    ``where`` is the config path used in error messages (``reward``, ``reward.params.terms.clip``).
    With a ``spec``, the term is bound to it (missing observation keys fail here, not mid-run).
    """
    cfg = _plain(cfg)
    if "kind" not in cfg:
        raise RewardConfigError(f"{where}.kind is missing; allowed kinds: {', '.join(known_kinds())}")
    kind = cfg["kind"]
    if kind not in _BUILDERS and kind in _LAZY:
        importlib.import_module(_LAZY[kind])
    if kind not in _BUILDERS:
        raise RewardConfigError(f"{where}.kind={kind!r} is not a reward kind; allowed: {', '.join(known_kinds())}")
    params = cfg.get("params") or {}
    if not isinstance(params, Mapping):
        raise RewardConfigError(f"{where}.params must be a mapping, got {type(params).__name__}")
    try:
        term = _BUILDERS[kind](params, spec)
    except RewardConfigError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise RewardConfigError(f"{where} (kind {kind!r}): {e}") from e
    if cfg.get("name"):
        term.name = str(cfg["name"])
    if cfg.get("normalize"):
        norm = cfg["normalize"] if isinstance(cfg["normalize"], Mapping) else {}
        term = Normalize(term, **norm)
    return term.bind(spec) if spec is not None else term


def _plain(cfg: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        pass
    return dict(cfg)


@register("task")
def _build_task(params: Mapping[str, Any], spec: EmbodimentSpec | None) -> RewardTerm:
    if params:
        raise RewardConfigError(f"reward kind 'task' takes no params, got {sorted(params)}")
    return TaskReward()


@register("sum")
def _build_sum(params: Mapping[str, Any], spec: EmbodimentSpec | None) -> RewardTerm:
    """params: ``terms: {name: {kind, params, weight}}``."""
    terms_cfg = params.get("terms")
    if not isinstance(terms_cfg, Mapping) or not terms_cfg:
        raise RewardConfigError("reward.params.terms must map names to term configs ({kind, params, weight})")
    terms, weights = {}, {}
    for name, sub in terms_cfg.items():
        sub = dict(sub)
        weights[name] = float(sub.pop("weight", 1.0))
        terms[name] = build(sub, spec, where=f"reward.params.terms.{name}")
        terms[name].name = name
    return WeightedSum(terms, weights)


@register("sparse_override")
def _build_sparse_override(params: Mapping[str, Any], spec: EmbodimentSpec | None) -> RewardTerm:
    """params: ``sparse: {kind, params}``, ``dense: {kind, params}``."""
    for key in ("sparse", "dense"):
        if not isinstance(params.get(key), Mapping):
            raise RewardConfigError(f"reward.params.{key} must be a term config ({{kind, params}})")
    return SparseOverride(build(params["sparse"], spec, "reward.params.sparse"),
                          build(params["dense"], spec, "reward.params.dense"))


@register("normalize")
def _build_normalize(params: Mapping[str, Any], spec: EmbodimentSpec | None) -> RewardTerm:
    """params: ``term: {kind, params}``, optional ``center``, ``clip``."""
    params = dict(params)
    inner = params.pop("term", None)
    if not isinstance(inner, Mapping):
        raise RewardConfigError("reward.params.term must be a term config ({kind, params})")
    return Normalize(build(inner, spec, "reward.params.term"), **params)


# ---------------------------------------------------------------------------
# relabelling stored data


def relabel(term: RewardTerm, batch: Transitions, chunk: int = 4096) -> RewardOutput:
    """Score stored transitions in chunks (statistics frozen), e.g. a replay buffer or episodes."""
    term.train_mode(False)
    outs = [term(batch.select(slice(i, i + chunk))) for i in range(0, len(batch), chunk)]
    if not outs:
        return RewardOutput(np.zeros(0, np.float32))
    comps = {k: np.concatenate([o.components[k] for o in outs]) for k in outs[0].components}
    succ = None if any(o.success is None for o in outs) else np.concatenate([o.success for o in outs])
    return RewardOutput(np.concatenate([o.reward for o in outs]), comps, succ)


__all__ = [
    "Normalize", "RewardConfigError", "RewardOutput", "RewardTerm", "SparseOverride", "TaskReward",
    "Transitions", "WeightedSum", "build", "known_kinds", "register", "relabel",
]
