"""Actor/learner split over ZeroMQ: actors step envs and stream transitions, the learner trains SAC and
streams actor weights back.

    python -m policies.distributed num_actors=2 task=panda_reach        # learner + 2 actor processes
    rewardforge-learner task=panda_reach transitions_port=5555 weights_port=5556
    rewardforge-actor task=panda_reach host=<learner> transitions_port=5555 weights_port=5556 actor_id=arm1

The training keys are the single-process loop's (configs/train.yaml, ``policies.config``); the
distributed ones (``num_actors``, ``host``, ports, chunk size, weight refresh, flow control, timeouts)
are in ``configs/distributed.yaml`` (schema: :class:`DistributedConfig`). Both go on one command line.

Learning per env step is the single-process loop's: the learner runs ``agent.utd`` critic updates
(:meth:`policies.train.Trainer.learn`) for every env step it has received after the warm-up, starting
at the same step, so ``num_updates`` after N env steps equals the single-process count. Actors pause
when the learner is more than ``max_lag_steps`` env steps behind (a learner slower than its actors
would otherwise train on ever more off-policy data and still owe the updates at the end).
Evaluation, checkpoints, metrics and the resumable state are the learner's, in the run-directory format
of ``policies.train`` (it drives a :class:`~policies.train.Trainer` built with ``num_envs=1`` whose
vector env stays idle); ``distributed.yaml`` and per-actor counts go beside them.

Wire format (version 1). Every message is a ZeroMQ multipart message; no frame is ever unpickled.

* Actor -> learner, PUSH -> PULL (``tcp://host:transitions_port``)::

      frame 0   UTF-8 JSON header: {"format": "rewardforge.transitions/1", "actor": str, "seq": int,
                "policy_version": int (-1: random warm-up actions), "embodiment": spec name,
                "episodes": [{"env": e, "t": row, "return": float, "length": int, "success": bool}]
                (episodes that ended at row t of this chunk; "env", "intervention_steps" and
                "eval" optional),
                "arrays": [{"name": str, "dtype": "<f4" | "|b1", "shape": [T, E, ...]}, ...]}
      frame 1+  one raw C-order buffer per entry of "arrays", in that order

  with arrays ``obs`` (T, E, D) <f4, ``action`` (T, E, A) <f4, ``reward`` (T, E) <f4 (the env's,
  unscaled), ``next_obs`` (T, E, D) <f4 (the true s', not an auto-reset observation),
  ``terminated`` and ``truncated`` (T, E) |b1. T steps in time order of E parallel envs; D and A are
  the embodiment's flat state and action sizes (``common.spec.flatten_state``). A ROS policy node
  sends E = 1 and a chunk of its last T control steps, exactly like a simulated actor.
  Optional: ``intervention`` (T, E) |b1, true where a person drove the robot (``action`` is then
  the person's executed command). Absent means no intervention anywhere in the chunk. With the
  learner's ``intervention.to_demos`` (and ``intervention.enabled``) those steps also go to its
  demonstration buffer (HIL-SERL: both sides of the batch), as in the single-process loop.

* Learner -> actors, PUB -> SUB (``tcp://host:weights_port``), two topics:

      [b"weights", JSON {"format": "rewardforge.weights/1", "version": int, "session": str,
                         "embodiment": str, "arch": {"obs_dim", "act_dim", "hidden", "layer_norm"},
                         "arrays": [...]},
       raw buffers]                          the actor network's state dict (TanhGaussianActor, <f4)
      [b"status", JSON {"format": "rewardforge.status/1", "received": int, "learned": int,
                        "lag": int, "learning": bool, "stop": bool, "version": int}]

  ``version``: env steps the learner has learned on when it sent the weights (grows within a
  ``session``; an actor takes newer versions, or any version of a new session: a restarted learner).
  ``lag``: received env steps not yet learned on; ``stop``: the run has its env steps. Weights go out
  every ``weights_every`` learned steps and every ``weights_interval_s``, status every
  ``status_interval_s``. An actor steps only after its first status, acts randomly until its first
  weights, and waits while ``lag > max_lag_steps``. :class:`ActorClient` is this protocol without an
  env or torch: what a ROS policy node would use.

Why not pickle: unpickling runs code chosen by the sender, and the transitions port faces a robot
network. A JSON header plus raw buffers is parsed, not executed; every dtype, shape and byte count is
checked against the header and the learner's embodiment before anything reaches the replay buffer
(:func:`decode`), a message is capped at ``max_message_mb``, and a C++ or ROS node can produce it
with nothing but a ZeroMQ binding. There is no authentication: the default host is 127.0.0.1; bind
elsewhere only on a trusted network (ZeroMQ's CURVE encryption would be the next step).

Replay order: the learner's buffer has one column (``num_envs=1``) and chunks of different actors
interleave in it, so the last step of every (chunk, env) segment is stored with ``episode_end`` set:
n-step returns (``agent.n_step > 1``) stop at segment ends and bootstrap there (as after a time-limit
truncation; ``terminated`` and hence the discount are untouched). With ``n_step=1`` nothing changes.

Bounded: every socket has linger 0, sends have a timeout, the learner stops after ``idle_timeout_s``
without transitions (or when every local actor process has exited), an actor exits when it has heard
nothing from the learner for ``learner_timeout_s``. A killed actor loses at most its unsent chunk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import zmq
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from common.spec import flatten_state
from policies.config import CONFIG_DIR, ConfigError, validate
from policies.networks import TanhGaussianActor

__all__ = ["DistributedConfig", "Learner", "SimActor", "ActorClient", "encode", "decode", "compose_all",
           "run_local", "spawn_actors", "main", "learner_main", "actor_main"]

log = logging.getLogger(__name__)

TRANSITIONS = "rewardforge.transitions/1"
WEIGHTS = "rewardforge.weights/1"
STATUS = "rewardforge.status/1"
TOPIC_WEIGHTS, TOPIC_STATUS = b"weights", b"status"
# Element types a peer may send: float32, bool, uint8 (images, later), int32/int64 (indices).
DTYPES = frozenset({"<f4", "|b1", "|u1", "<i4", "<i8"})
MAX_HEADER = 1 << 20  # bytes of JSON header
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class WireError(ValueError):
    """A message that does not follow the wire format (or this learner's embodiment); it is dropped."""


# ---------------------------------------------------------------------------
# config


@dataclass
class DistributedConfig:
    role: str = "local"  # local: learner + num_actors actor processes here; learner; actor
    num_actors: int = 2  # actor processes in local mode
    host: str = "127.0.0.1"  # learner binds here (role learner/local); actors connect here
    transitions_port: int = 0  # PULL socket for transitions; 0: any free port (local mode only)
    weights_port: int = 0  # PUB socket for weights and status; 0: any free port (local mode only)
    actor_id: str | None = None  # an actor's name in the learner's logs; None: <hostname>-<pid>
    chunk_steps: int = 16  # vector-env steps per transitions message
    weight_refresh_every: int = 10  # actor env steps between non-blocking checks for new weights
    weights_every: int = 50  # learner updates (env steps learned) between weight publications (SERL: 50)
    weights_interval_s: float = 1.0  # and at least this often once learning runs (late joiners)
    status_interval_s: float = 0.05  # learner status (lag, stop) publication period
    max_lag_steps: int = 256  # actors wait while the learner owes more than this many env steps of updates
    idle_timeout_s: float = 60.0  # learner stops when no transitions arrive for this long
    learner_timeout_s: float = 60.0  # an actor exits after hearing nothing from the learner this long
    send_timeout_s: float = 10.0  # an actor's send waits at most this long for the learner
    max_message_mb: int = 64  # larger transitions messages are refused by ZeroMQ itself
    actor_torch_threads: int = 1  # torch threads per actor process (inference of a small MLP)


def _plain_dist(d: DictConfig | DistributedConfig) -> DistributedConfig:
    return d if isinstance(d, DistributedConfig) else OmegaConf.to_object(OmegaConf.merge(
        OmegaConf.structured(DistributedConfig), d))


def register_configs() -> None:
    ConfigStore.instance().store(name="distributed_schema", node=DistributedConfig)


register_configs()
DIST_KEYS = tuple(f.name for f in fields(DistributedConfig))


def validate_distributed(d: DictConfig | DistributedConfig, cfg: DictConfig | None = None) -> None:
    """Ranges and choices of the distributed keys (and what the split supports of the training config)."""
    def fail(key: str, value: Any, allowed: str) -> None:
        raise ConfigError(f"invalid config value {key}={value!r}: {allowed}")

    if d.role not in ("local", "learner", "actor"):
        fail("role", d.role, "allowed values: local, learner, actor")
    for key in ("num_actors", "chunk_steps", "weight_refresh_every", "weights_every", "max_lag_steps",
                "max_message_mb", "actor_torch_threads"):
        if getattr(d, key) < 1:
            fail(key, getattr(d, key), "must be an integer >= 1")
    for key in ("weights_interval_s", "status_interval_s", "idle_timeout_s", "learner_timeout_s", "send_timeout_s"):
        if not getattr(d, key) > 0:
            fail(key, getattr(d, key), "must be > 0 (seconds)")
    for key in ("transitions_port", "weights_port"):
        port = getattr(d, key)
        if not 0 <= port <= 65535:
            fail(key, port, "must be a TCP port in [1, 65535], or 0 for any free port (role=local only)")
        if port == 0 and d.role != "local":
            fail(key, port, f"role={d.role} needs a fixed port (actors on another process must know it)")
    if d.role != "local" and d.transitions_port == d.weights_port:
        fail("weights_port", d.weights_port, "must differ from transitions_port")
    if not d.host or any(c in d.host for c in "/ "):
        fail("host", d.host, "an IP address or host name, e.g. 127.0.0.1")
    if cfg is not None and cfg.agent.get("cameras"):
        fail("agent.cameras", list(cfg.agent.cameras), "the actor/learner split sends flat state vectors only; "
             "use a state-based agent (agent.cameras=[]) until the wire format carries images")
    if cfg is not None and (cfg.reward.kind != "task" or cfg.reward.normalize):
        fail("reward.kind", cfg.reward.kind, "the actor/learner split trains on the env's reward only "
             "(reward=task_dense, reward.normalize=false); learned reward terms need the learner to see "
             "observation dicts, which the wire format does not carry yet")
    if cfg is not None and cfg.agent.get("ibrl"):
        fail("agent.ibrl", True, "the actor/learner split sends the actor's weights only, and IBRL's actors also need "
             "the frozen clone and the critics; use rewardforge-train")
    if cfg is not None and cfg.warmup_actions != "random":
        fail("warmup_actions", cfg.warmup_actions, "actors act uniformly at random until the learner's first "
             "weights arrive; warmup_actions=policy is for the single-process loop (rewardforge-train)")


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training overrides, distributed overrides): a key whose first part is a DistributedConfig field is ours."""
    train, dist = [], []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        (dist if key.split(".")[0] in DIST_KEYS else train).append(o)
    return train, dist


def compose_all(overrides: Sequence[str] = ()) -> tuple[DictConfig, DictConfig]:
    """(training config, distributed config) from one command line, as :func:`policies.config.compose` does
    for the training keys alone; an unknown key fails with a did-you-mean over both sets of keys."""
    import difflib

    from common.cli import check_overrides as check
    from common.cli import compose as hydra_compose
    from policies.config import compose

    train_ovr, dist_ovr = split_overrides(overrides)
    check(dist_ovr, OmegaConf.structured(DistributedConfig), (), (), ConfigError)
    try:
        cfg = compose(train_ovr)
    except ConfigError as err:
        unknown = re.search(r"unknown config key '([^']+)'", str(err))
        close = difflib.get_close_matches(unknown.group(1), DIST_KEYS, n=1) if unknown else []
        if close:
            raise ConfigError(f"unknown config key {unknown.group(1)!r} (did you mean {close[0]!r}?). Distributed "
                              f"keys (configs/distributed.yaml): {', '.join(DIST_KEYS)}") from err
        raise
    dcfg = hydra_compose(CONFIG_DIR, "distributed", dist_ovr)
    validate_distributed(dcfg, cfg)
    return cfg, dcfg


# ---------------------------------------------------------------------------
# wire format


def encode(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> list[bytes | np.ndarray]:
    """Frames of one message: the JSON header (with an "arrays" table) then each array's raw bytes."""
    table, frames = [], []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.str not in DTYPES:
            raise WireError(f"array {name!r} has dtype {a.dtype.str}; allowed: {sorted(DTYPES)}")
        table.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape)})
        frames.append(a)
    return [json.dumps({**header, "arrays": table}).encode(), *frames]


