"""Record seeded scripted-expert demonstrations of a Panda task into an episode dataset.

    uv run rewardforge-record task=panda_pick_place episodes=20
    uv run rewardforge-record task=panda_push episodes=50 noise=0.3 cameras=[front] image_size=84

``task=`` picks a config from ``configs/task/`` (its ``kwargs`` are the env's, and
any ``task.kwargs.<key>=`` override works); the other keys are the fields of
:class:`RecordConfig`. Episode ``i`` resets the env with seed ``seed + i`` and draws
its action noise from a generator seeded with ``(seed, i)``, so a recording is
reproducible and appending with a later ``seed`` adds new episodes. With
``noise > 0`` the executed action is ``clip(expert + N(0, noise^2), -1, 1)`` per entry
and the source is ``noisy`` (both ``action`` and ``action.policy`` hold it; the clean
expert action is not stored). Each frame's ``next.success`` is ``info["success"]``;
the episode label is whether any step succeeded, as evaluation counts an episode (the
pick-and-place expert sometimes lets the block creep out of its grip after placing it: 4 of
20 demos end out of the goal; labelled by their last step, ``demos_success_only`` dropped
them). With ``after_success=k`` an episode ends
``k`` steps after its first success, marked truncated (a time limit, so learners bootstrap
through it): an expert that succeeds in 20 of 120 steps otherwise fills most of a
demonstration set with holding still at the goal.

The dataset goes to ``out`` (default ``data/<task>``); an existing dataset there is
appended to (spec, fps and cameras must match) unless ``overwrite=true``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig

CONFIG_DIR = (Path(__file__).resolve().parent.parent / "configs").as_posix()

# A sentence per task for meta/tasks.parquet (language-conditioned policies and VLM rewards read it).
TASK_TEXT = {
    "reach": "move the gripper to the goal",
    "push": "push the block to the goal",
    "pick_place": "pick up the block and place it at the goal",
    "drawer_open": "open the drawer",
}


class RecordConfigError(ValueError):
    """A bad record config value; the message names the key and what is allowed."""


@dataclass
class RecordTaskConfig:
    env_id: str = MISSING
    max_episode_steps: int | None = None  # None: the env's registered limit
    kwargs: dict[str, Any] = field(default_factory=dict)
    total_steps: int = 0  # (training budget in the task configs; unused here)


@dataclass
class RecordConfig:
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"task": "panda_pick_place"}])
    task: RecordTaskConfig = MISSING
    episodes: int = 20  # episodes to record
    seed: int = 0  # episode i uses env seed `seed + i`
    noise: float = 0.0  # std of Gaussian action noise (normalised units); > 0 records source "noisy"
    cameras: list[str] | None = None  # e.g. [front]; null: the task config's task.kwargs.cameras
    image_size: int | None = None  # px; null: the task config's task.kwargs.image_size
    out: str | None = None  # dataset directory; null: data/<task>
    overwrite: bool = False  # delete an existing dataset at `out` first (else append)
    task_text: str | None = None  # instruction stored with the episodes; null: a sentence per task
    after_success: int | None = None  # end an episode this many steps after its first success (truncated); null: at the time limit
    final_obs: bool = True  # store the observation after the last action (complete last transition)
    crf: int = 18  # video quality for new datasets, 0 (lossless) .. 51
    progress: bool = True  # tqdm bar


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="record_schema", node=RecordConfig)


def compose(overrides: list[str] | tuple[str, ...] = ()) -> tuple[DictConfig, str]:
    """Build the record config from ``key=value`` overrides; returns (config, task choice)."""
    from common.cli import compose_task_command

    _register()
    keys = [k for k in RecordConfig.__dataclass_fields__ if k != "defaults"]
    cfg, choice = compose_task_command(CONFIG_DIR, "record_schema", overrides, keys, RecordConfigError)
    validate(cfg)
    return cfg, choice


def validate(cfg: DictConfig) -> None:
    if cfg.episodes < 1:
        raise RecordConfigError(f"episodes={cfg.episodes}: must be an integer >= 1")
    if cfg.after_success is not None and cfg.after_success < 0:
        raise RecordConfigError(f"after_success={cfg.after_success}: must be >= 0 or null (run to the time limit)")
    if not cfg.noise >= 0:
        raise RecordConfigError(f"noise={cfg.noise}: must be >= 0 (std of the action noise)")
    if cfg.image_size is not None and (cfg.image_size < 2 or cfg.image_size % 2):
        raise RecordConfigError(f"image_size={cfg.image_size}: must be an even number >= 2 (H.264 yuv420p video)")
    if not 0 <= cfg.crf <= 51:
        raise RecordConfigError(f"crf={cfg.crf}: must be in 0..51")
    if cfg.task.max_episode_steps is not None and cfg.task.max_episode_steps < 1:
        raise RecordConfigError(f"task.max_episode_steps={cfg.task.max_episode_steps}: must be >= 1 or null")


def record(cfg: DictConfig, task_choice: str = "task") -> dict[str, Any]:
    """Roll out the expert ``cfg.episodes`` times into the dataset; returns the dataset summary
    plus recording speed (``frames_per_s``: env step + expert + writing, wall clock)."""
    import numpy as np

    import sim
    from common.episodes import Dataset, DatasetWriter
    from sim.panda.experts import make_expert

    kwargs = dict(cfg.task.kwargs)
    if cfg.cameras is not None:
        kwargs["cameras"] = list(cfg.cameras)
    if cfg.image_size is not None:
        kwargs["image_size"] = int(cfg.image_size)
    if kwargs.get("cameras"):
        from sim.gl import before_gl_context

        before_gl_context()
    make_kw = {} if cfg.task.max_episode_steps is None else {"max_episode_steps": int(cfg.task.max_episode_steps)}
    env = sim.make(cfg.task.env_id, **kwargs, **make_kw)
    try:
        unwrapped = env.unwrapped
        if not hasattr(unwrapped, "task_name") or unwrapped.task_name not in TASK_TEXT:
            raise RecordConfigError(f"task={task_choice}: scripted experts exist only for the Panda tasks "
                                    f"({', '.join(sorted(TASK_TEXT))})")
        spec = unwrapped.embodiment
        text = cfg.task_text or TASK_TEXT[unwrapped.task_name]
        out = Path(cfg.out or os.path.join("data", task_choice))
        if cfg.overwrite and out.exists():
            shutil.rmtree(out)
        expert = make_expert(env)
        source = "noisy" if cfg.noise > 0 else "expert"
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=int(cfg.episodes), desc=f"record {task_choice}", unit="ep")
        frames, successes = 0, 0
        t0 = time.perf_counter()
        with DatasetWriter(out, spec, cameras=kwargs.get("cameras") or [], crf=int(cfg.crf)) as writer:
            for i in range(int(cfg.episodes)):
                seed = int(cfg.seed) + i
                rng = np.random.default_rng([int(cfg.seed), i])
                obs, info = env.reset(seed=seed)
                expert.reset()
                writer.begin_episode(text, source=source,
                                     metadata={"seed": seed, "noise": float(cfg.noise), "env_id": cfg.task.env_id})
                done, t, first_success = False, 0, None
                while not done:
                    action = np.asarray(expert(obs), np.float32)
                    if cfg.noise > 0:
                        action = np.clip(action + rng.normal(0.0, cfg.noise, action.shape), -1, 1).astype(np.float32)
                    next_obs, reward, terminated, truncated, info = env.step(action)
                    if first_success is None and info["success"]:
                        first_success = t
                    if cfg.after_success is not None and first_success is not None and not terminated:
                        truncated = truncated or t - first_success >= cfg.after_success
                    t += 1
                    done = bool(terminated or truncated)
                    writer.add_frame(obs, action, reward=float(reward), success=bool(info["success"]),
                                     done=done, truncated=bool(truncated and not terminated))
                    obs = next_obs
                    frames += 1
                writer.end_episode(success=first_success is not None, final_obs=obs if cfg.final_obs else None)
                successes += first_success is not None
                if bar is not None:
                    bar.set_postfix(success=f"{successes}/{i + 1}", fps=f"{frames / (time.perf_counter() - t0):.0f}")
                    bar.update(1)
        elapsed = time.perf_counter() - t0
        if bar is not None:
            bar.close()
    finally:
        env.close()
    summary = Dataset(out).summary()
    summary.update({"recorded_episodes": int(cfg.episodes), "recorded_frames": frames,
                    "recorded_successes": successes, "seconds": elapsed, "frames_per_s": frames / elapsed})
    return summary


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``rewardforge-record key=value ...``."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    try:
        cfg, choice = compose(args)
        summary = record(cfg, choice)
    except RecordConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(2)
    from common.episodes.check import format_summary

    print(format_summary(summary))
    print(f"recorded     {summary['recorded_frames']} frames in {summary['seconds']:.1f} s "
          f"({summary['frames_per_s']:.1f} frames/s)")


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    main()
