"""The training config schema, its validation, and ``compose`` for building configs in code.

Hydra is the user interface: ``configs/train.yaml`` picks a task, an agent and a
reward from the config groups, and the dataclasses below are the schema Hydra
checks every value against (registered in the ConfigStore as ``train_schema``,
which ``train.yaml`` lists first in its defaults). Types are checked by OmegaConf;
ranges and choices by :func:`validate`; unknown keys on the command line by
:func:`check_overrides`, which also suggests the nearest valid key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

CONFIG_DIR = (Path(__file__).resolve().parent.parent / "configs").as_posix()


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the key and what is allowed."""


@dataclass
class TaskConfig:
    env_id: str = MISSING  # a registered Gymnasium id, e.g. rewardforge/PandaReach-v0
    max_episode_steps: int | None = None  # None: the env's registered limit
    kwargs: dict[str, Any] = field(default_factory=dict)  # env constructor kwargs
    # The task's default training budget (env steps); train.yaml's total_steps refers to it,
    # so `task=panda_reach` alone gives a short run and `total_steps=...` still overrides.
    total_steps: int = 100_000


@dataclass
class RewardConfig:
    name: str = "task_dense"
    kind: str = "task"  # a reward kind from rewards/ (task, clip, keypoints, classifier, vip, sum, ...)
    scale: float = 1.0  # reward multiplier applied before storing transitions
    params: dict[str, Any] = field(default_factory=dict)  # kind-specific settings
    normalize: bool = False  # divide by a running std (and centre) of the term's reward
    # Transitions held back for an expensive (batched) term before it scores them in one
    # call; an episode end also flushes. Learning never sees a transition without its reward.
    relabel_batch: int = 256
    nonfinite: str = "error"  # a NaN/inf reward from the term: "error" (stop, say which) or "zero"
    # Reward-hacking monitor (rewards/monitor.py) on every scored batch, against the sim's ground truth;
    # its counts go into the training log. monitor_params: RewardMonitor's settings.
    monitor: bool = True
    monitor_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SACConfig:
    name: str = "sac"
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # MLP widths, actor and critic
    critic_ensemble: int = 2  # N critics; RLPD/SERL use 10
    target_subset: int = 2  # critics sampled for the target min (REDQ/RLPD); == N uses all
    actor_q: str = "min"  # reduce the ensemble for the actor loss: "min" (SAC) or "mean" (RLPD)
    critic_layer_norm: bool = False  # LayerNorm in the critic (RLPD)
    actor_layer_norm: bool = False
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate for the target critics
    lr: float = 3e-4  # default learning rate for actor, critic and temperature
    actor_lr: float | None = None  # None: lr
    critic_lr: float | None = None
    alpha_lr: float | None = None
    batch_size: int = 256
    utd: int = 1  # update-to-data ratio: critic updates per env step
    actor_update_every: int = 1  # actor + temperature update every k env steps (after the last critic update)
    target_update_every: int = 1  # Polyak update every k critic updates
    n_step: int = 1  # n-step returns
    autotune_alpha: bool = True  # automatic entropy tuning (Haarnoja et al. 2018b)
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None: -|A|
    buffer_size: int = 1_000_000  # transitions
    fused_update: bool = True  # one backward for critic, actor and temperature losses
    precision: str = "fp32"  # "bf16": matmuls in bfloat16 (autocast), weights/optimiser/losses fp32; "auto": bf16 where native
    bc_weight: float = 0.0  # > 0: the actor also imitates the demo side of each batch (TD3+BC-style; scale: bc_scale)
    bc_target: str = "demos"  # demos: imitate the demo side's actions | proposal: IBRL's frozen proposal on every batch state
    bc_scale: str = "q"  # q: bc_weight x mean |Q| (TD3+BC), fixed: bc_weight alone (|Q| starts near 0 and shrinks with the temperature)
    # IBRL (Hu et al. 2023): after bc_steps of cloning, a frozen copy of the clone proposes an action
    # beside the actor's, for acting and for the TD target; the one the critics value more is taken.
    ibrl: bool = False
    backward: str = "manual"  # "manual": hand-written gradients (policies/fused.py) where the networks qualify; "autograd"
    # Pixels (DrQ, policies/pixels.py): cameras the policy reads; empty = a state-based agent.
    cameras: list[str] = field(default_factory=list)
    image_size: int | None = None  # px, square; None: the task's kwargs.image_size
    encoder: str = "drq"  # "drq" (4 conv layers, trained by the critic) | "resnet18" (frozen, encoder_weights)
    encoder_weights: str | None = None  # local torchvision resnet18 state dict for encoder=resnet18
    feature_dim: int = 50  # features per camera (Linear -> LayerNorm -> tanh)
    encoder_tau: float = 0.05  # Polyak rate of the target encoder (DrQ)
    encoder_lr: float | None = None  # None: critic_lr, else lr
    augment_pad: int = 4  # random-shift padding in px (DrQ); 0: no augmentation
    state_fields: list[str] | None = None  # state fields beside the images; None: all, []: images only