def decode(frames: Sequence[bytes], fmt: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and read-only array views of a message made by :func:`encode`; :class:`WireError` if any
    part disagrees with the header (format tag, dtype allow-list, shape, byte count, frame count)."""
    if not frames or len(frames[0]) > MAX_HEADER:
        raise WireError("missing or oversized header frame")
    try:
        header = json.loads(bytes(frames[0]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WireError(f"header is not JSON: {err}") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise WireError(f"expected format {fmt!r}, got {got!r}")
    table = header.get("arrays", [])
    if not isinstance(table, list) or len(table) != len(frames) - 1:
        raise WireError(f"header lists {len(table) if isinstance(table, list) else '?'} arrays, "
                        f"message has {len(frames) - 1} data frames")
    arrays = {}
    for entry, buf in zip(table, frames[1:], strict=True):
        try:
            name, dtype, shape = str(entry["name"]), str(entry["dtype"]), tuple(int(s) for s in entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise WireError(f"bad array entry {entry!r}") from None
        if dtype not in DTYPES or any(s < 0 for s in shape):
            raise WireError(f"array {name!r}: dtype {dtype} / shape {shape} not allowed")
        expect = math.prod(shape) * np.dtype(dtype).itemsize
        if len(buf) != expect:
            raise WireError(f"array {name!r}: {len(buf)} bytes, header says {shape} {dtype} = {expect}")
        arrays[name] = np.frombuffer(buf, dtype).reshape(shape)
    return header, arrays


def check_transitions(arrays: Mapping[str, np.ndarray], obs_dim: int, act_dim: int) -> tuple[int, int]:
    """(T, E) of a transitions message, or :class:`WireError` naming what is wrong."""
    need = {"obs": "<f4", "action": "<f4", "reward": "<f4", "next_obs": "<f4", "terminated": "|b1",
            "truncated": "|b1"}
    missing = sorted(set(need) - set(arrays))
    if missing:
        raise WireError(f"transitions lack {missing}")
    for k, dt in need.items():
        if arrays[k].dtype.str != dt:
            raise WireError(f"{k} has dtype {arrays[k].dtype.str}, expected {dt}")
    r = arrays["reward"]
    if r.ndim != 2 or 0 in r.shape:
        raise WireError(f"reward has shape {r.shape}, expected (T, E) with T, E >= 1")
    T, E = r.shape
    for k, tail in (("obs", (obs_dim,)), ("next_obs", (obs_dim,)), ("action", (act_dim,)), ("terminated", ()),
                    ("truncated", ())):
        if arrays[k].shape != (T, E, *tail):
            raise WireError(f"{k} has shape {arrays[k].shape}, this learner expects {(T, E, *tail)}")
    for k in ("obs", "next_obs", "action", "reward"):
        if not np.isfinite(arrays[k]).all():
            raise WireError(f"{k} holds NaN or inf")
    if "intervention" in arrays:  # optional: absent = nobody intervened
        flag = arrays["intervention"]
        if flag.dtype.str != "|b1" or flag.shape != (T, E):
            raise WireError(f"intervention has dtype {flag.dtype.str} shape {flag.shape}, expected |b1 {(T, E)}")
    return T, E


def _episodes(raw: Any, T: int) -> list[dict[str, Any]]:
    """The episode summaries of a transitions header, type-checked (a malformed one drops the message)."""
    if not isinstance(raw, list):
        raise WireError("episodes must be a list")
    out = []
    for ep in raw:
        try:
            row = {"t": int(ep["t"]), "episode_return": float(ep["return"]), "episode_length": int(ep["length"]),
                   "success": bool(ep["success"])}
            if "intervention_steps" in ep:  # optional: steps a person drove (the single loop's episode column)
                row["intervention_steps"] = int(ep["intervention_steps"])
            if "eval" in ep:  # optional: an evaluation episode on the robot (mean actions, nobody stepped in)
                row["eval"] = bool(ep["eval"])
        except (KeyError, TypeError, ValueError):
            raise WireError(f"bad episode entry {str(ep)[:200]}") from None
        if not 0 <= row["t"] < T or not math.isfinite(row["episode_return"]):
            raise WireError(f"bad episode entry {str(ep)[:200]}")
        out.append(row)
    return out


def _socket(ctx: zmq.Context, kind: int, **opts: int) -> zmq.Socket:
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)  # close never waits for unsent messages
    for name, value in opts.items():
        s.setsockopt(getattr(zmq, name), value)
    return s


def _bind(sock: zmq.Socket, host: str, port: int) -> str:
    if port == 0:
        sock.bind_to_random_port(f"tcp://{host}")
    else:
        sock.bind(f"tcp://{host}:{port}")
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


# ---------------------------------------------------------------------------
# learner


class Learner:
    """Owns the SAC agent and replay (through a :class:`policies.train.Trainer`), receives transitions,
    trains at the configured UTD ratio against received env steps, publishes weights and status."""

    def __init__(self, cfg: DictConfig, dcfg: DictConfig | DistributedConfig, build: bool = True) -> None:
        """Bind the sockets; with ``build`` also make the agent, replay and eval env (:meth:`build`).
        Local mode binds first and builds while the actor processes start (actors wait for the
        learner's first status before they step)."""
        validate(cfg)
        validate_distributed(dcfg, cfg)
        self.cfg, self.dcfg = cfg, _plain_dist(dcfg)  # plain attributes: a DictConfig lookup costs ~40 us
        dcfg = self.dcfg
        if dcfg.host not in LOOPBACK:
            log.warning("learner binds %s: anyone who reaches it can send transitions (no authentication)", dcfg.host)
        self.ctx = zmq.Context()
        self.pull = _socket(self.ctx, zmq.PULL, RCVHWM=1000, MAXMSGSIZE=int(dcfg.max_message_mb) << 20)
        self.pub = _socket(self.ctx, zmq.PUB, SNDHWM=100)
        self.transitions_endpoint = _bind(self.pull, dcfg.host, int(dcfg.transitions_port))
        self.weights_endpoint = _bind(self.pub, dcfg.host, int(dcfg.weights_port))
        a = cfg.agent
        self.start = max(cfg.warmup_steps, a.batch_size, 1)  # first env step the single-process loop learns at
        self.total, self.batch_size, self.scale = int(cfg.total_steps), int(a.batch_size), float(cfg.reward.scale)
        self.version = -1  # num_updates at the last weights publication
        self.session = os.urandom(4).hex()  # a restarted learner's versions start again; actors compare this
        self.actors: dict[str, dict[str, Any]] = {}  # per actor: received steps, chunks, last seen, ...
        self.rejected: dict[str, int] = {}  # reason -> count of dropped messages
        self.dropped_after_end = 0  # env steps received after total_steps (not stored)
        self.learn_t0: float | None = None  # wall time of the first and last learning step
        self.learn_t1: float | None = None
        self.learned_from: int | None = None  # num_updates at the first learning step of this session
        self.first_data_t: float | None = None  # wall time of the first stored transitions
        self.learn_start_step = 0  # env steps received when learning started
        self.stopped_reason: str | None = None
        self.stop_requested = False  # set (any thread) to end run() at its next iteration, then finish()
        self._last_status = self._last_weights = 0.0
        self.trainer: Any = None
        if build:
            self.build()

    def build(self) -> None:
        """The agent, replay buffer and eval env: a :class:`policies.train.Trainer` with one replay column."""
        from policies.train import Trainer

        learner_cfg = self.cfg.copy()
        learner_cfg.num_envs = 1  # one time-ordered replay column; actors' envs interleave in it
        self.trainer = Trainer(learner_cfg)
        spec = self.trainer.spec
        self.obs_dim, self.act_dim = spec.state_dim, spec.action.dim
        a = self.cfg.agent
        self.arch = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": [int(h) for h in a.hidden],
                     "layer_norm": bool(a.actor_layer_norm)}

    # ---- counters -------------------------------------------------------
    def owed(self) -> int:
        """Learning steps (each: utd critic updates) owed for the env steps received so far."""
        t = self.trainer
        received = min(t.step, self.total)
        if received < self.start or len(t.buffer) < self.batch_size:
            return 0
        return received - self.start + 1 - t.num_updates

    def learning(self) -> bool:
        return self.trainer.step >= self.start

    # ---- sockets --------------------------------------------------------
    def publish_status(self, stop: bool = False) -> None:
        t = self.trainer
        header = {"format": STATUS, "received": t.step, "learned": t.num_updates, "lag": self.owed(),
                  "learning": self.learning(), "stop": stop, "version": self.version}
        self._send_pub([TOPIC_STATUS, json.dumps(header).encode()])
        self._last_status = time.monotonic()

    def publish_weights(self) -> None:
        t = self.trainer
        self.version = t.num_updates
        arrays = {k: v.detach().cpu().float().numpy() for k, v in t.agent.actor.state_dict().items()}
        header = {"format": WEIGHTS, "version": self.version, "session": self.session, "embodiment": t.spec.name,
                  "arch": self.arch}
        self._send_pub([TOPIC_WEIGHTS, *encode(header, arrays)])
        self._last_weights = time.monotonic()

    def _send_pub(self, frames: list) -> None:
        with contextlib.suppress(zmq.Again):  # PUB never blocks: a subscriber at its limit misses this one
            self.pub.send_multipart(frames, flags=zmq.NOBLOCK)

    def receive(self, timeout_ms: int, max_messages: int = 64) -> int:
        """Store every transitions message that arrives within ``timeout_ms`` (then whatever is queued,
        up to ``max_messages``); returns the number of env steps stored."""
        stored = 0
        if not self.pull.poll(timeout_ms):
            return 0
        for _ in range(max_messages):
            try:
                frames = self.pull.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                header, arrays = decode(frames, TRANSITIONS)
                if header.get("embodiment") not in (None, self.trainer.spec.name):
                    raise WireError(f"embodiment {header.get('embodiment')!r}, this learner trains "
                                    f"{self.trainer.spec.name!r}")
                stored += self.store(header, arrays)
            except WireError as err:
                reason = str(err)
                if reason not in self.rejected:
                    log.warning("dropped a transitions message: %s", reason)
                self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return stored

    def store(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> int:
        """Add one transitions message to the replay (env by env, each segment in time order, its last
        step marked as a segment end for n-step sampling); episodes that ended in it become metrics rows."""
        T, E = check_transitions(arrays, self.obs_dim, self.act_dim)
        episodes = _episodes(header.get("episodes", []), T)
        try:
            version = int(header.get("policy_version", -1))
        except (TypeError, ValueError):
            raise WireError(f"policy_version {header.get('policy_version')!r} is not an integer") from None
        t = self.trainer
        name = str(header.get("actor", "?"))[:200]
        info = self.actors.setdefault(name, {"steps": 0, "chunks": 0, "episodes": 0, "first_seen": time.time()})
        info["last_seen"] = time.time()
        info["chunks"] += 1
        remaining = self.total - t.step
        keep = max(0, min(T, -(-remaining // E)))  # whole vector steps, up to total_steps (as the loop's last step)
        self.dropped_after_end += (T - keep) * E
        if keep == 0:
            return 0
        scale = self.scale
        obs, act, rew, nxt = arrays["obs"], arrays["action"], arrays["reward"], arrays["next_obs"]
        term, trunc = arrays["terminated"], arrays["truncated"]
        buf = t.buffer
        for e in range(E):
            for i in range(keep):
                cut = bool(trunc[i, e]) or i == keep - 1
                buf.add(obs[i, e][None], act[i, e][None], rew[i, e:e + 1] * scale, nxt[i, e][None],
                        term[i, e:e + 1], np.array([cut]))
        flag = arrays.get("intervention")
        if flag is not None and flag[:keep].any():
            info["intervention_steps"] = info.get("intervention_steps", 0) + int(flag[:keep].sum())
            if t.to_demos:  # HIL-SERL: the person's steps join the demonstration side too (Trainer's path)
                for e in range(E):
                    rows = np.flatnonzero(flag[:keep, e])
                    t._add_demo_rows(rows, obs[:keep, e], act[:keep, e], rew[:keep, e] * scale, nxt[:keep, e],
                                     term[:keep, e])
                info["demo_steps"] = info.get("demo_steps", 0) + int(flag[:keep].sum())
        if self.first_data_t is None:
            self.first_data_t = time.perf_counter()
        t.step += keep * E
        info["steps"] += keep * E
        info["policy_version"] = version
        for ep in episodes:
            if ep.pop("t") >= keep:
                continue
            t.episodes += 1
            info["episodes"] += 1
            t.record({"step": t.step, "kind": "episode", **ep, "actor": name})
        return keep * E

    # ---- the loop -------------------------------------------------------
    def run(self, on_step: Callable[[Learner], None] | None = None,
            actors_alive: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Train until ``total_steps`` env steps are received and learned on, or no transitions arrived for
        ``idle_timeout_s`` (or ``actors_alive()`` turned false with nothing left to learn). Then the final
        evaluation, checkpoint, resumable state, reports and ``summary.json``; returns the summary."""
        t, cfg, d = self.trainer, self.cfg, self.dcfg
        if not t.try_resume() and cfg.bc_steps and t.demo_buffer is not None:
            t.pretrain_bc(cfg.bc_steps)
        OmegaConf.save(cfg, t.run_dir / "config.yaml", resolve=True)
        OmegaConf.save(OmegaConf.structured(d), t.run_dir / "distributed.yaml")
        log.info("learner: transitions on %s, weights on %s", self.transitions_endpoint, self.weights_endpoint)
        total, log_every = self.total, int(cfg.log_every)
        eval_every, ckpt_every = int(cfg.eval_every), int(cfg.checkpoint_every)
        metrics: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        last_data = time.monotonic()
        next_log = (t.step // log_every + 1) * log_every
        next_eval = (t.step // eval_every + 1) * eval_every if eval_every else None
        next_ckpt = (t.step // ckpt_every + 1) * ckpt_every if ckpt_every else None
        log_t, log_step = t0, t.step
        since_publish = 0
        while True:
            owed = self.owed()
            if self.receive(0 if owed > 0 else 20):
                last_data = time.monotonic()
            owed = self.owed()
            if owed > 0:
                now = time.perf_counter()
                if self.learn_t0 is None:
                    self.learn_t0, self.learned_from, self.learn_start_step = now, t.num_updates, t.step
                    self.publish_weights()  # actors switch from random actions to the policy
                t.learn(1, metrics)
                self.learn_t1 = time.perf_counter()
                since_publish += 1
                if since_publish >= d.weights_every:
                    since_publish = 0
                    self.publish_weights()
            now_m = time.monotonic()
            if now_m - self._last_status >= d.status_interval_s:
                self.publish_status(stop=t.step >= total)
            if self.learning() and now_m - self._last_weights >= d.weights_interval_s:
                self.publish_weights()
            # Log/eval/checkpoint on the env step the policy has learned through (as the single loop's step).
            synced = min(t.step, self.start - 1 + t.num_updates) if self.learning() else t.step
            if synced >= next_log:
                now = time.perf_counter()
                sps = (t.step - log_step) / max(now - log_t, 1e-9)
                log_t, log_step, next_log = now, t.step, next_log + log_every
                row = {"step": t.step, "kind": "train", "steps_per_s": sps, "wall_time": now - t0,
                       "learned_steps": t.num_updates, "lag": self.owed(), "actors": len(self.active_actors())}
                row.update({k: float(v) for k, v in metrics.items()})
                t.record(row)
            if next_eval is not None and synced >= next_eval:
                next_eval += eval_every
                t.run_eval()
            if next_ckpt is not None and synced >= next_ckpt:
                next_ckpt += ckpt_every
                t.save_checkpoint(f"step_{t.step}.pt")
                t.save_resume_state()
            if on_step is not None:
                on_step(self)
            if t.step >= total and self.owed() <= 0:
                self.stopped_reason = "total_steps"
                break
            if self.stop_requested:
                self.stopped_reason = "stop requested"
                break
            if self.owed() <= 0 and time.monotonic() - last_data > d.idle_timeout_s:
                self.stopped_reason = f"no transitions for {d.idle_timeout_s:g} s"
                break
            if actors_alive is not None and self.owed() <= 0 and not actors_alive() and not self.pull.poll(0):
                self.stopped_reason = "every actor process exited"
                break
        wall = time.perf_counter() - t0
        for _ in range(3):  # PUB is fire-and-forget; actors also stop on learner silence
            self.publish_status(stop=True)
            time.sleep(0.01)
        return self.finish(wall)

    def active_actors(self, within_s: float = 5.0) -> list[str]:
        now = time.time()
        return [k for k, v in self.actors.items() if now - v.get("last_seen", 0) <= within_s]

    def finish(self, wall: float) -> dict[str, Any]:
        """The single-process loop's end-of-run outputs, from the learner's state."""
        t, cfg = self.trainer, self.cfg
        log.info("learner stopped (%s) at %d env steps; final evaluation and checkpoint", self.stopped_reason, t.step)
        evals = [r for r in t.rows if r["kind"] == "eval"]
        final = evals[-1] if evals and evals[-1]["step"] == t.step else t.run_eval()
        ckpt = t.save_checkpoint("final.pt")
        t.save_resume_state()
        t.write_reports()
        video = t.write_video() if cfg.video and cfg.video_episodes > 0 else None
        learned = t.num_updates - (self.learned_from or 0)
        learn_wall = (self.learn_t1 - self.learn_t0) if self.learn_t0 is not None and self.learn_t1 else 0.0
        summary = {
            "run_dir": str(t.run_dir), "env_steps": t.step, "episodes": t.episodes, "num_updates": t.num_updates,
            "critic_updates": t.num_updates * cfg.agent.utd,
            "final_eval_success": final["eval_success_rate"], "final_eval_return": final["eval_return"],
            "wall_time_s": wall, "steps_per_s": t.step / wall if wall > 0 else 0.0,
            # env steps learned on per second between the first and last learning step: the rate a user
            # waits for (received-but-unlearned steps do not count)
            "learn_steps_per_s": (learned - 1) / learn_wall if learn_wall > 0 else 0.0,
            # env steps received per second before learning started (random actions; actors only)
            "warmup_steps_per_s": (self.learn_start_step / (self.learn_t0 - self.first_data_t)
                                   if self.learn_t0 is not None and self.first_data_t is not None
                                   and self.learn_t0 > self.first_data_t else 0.0),
            "stopped_reason": self.stopped_reason, "actors": self.actors, "rejected_messages": self.rejected,
            "dropped_after_end": self.dropped_after_end, "checkpoint": str(ckpt), "video": str(video) if video else None,
            "transitions_endpoint": self.transitions_endpoint, "weights_endpoint": self.weights_endpoint,
        }
        (t.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        log.info("learner done: %d env steps, %d updates, final eval success %.2f, run dir %s",
                 t.step, t.num_updates, summary["final_eval_success"], t.run_dir)
        return summary

    def close(self) -> None:
        self.pull.close(linger=0)
        self.pub.close(linger=0)
        self.ctx.term()
        if self.trainer is not None:
            self.trainer.close()


# ---------------------------------------------------------------------------
# actor side


class ActorClient:
    """An actor's two sockets: PUSH transitions to the learner, SUB to its weights and status.

    Transport only (no env, no torch): a simulated actor (:class:`SimActor`) and a ROS policy node use
    it the same way: :meth:`send` a chunk of transitions, :meth:`poll` now and then for new weights."""

    def __init__(self, transitions_endpoint: str, weights_endpoint: str, actor_id: str | None = None,
                 send_timeout_s: float = 10.0, embodiment: str | None = None) -> None:
        self.actor_id = actor_id or f"{os.uname().nodename}-{os.getpid()}"
        self.embodiment = embodiment
        self.ctx = zmq.Context()
        self.push = _socket(self.ctx, zmq.PUSH, SNDHWM=64, SNDTIMEO=int(send_timeout_s * 1000))
        self.push.connect(transitions_endpoint)
        self.sub = _socket(self.ctx, zmq.SUB, RCVHWM=64)
        self.sub.setsockopt(zmq.SUBSCRIBE, TOPIC_WEIGHTS)
        self.sub.setsockopt(zmq.SUBSCRIBE, TOPIC_STATUS)
        self.sub.connect(weights_endpoint)
        self.seq = 0
        self.status: dict[str, Any] = {}
        self.weights: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None  # latest (header, arrays)
        self.last_heard = time.monotonic()

    def send(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
             terminated: np.ndarray, truncated: np.ndarray, episodes: Sequence[Mapping[str, Any]] = (),
             policy_version: int = -1, intervention: np.ndarray | None = None) -> None:
        """Push T steps of E envs (arrays (T, E, ...), see the module docstring; ``intervention`` (T, E)
        is optional). Raises ``zmq.Again`` if the learner has not taken it within ``send_timeout_s``."""
        header = {"format": TRANSITIONS, "actor": self.actor_id, "seq": self.seq, "policy_version": policy_version,
                  "embodiment": self.embodiment, "episodes": list(episodes)}
        arrays = {"obs": np.asarray(obs, np.float32), "action": np.asarray(action, np.float32),
                  "reward": np.asarray(reward, np.float32), "next_obs": np.asarray(next_obs, np.float32),
                  "terminated": np.asarray(terminated, bool), "truncated": np.asarray(truncated, bool)}
        if intervention is not None:
            arrays["intervention"] = np.asarray(intervention, bool)
        self.push.send_multipart(encode(header, arrays), copy=False)
        self.seq += 1

    def poll(self, timeout_ms: int = 0) -> bool:
        """Read everything the learner published (waiting up to ``timeout_ms`` for the first message);
        keep the newest status and weights. True if new weights arrived."""
        fresh = False
        wait = timeout_ms
        while self.sub.poll(wait):
            wait = 0
            frames = self.sub.recv_multipart()
            self.last_heard = time.monotonic()
            try:
                if frames[0] == TOPIC_STATUS:
                    self.status = decode(frames[1:], STATUS)[0]
                elif frames[0] == TOPIC_WEIGHTS:
                    header, arrays = decode(frames[1:], WEIGHTS)
                    old = self.weights[0] if self.weights is not None else None
                    if old is None or header.get("session") != old.get("session") or header["version"] > old["version"]:
                        self.weights, fresh = (header, {k: v.copy() for k, v in arrays.items()}), True
            except (WireError, KeyError) as err:
                log.warning("ignored a learner message: %s", err)
        return fresh

    def silent_for(self) -> float:
        return time.monotonic() - self.last_heard

    def close(self) -> None:
        self.push.close(linger=0)
        self.sub.close(linger=0)
        self.ctx.term()


def actor_network(weights: tuple[Mapping[str, Any], Mapping[str, np.ndarray]], obs_dim: int, act_dim: int,
                  net: TanhGaussianActor | None = None) -> TanhGaussianActor:
    """The policy network of a weights message (built from its "arch" unless ``net`` is given)."""
    header, arrays = weights
    arch = header["arch"]
    if (arch["obs_dim"], arch["act_dim"]) != (obs_dim, act_dim):
        raise ConfigError(f"the learner trains a policy for obs_dim={arch['obs_dim']}, act_dim={arch['act_dim']}; "
                          f"this actor's env has {obs_dim}, {act_dim}: start both with the same task")
    if net is None:
        net = TanhGaussianActor(obs_dim, act_dim, tuple(arch["hidden"]), bool(arch["layer_norm"]))
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return net


class SimActor:
    """One actor process: a (vector) env from the training config, acting with the latest weights it has
    (uniform random actions until the first weights arrive, like the single loop's warm-up)."""

    def __init__(self, cfg: DictConfig, dcfg: DictConfig | DistributedConfig, transitions_endpoint: str,
                 weights_endpoint: str, actor_id: str | None = None, seed: int = 0) -> None:
        from policies.train import make_vector_env

        dcfg = _plain_dist(dcfg)
        torch.set_num_threads(dcfg.actor_torch_threads)
        self.cfg, self.dcfg = cfg, dcfg
        self.envs = make_vector_env(cfg)
        self.spec = self.envs.get_attr("embodiment")[0]
        self.client = ActorClient(transitions_endpoint, weights_endpoint, actor_id, dcfg.send_timeout_s,
                                  embodiment=self.spec.name)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.net: TanhGaussianActor | None = None
        self.version = -1
        self.steps = 0
        self.exit_reason: str | None = None

    def refresh(self, timeout_ms: int = 0) -> None:
        if self.client.poll(timeout_ms) and self.client.weights is not None:
            self.net = actor_network(self.client.weights, self.spec.state_dim, self.spec.action.dim, self.net)
            self.version = int(self.client.weights[0]["version"])

    def act(self, obs_flat: np.ndarray) -> np.ndarray:
        if self.net is None:
            return self.rng.uniform(-1.0, 1.0, (obs_flat.shape[0], self.spec.action.dim)).astype(np.float32)
        with torch.inference_mode():
            return self.net.act(torch.from_numpy(obs_flat), deterministic=False).numpy()

    def _wait_for_learner(self) -> bool:
        """Block (bounded) while the learner is too far behind or learning without weights here yet.
        False if the learner went silent or said stop."""
        d, c = self.dcfg, self.client
        while True:
            st = c.status
            if st.get("stop"):
                self.exit_reason = "learner stop"
                return False
            if c.silent_for() > d.learner_timeout_s:
                self.exit_reason = f"learner silent for {d.learner_timeout_s:g} s"
                return False
            behind = st.get("lag", 0) > d.max_lag_steps
            no_policy = bool(st.get("learning")) and self.net is None
            if not (behind or no_policy):
                return True
            self.refresh(100)

    def run(self, max_steps: int | None = None) -> dict[str, Any]:
        """Step, send and refresh until the learner says stop or goes silent (or ``max_steps`` env steps)."""
        d, c, E = self.dcfg, self.client, int(self.cfg.num_envs)
        T, D, A = int(d.chunk_steps), self.spec.state_dim, self.spec.action.dim
        buf = {"obs": np.zeros((T, E, D), np.float32), "action": np.zeros((T, E, A), np.float32),
               "reward": np.zeros((T, E), np.float32), "next_obs": np.zeros((T, E, D), np.float32),
               "terminated": np.zeros((T, E), bool), "truncated": np.zeros((T, E), bool)}
        episodes: list[dict[str, Any]] = []
        obs, _ = self.envs.reset(seed=self.seed)
        obs_flat = flatten_state(self.spec, obs)
        ep_ret, ep_len, ep_success = np.zeros(E), np.zeros(E, int), np.zeros(E, bool)
        row, vstep = 0, 0
        while not c.status:  # no data before a learner is there to take it (bounded)
            if c.silent_for() > d.learner_timeout_s:
                self.exit_reason = f"no learner status within {d.learner_timeout_s:g} s"
                return self._summary()
            self.refresh(100)
        while max_steps is None or self.steps < max_steps:
            if vstep % d.weight_refresh_every == 0:
                self.refresh(0)
                if not self._wait_for_learner():
                    break
            action = self.act(obs_flat)
            next_obs, reward, term, trunc, info = self.envs.step(action)
            next_flat = flatten_state(self.spec, next_obs)
            real_next = next_flat
            success = np.asarray(info.get("success", np.zeros(E, bool)), bool)
            done = term | trunc
            if done.any():  # same-step autoreset: the true s' is in final_obs
                real_next = next_flat.copy()
                for i in np.flatnonzero(done):
                    real_next[i] = flatten_state(self.spec, info["final_obs"][i])
                    success[i] = bool(info["final_info"].get("success", np.zeros(E, bool))[i])
            buf["obs"][row], buf["action"][row], buf["reward"][row] = obs_flat, action, reward
            buf["next_obs"][row], buf["terminated"][row], buf["truncated"][row] = real_next, term, trunc
            ep_ret += reward
            ep_len += 1
            ep_success |= success
            for i in np.flatnonzero(done):
                episodes.append({"env": int(i), "t": row, "return": float(ep_ret[i]), "length": int(ep_len[i]),
                                 "success": bool(ep_success[i])})
                ep_ret[i], ep_len[i], ep_success[i] = 0.0, 0, False
            obs, obs_flat = next_obs, next_flat
            row, vstep, self.steps = row + 1, vstep + 1, self.steps + E
            if row == T:
                try:
                    c.send(**buf, episodes=episodes, policy_version=self.version)
                except zmq.Again:
                    self.exit_reason = f"learner took no transitions for {d.send_timeout_s:g} s"
                    break
                row, episodes = 0, []
        else:
            self.exit_reason = "max_steps"
        return self._summary()

    def _summary(self) -> dict[str, Any]:
        return {"actor": self.client.actor_id, "env_steps": self.steps, "exit_reason": self.exit_reason,
                "policy_version": self.version}

    def close(self) -> None:
        self.client.close()
        self.envs.close()


# ---------------------------------------------------------------------------
# processes


def _actor_process(cfg: dict[str, Any], dcfg: dict[str, Any], transitions_endpoint: str, weights_endpoint: str,
                   actor_id: str, seed: int) -> None:
    """Entry of a spawned local actor (plain dicts in: they cross the process boundary by pickle, locally)."""
    logging.basicConfig(level=logging.INFO, format=f"[{actor_id}] %(message)s")
    actor = SimActor(OmegaConf.create(cfg), OmegaConf.create(dcfg), transitions_endpoint, weights_endpoint,
                     actor_id, seed)
    try:
        out = actor.run()
        log.info("actor %s stopped (%s) after %d env steps", actor_id, out["exit_reason"], out["env_steps"])
    finally:
        actor.close()


def actor_seed(cfg: DictConfig, index: int) -> int:
    """Env and exploration seed of local actor ``index`` (distinct per actor, fixed by the run's seed)."""
    return int(cfg.seed) * 1000 + 17 * (index + 1)


def spawn_actors(cfg: DictConfig, dcfg: DictConfig, learner: Learner, n: int) -> list[mp.Process]:
    """Start ``n`` actor processes for ``learner`` ("spawn": a fresh interpreter per actor, no forked torch
    or GL state)."""
    ctx = mp.get_context("spawn")
    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    plain_d = asdict(_plain_dist(dcfg))
    procs = [ctx.Process(target=_actor_process, name=f"actor{i}", daemon=True,
                         args=(plain_cfg, plain_d, learner.transitions_endpoint, learner.weights_endpoint,
                               f"actor{i}", actor_seed(cfg, i)))
             for i in range(n)]
    for p in procs:
        p.start()
    return procs


def stop_processes(procs: Sequence[mp.Process], timeout_s: float = 10.0) -> dict[str, int | None]:
    """Join each process (bounded), then terminate and kill what is left; returns exit codes by name."""
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(2.0)
        if p.is_alive():
            p.kill()
            p.join(2.0)
    return {p.name: p.exitcode for p in procs}


def run_local(cfg: DictConfig, dcfg: DictConfig, on_step: Callable[[Learner], None] | None = None,
              procs_out: list[mp.Process] | None = None) -> dict[str, Any]:
    """The learner in this process and ``num_actors`` actor processes on 127.0.0.1 (or ``host``)."""
    learner = Learner(cfg, dcfg, build=False)
    procs: list[mp.Process] = []
    try:
        procs = spawn_actors(cfg, dcfg, learner, int(dcfg.num_actors))
        if procs_out is not None:
            procs_out.extend(procs)
        learner.build()  # while the actors import and make their envs
        result = learner.run(on_step, actors_alive=lambda: any(p.is_alive() for p in procs))
    finally:
        codes = stop_processes(procs, timeout_s=dcfg.learner_timeout_s)
        learner.close()
    result["actor_exit_codes"] = codes
    return result


# ---------------------------------------------------------------------------
# command line


def _cli(role: str | None) -> None:
    args = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__.split("\n\n")[1])
        print("distributed keys:", ", ".join(f"{k}={v}" for k, v in asdict(DistributedConfig()).items()))
        return
    if role is not None:
        args = [a for a in args if not a.startswith("role=")] + [f"role={role}"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        cfg, dcfg = compose_all(args)
        if dcfg.role == "local":
            result = run_local(cfg, dcfg)
        elif dcfg.role == "learner":
            learner = Learner(cfg, dcfg)
            try:
                result = learner.run()
            finally:
                learner.close()
        else:
            host = dcfg.host
            actor = SimActor(cfg, dcfg, f"tcp://{host}:{dcfg.transitions_port}", f"tcp://{host}:{dcfg.weights_port}",
                             dcfg.actor_id, seed=int(cfg.seed))
            try:
                result = actor.run()
            finally:
                actor.close()
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({k: v for k, v in result.items() if k != "actors"}, default=str))


def main() -> None:
    """``python -m policies.distributed [role=local|learner|actor] key=value ...`` (default: local)."""
    _cli(None)


def learner_main() -> None:
    """``rewardforge-learner key=value ...``"""
    _cli("learner")


def actor_main() -> None:
    """``rewardforge-actor host=... transitions_port=... weights_port=... key=value ...``"""
    _cli("actor")


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    main()