@dataclass
class InterventionConfig:
    """Scripted interventions in simulation (HIL-SERL): the task's expert takes over for
    ``takeover_steps`` when ground-truth progress rose less than ``min_gain`` in ``patience`` steps."""

    enabled: bool = False
    patience: int = 15
    min_gain: float = 0.02
    takeover_steps: int = 15
    max_per_episode: int = 2
    start_after: int = 0  # env steps of each episode before the person may step in
    to_demos: bool = True  # intervened transitions also go to the demonstration side of the batch
    demo_buffer_size: int = 200_000  # capacity of that side when no demos= dataset gives one


@dataclass
class TrainConfig:
    task: TaskConfig = MISSING
    agent: SACConfig = MISSING
    reward: RewardConfig = MISSING
    seed: int = 0
    total_steps: int = 100_000  # env steps (summed over parallel envs)
    warmup_steps: int = 5_000  # env steps before learning starts (actions: warmup_actions)
    # What acts during warm-up: "random" (uniform actions, SAC's default) or "policy" (the actor's
    # deterministic action plus Gaussian noise of std warmup_noise, clipped): after bc_steps of
    # cloning, the online buffer then starts with the cloned policy's successes instead of noise.
    warmup_actions: str = "random"
    warmup_noise: float = 0.1
    num_envs: int = 1  # parallel envs (gymnasium vector env)
    vector_mode: str = "sync"  # "sync" (in process) or "async" (one subprocess per env)
    # Step the env while the gradient update runs. With vector_mode=async the env runs in
    # its own process, truly in parallel (measured in benchmarks/sac_speed.py).
    overlap_env_step: bool = False
    # Pin this process to one CPU and async env workers to the others (fewer cache and scheduler
    # collisions). Off by default: two pinned runs on one machine would share the same first CPU.
    pin_cpus: bool = False
    eval_every: int = 10_000  # env steps between evaluations (0: only at the end)
    eval_episodes: int = 10  # deterministic-policy episodes per evaluation
    checkpoint_every: int = 10_000  # env steps between checkpoints + resumable state (0: end only)
    log_every: int = 1_000  # env steps between training-metric rows (losses, alpha, steps/s)
    success_window: int = 20  # episodes in the "recent success" shown on the progress bar
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    torch_threads: int = 1  # small networks are fastest single-threaded on CPU
    video: bool = True  # evaluation video of the final policy
    video_episodes: int = 1
    video_fps: float | None = None  # None: the embodiment's control rate
    progress: bool = True  # tqdm progress bar
    run_dir: str | None = None  # None: Hydra's output dir (or ./runs/<time> outside Hydra)
    resume: bool = True  # continue from the run dir's resumable state if there is one
    # Demonstrations (RLPD symmetric sampling): a dataset in the episode format (rewardforge-record,
    # the ROS recorder); each batch takes demo_ratio of its transitions from it.
    demos: str | None = None
    demo_ratio: float = 0.5
    bc_steps: int = 0  # behaviour-cloning steps on the demos before RL (0: none)
    bc_ensemble: int = 1  # clones trained (bc_steps each); > 1: IBRL's frozen proposal is their mean action
    actor_freeze_steps: int = 0  # learning steps (env steps after warm-up) in which only the critics learn
    actor_lr_warmup: int = 0  # actor updates over which the actor's learning rate ramps up from 0 (after any freeze)
    obs_norm: str = "none"  # none | demos: standardise the state input by the demos' mean/std (networks.ObsNorm)
    bc_loss: str = "mse"  # mse | nll (SAC.bc_update says why mse)
    demos_success_only: bool = False  # keep only the demo episodes labelled successful (HIL-SERL's demos)
    # A scripted person (sim/intervention.py) who takes over when the policy stops making progress.
    intervention: InterventionConfig = field(default_factory=lambda: InterventionConfig())


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)


register_configs()
# ``${rf_or:a,b}``: a unless it is null, else b (train.yaml: hydra.run.dir follows run_dir when set).
OmegaConf.register_new_resolver("rf_or", lambda a, b: b if a is None else a, replace=True)


# ---------------------------------------------------------------------------
# validation


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"invalid config value {key}={value!r}: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Check ranges and choices; raise ConfigError naming the key and what is allowed."""
    a = cfg.agent
    positive_ints = {
        "total_steps": cfg.total_steps, "num_envs": cfg.num_envs, "eval_episodes": cfg.eval_episodes,
        "log_every": cfg.log_every, "success_window": cfg.success_window, "torch_threads": cfg.torch_threads,
        "agent.critic_ensemble": a.critic_ensemble, "agent.target_subset": a.target_subset,
        "agent.batch_size": a.batch_size, "agent.utd": a.utd, "agent.actor_update_every": a.actor_update_every,
        "agent.target_update_every": a.target_update_every, "agent.n_step": a.n_step,
        "agent.buffer_size": a.buffer_size,
        "intervention.patience": cfg.intervention.patience, "intervention.takeover_steps": cfg.intervention.takeover_steps,
        "intervention.demo_buffer_size": cfg.intervention.demo_buffer_size,
    }
    for key, v in positive_ints.items():
        if v < 1:
            _fail(key, v, "must be an integer >= 1")
    for key in ("warmup_steps", "eval_every", "checkpoint_every", "video_episodes", "bc_steps", "actor_freeze_steps",
                "actor_lr_warmup"):
        if cfg[key] < 0:
            _fail(key, cfg[key], "must be >= 0")
    for key in ("lr", "actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
        if a[key] is not None and not a[key] > 0:
            _fail(f"agent.{key}", a[key], "must be > 0")
    if cfg.obs_norm not in ("none", "demos"):
        _fail("obs_norm", cfg.obs_norm, "must be 'none' or 'demos' (the demonstrations' mean and std)")
    if cfg.obs_norm == "demos" and (not cfg.demos or a.cameras):
        raise ConfigError(f"obs_norm=demos standardises the state with the demonstrations' statistics: "
                          f"it needs demos= and a state-based agent (demos={cfg.demos!r}, "
                          f"agent.cameras={list(a.cameras)}); set obs_norm=none")
    if a.ibrl and (not cfg.demos or not cfg.bc_steps or a.cameras):
        raise ConfigError(f"agent.ibrl=true keeps the behaviour-cloned policy as a second proposal: it needs demos= "
                          f"and bc_steps > 0, and a state-based agent (demos={cfg.demos!r}, bc_steps={cfg.bc_steps}, "
                          f"agent.cameras={list(a.cameras)}); set agent.ibrl=false")
    if cfg.bc_ensemble < 1:
        _fail("bc_ensemble", cfg.bc_ensemble, "must be an integer >= 1 (1: one clone, the actor itself)")
    if cfg.bc_ensemble > 1 and not a.ibrl:
        raise ConfigError(f"bc_ensemble={cfg.bc_ensemble} trains extra clones for IBRL's frozen proposal (their mean "
                          f"action), and only agent.ibrl=true uses them: set agent.ibrl=true or bc_ensemble=1")
    if cfg.warmup_actions not in ("random", "policy"):
        _fail("warmup_actions", cfg.warmup_actions, "must be 'random' (uniform) or 'policy' (the actor plus noise)")
    if not cfg.warmup_noise >= 0.0:
        _fail("warmup_noise", cfg.warmup_noise, "must be >= 0 (std of the Gaussian added to the actor's action)")
    if a.bc_target not in ("demos", "proposal"):
        _fail("agent.bc_target", a.bc_target, "must be 'demos' (the demo side's actions) or 'proposal' (IBRL's frozen proposal)")
    if a.bc_target == "proposal" and not a.ibrl:
        raise ConfigError("agent.bc_target=proposal imitates IBRL's frozen proposal, so it needs agent.ibrl=true "
                          "(or set agent.bc_target=demos)")
    if a.bc_scale not in ("q", "fixed"):
        _fail("agent.bc_scale", a.bc_scale, "must be 'q' (bc_weight x mean |Q|) or 'fixed' (bc_weight alone)")
    if not a.bc_weight >= 0.0:
        _fail("agent.bc_weight", a.bc_weight, "must be >= 0 (0: no imitation term in the actor loss)")
    if not 0.0 <= a.gamma <= 1.0:
        _fail("agent.gamma", a.gamma, "must be in [0, 1]")
    if not 0.0 < a.tau <= 1.0:
        _fail("agent.tau", a.tau, "must be in (0, 1]")
    if a.target_subset > a.critic_ensemble:
        _fail("agent.target_subset", a.target_subset, f"must be <= agent.critic_ensemble ({a.critic_ensemble})")
    if a.backward not in ("manual", "autograd"):
        _fail("agent.backward", a.backward, "allowed values: manual (hand-written gradients where supported), autograd")
    if a.precision not in ("fp32", "bf16", "auto"):
        _fail("agent.precision", a.precision, "allowed values: fp32, bf16, auto (bf16 where native)")
    if a.actor_q not in ("min", "mean"):
        _fail("agent.actor_q", a.actor_q, "allowed values: min, mean")
    if not a.hidden or any(h < 1 for h in a.hidden):
        _fail("agent.hidden", list(a.hidden), "must be a non-empty list of positive widths")
    if a.cameras:
        from policies.pixels import ENCODERS

        if a.encoder not in ENCODERS:
            _fail("agent.encoder", a.encoder, f"allowed values: {', '.join(ENCODERS)}")
        if a.image_size is not None and a.image_size < 16:
            _fail("agent.image_size", a.image_size, "must be >= 16 px or null (the task's image_size)")
        if a.feature_dim < 1:
            _fail("agent.feature_dim", a.feature_dim, "must be an integer >= 1")
        if not 0.0 < a.encoder_tau <= 1.0:
            _fail("agent.encoder_tau", a.encoder_tau, "must be in (0, 1]")
        if a.augment_pad < 0:
            _fail("agent.augment_pad", a.augment_pad, "must be >= 0 (0: no augmentation)")
        if a.encoder_lr is not None and not a.encoder_lr > 0:
            _fail("agent.encoder_lr", a.encoder_lr, "must be > 0 or null")
        if a.encoder == "resnet18" and not (a.encoder_weights and Path(a.encoder_weights).is_file()):
            _fail("agent.encoder_weights", a.encoder_weights, "encoder=resnet18 needs an existing local file with a "
                  "torchvision resnet18 state dict (nothing is downloaded)")
    if cfg.vector_mode not in ("sync", "async"):
        _fail("vector_mode", cfg.vector_mode, "allowed values: sync, async")
    if cfg.bc_loss not in ("mse", "nll"):
        _fail("bc_loss", cfg.bc_loss, "allowed values: mse, nll")
    dev = cfg.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        _fail("device", dev, "allowed values: auto, cpu, cuda, cuda:N")
    from rewards import known_kinds

    if cfg.reward.kind not in known_kinds():
        _fail("reward.kind", cfg.reward.kind, f"allowed values: {', '.join(known_kinds())}")
    if cfg.reward.relabel_batch < 1:
        _fail("reward.relabel_batch", cfg.reward.relabel_batch, "must be an integer >= 1")
    if cfg.reward.nonfinite not in ("error", "zero"):
        _fail("reward.nonfinite", cfg.reward.nonfinite, "allowed values: error, zero")
    if cfg.task.max_episode_steps is not None and cfg.task.max_episode_steps < 1:
        _fail("task.max_episode_steps", cfg.task.max_episode_steps, "must be >= 1 or null")
    if not 0.0 <= cfg.demo_ratio <= 1.0:
        _fail("demo_ratio", cfg.demo_ratio, "must be in [0, 1]")
    if cfg.video_fps is not None and not cfg.video_fps > 0:
        _fail("video_fps", cfg.video_fps, "must be > 0 or null")


# ---------------------------------------------------------------------------
# command-line keys

_GROUPS = ("task", "agent", "reward")
_OPEN_DICTS = ("task.kwargs", "reward.params", "reward.monitor_params")  # any key allowed below these


def check_overrides(overrides: Sequence[str]) -> None:
    """Reject unknown keys in ``key=value`` overrides with the nearest valid key and the allowed keys.

    Hydra rejects them too, but deep in a traceback and without suggestions. Group
    choices (``task=...``) are left to Hydra, whose error lists the available options.
    """
    from common.cli import check_overrides as check

    schema = OmegaConf.structured(TrainConfig)
    schema.task, schema.agent, schema.reward = TaskConfig, SACConfig, RewardConfig
    check(overrides, schema, _GROUPS, _OPEN_DICTS, ConfigError)


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Build the training config in code, as the command line would: ``compose(["task=panda_reach", "seed=1"])``."""
    from common.cli import compose as hydra_compose

    check_overrides(overrides)
    cfg = hydra_compose(CONFIG_DIR, config_name, overrides)
    validate(cfg)
    return cfg
