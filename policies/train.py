"""Off-policy training loop: ``uv run rewardforge-train task=panda_reach seed=1``.

Random warm-up actions, then SAC with ``utd`` critic updates per env step; periodic
deterministic evaluation, checkpoints and a resumable state (agent, optimiser,
replay buffer, counters, RNG states, metrics) in the run directory. Rerunning the
same command with the same ``run_dir`` continues from the last resumable state.

``agent=drq`` trains from pixels (policies/pixels.py): the task's cameras come on for training
and evaluation, and the replay stores their uint8 frames.

In code (benchmarks)::

    from policies.train import compose, run
    result = run(compose(["task=panda_reach", "seed=1", "total_steps=20000"]))
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from common.cli import hydra_command
from common.spec import EmbodimentSpec, flatten_state
from policies import checkpoint, outputs
from policies.config import CONFIG_DIR, ConfigError, check_overrides, compose, validate
from policies.demos import demo_rows_in, load_demo_buffer, mixed_sample
from policies.networks import TanhGaussianActor
from policies.pixels import PixelObs, PixelSAC, to_device
from policies.replay import ReplayBuffer
from policies.reward_stream import RewardStream, step_transitions
from policies.sac import SAC, bc_loss

__all__ = ["compose", "run", "main", "make_env"]

log = logging.getLogger(__name__)
RESUME_FORMAT = "rewardforge.resume/1"
RESUME_MUST_MATCH = ("task", "agent", "reward", "num_envs", "seed")


def _identity(config: dict[str, Any], key: str) -> Any:
    """The part of ``config[key]`` a resumed run must share; a task's budget may grow like total_steps.

    Settings added to the schema after a run started count as their defaults (the run behaved
    that way), so a run saved by older code still resumes."""
    from policies.config import RewardConfig, SACConfig

    value = config.get(key)
    defaults = {"agent": SACConfig, "reward": RewardConfig}.get(key)
    if defaults is not None and isinstance(value, dict):
        value = {**OmegaConf.to_container(OmegaConf.structured(defaults)), **value}
    if key == "task" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "total_steps"}
    return value


# ---------------------------------------------------------------------------
# envs


def make_env(task: DictConfig, render_mode: str | None = None) -> gym.Env:
    import sim

    kwargs = dict(OmegaConf.to_container(task.kwargs, resolve=True) or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if task.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(task.max_episode_steps)
    return sim.make(task.env_id, **kwargs)


def make_vector_env(cfg: DictConfig, task: DictConfig | None = None,
                    intervention: DictConfig | None = None) -> gym.vector.VectorEnv:
    """``cfg.num_envs`` copies of the task; with ``intervention`` (its ``enabled`` set) each is
    wrapped in the scripted person of sim/intervention.py."""
    task = cfg.task if task is None else task
    fns = [functools.partial(_make_training_env, task, intervention) for _ in range(cfg.num_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if cfg.vector_mode == "async":
        # "spawn", not the Linux default "fork": a forked child inherits the parent's OpenMP
        # threads and any EGL context (rendering), and crashes inside them.
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="spawn")
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


def _make_training_env(task: DictConfig, intervention: DictConfig | None) -> gym.Env:
    env = make_env(task)
    if intervention is not None and intervention.enabled:
        from sim.intervention import ScriptedIntervention

        env = ScriptedIntervention(env, patience=intervention.patience, min_gain=intervention.min_gain,
                                   takeover_steps=intervention.takeover_steps,
                                   max_per_episode=intervention.max_per_episode, start_after=intervention.start_after)
    return env


def build_reward(cfg: DictConfig) -> Any:
    """The configured reward term, or None for the env's own reward (stored without a detour)."""
    if cfg.reward.kind == "task" and not cfg.reward.normalize:
        return None
    import rewards

    try:
        return rewards.build(cfg.reward)
    except rewards.RewardConfigError as err:
        raise ConfigError(str(err)) from err


def task_for_reward(task: DictConfig, term: Any) -> DictConfig:
    """``task`` with the cameras (and render size) an image-reading reward term needs added to its kwargs."""
    cams = [k.removeprefix("image_") for k in getattr(term, "requires", ()) if k.startswith("image_")]
    if not cams:
        return task
    task = task.copy()
    kwargs = dict(OmegaConf.to_container(task.kwargs, resolve=True) or {})
    kwargs["cameras"] = list(dict.fromkeys([*kwargs.get("cameras", []), *cams]))
    if term.render_size is not None:
        kwargs["image_size"] = int(term.render_size)
    task.kwargs = kwargs
    return task


def task_for_agent(task: DictConfig, agent: DictConfig, image_size: int | None = None) -> DictConfig:
    """``task`` with the cameras a pixel agent reads (``agent.cameras``) added to its kwargs, rendered at
    ``image_size`` (else ``agent.image_size``, else the task's own). Unchanged for a state-based agent."""
    if not agent.cameras:
        return task
    task = task.copy()
    kwargs = dict(OmegaConf.to_container(task.kwargs, resolve=True) or {})
    kwargs["cameras"] = list(dict.fromkeys([*kwargs.get("cameras", []), *agent.cameras]))
    size = image_size or agent.image_size
    if size:
        kwargs["image_size"] = int(size)
    task.kwargs = kwargs
    return task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"invalid config value device={name!r}: CUDA is not available here; use cpu or auto")
    return torch.device(name)


def resolve_run_dir(cfg: DictConfig) -> Path:
    if cfg.run_dir is not None:
        return Path(cfg.run_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not inside a Hydra app (e.g. run(compose(...)))
        name = Path(str(cfg.task.env_id).split(":")[-1]).name
        return Path("runs") / name / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_seed{cfg.seed}"


def evaluate(policy_act, env: gym.Env, spec: EmbodimentSpec, episodes: int, seed: int,
             frames: list[np.ndarray] | None = None, prepare=None,
             on_step: Callable[[int, dict], None] | None = None) -> tuple[float, float]:
    """Deterministic policy for ``episodes`` episodes (fixed seeds): (success rate, mean return).
    An episode counts as a success if ``info["success"]`` was true at any step. ``prepare`` turns an
    observation dict into ``policy_act``'s input batch of one (default: the flat state vector).
    ``on_step(episode, info)`` sees the reset's and every step's info (e.g. to record how far a
    failed episode got)."""
    prepare = prepare or (lambda o: flatten_state(spec, o)[None])
    successes, returns = [], []
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        done, ret, success = False, 0.0, bool(info.get("success", False))
        if on_step is not None:
            on_step(ep, info)
        if frames is not None:
            frames.append(env.render())
        while not done:
            obs, r, term, trunc, info = env.step(policy_act(prepare(obs))[0])
            ret += float(r)
            success = success or bool(info.get("success", False))
            done = term or trunc
            if on_step is not None:
                on_step(ep, info)
            if frames is not None:
                frames.append(env.render())
        successes.append(success)
        returns.append(ret)
    return float(np.mean(successes)), float(np.mean(returns))


# ---------------------------------------------------------------------------
# the loop


class Trainer:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        torch.set_num_threads(cfg.torch_threads)  # more threads than free cores makes every op wait
        self.run_dir = resolve_run_dir(cfg)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(cfg.device)
        self.reward_term = build_reward(cfg)
        train_task = task_for_reward(task_for_agent(cfg.task, cfg.agent), self.reward_term)
        # Evaluation renders no reward cameras; a pixel agent's own cameras it does render, at the training size.
        self.eval_task = cfg.task
        if cfg.agent.cameras:
            size = train_task.kwargs.get("image_size")
            if cfg.agent.image_size and size != cfg.agent.image_size:
                raise ConfigError(f"agent.image_size={cfg.agent.image_size} but reward {cfg.reward.kind!r} renders "
                                  f"the cameras at {size} px; set agent.image_size={size} or null")
            self.eval_task = task_for_agent(cfg.task, cfg.agent, size)
        try:
            self.envs = make_vector_env(cfg, train_task, cfg.intervention)
        except TypeError as err:  # e.g. a task without cameras asked for images
            raise ConfigError(f"task {cfg.task.env_id} cannot be made with {dict(train_task.kwargs)} "
                              f"(needed by reward {cfg.reward.kind!r}): {err}") from err
        try:
            self.eval_env = make_env(self.eval_task)
        except TypeError as err:  # a task without cameras, for a pixel agent
            raise ConfigError(f"task {cfg.task.env_id} cannot be made with {dict(self.eval_task.kwargs)} "
                              f"(agent.cameras={list(cfg.agent.cameras)}): {err}") from err
        # The policy's spec (in its checkpoint): state fields, plus the images of a pixel agent.
        self.spec: EmbodimentSpec = self.eval_env.unwrapped.embodiment
        self.reward_stream: RewardStream | None = None
        obs_dim, act_dim = self.spec.state_dim, self.spec.action.dim
        if self.envs.single_action_space.shape != (act_dim,):
            raise ValueError(f"env action space {self.envs.single_action_space.shape} != spec action dim {act_dim}")
        torch.manual_seed(cfg.seed)
        self.pixel_obs: PixelObs | None = None  # pixel agent: env obs -> {"state", "image_*"}
        if cfg.agent.cameras:
            try:
                self.pixel_obs = PixelObs(self.spec, cfg.agent.cameras, cfg.agent.state_fields)
            except ValueError as err:
                raise ConfigError(f"agent.cameras={list(cfg.agent.cameras)}: {err}") from err
            obs_dim = self.pixel_obs.state_dim
            self.agent = PixelSAC(self.pixel_obs.image_shapes, obs_dim, act_dim, cfg.agent, self.device)
        else:
            self.agent = SAC(obs_dim, act_dim, cfg.agent, self.device)
        self._agent_hp = self.agent.cfg  # plain attributes (no DictConfig lookups in the loop)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="env") if cfg.overlap_env_step else None
        if cfg.pin_cpus:
            _pin_cpus(self.envs)
        self.buffer = ReplayBuffer(cfg.agent.buffer_size, obs_dim, act_dim, cfg.num_envs, seed=cfg.seed,
                                   image_shapes=self.pixel_obs.image_shapes if self.pixel_obs else None)
        self.demo_buffer: ReplayBuffer | None = None
        if cfg.demos:
            from common.spec import SpecMismatchError

            try:
                self.demo_buffer, demo_info = load_demo_buffer(
                    cfg.demos, self.spec, self.reward_term, cfg.reward.scale, cfg.seed,
                    extra_capacity=cfg.intervention.demo_buffer_size if cfg.intervention.enabled else 0,
                    pixel_obs=self.pixel_obs, success_only=cfg.demos_success_only)
            except (FileNotFoundError, SpecMismatchError, ValueError) as err:
                raise ConfigError(f"demos={cfg.demos}: {err}") from err
            log.info("demonstrations: %s (%d%% of each batch)", demo_info, round(100 * cfg.demo_ratio))
        if cfg.obs_norm == "demos":  # a resumed run loads the same values back from its checkpoint
            states = torch.from_numpy(self.demo_buffer.obs[: len(self.demo_buffer)].reshape(-1, obs_dim))
            self.agent.set_obs_norm(states.mean(0), states.std(0))
        self.to_demos = bool(cfg.intervention.enabled and cfg.intervention.to_demos)
        if self.to_demos and self.reward_term is not None:
            raise ConfigError(f"intervention.to_demos=true needs the env's own reward (reward=task), not "
                              f"reward={cfg.reward.kind!r}: the demonstration side stores rewards when they happen; "
                              "set intervention.to_demos=false")
        if self.to_demos and self.demo_buffer is None:  # HIL-SERL: interventions fill the demonstration side
            self.demo_buffer = ReplayBuffer(cfg.intervention.demo_buffer_size, obs_dim, act_dim, 1, seed=cfg.seed + 7,
                                            image_shapes=self.pixel_obs.image_shapes if self.pixel_obs else None)
        self.bc_losses: list[float] = []
        if self.reward_term is not None:
            import rewards

            try:
                self.reward_term.bind(self.envs.get_attr("embodiment")[0])
            except rewards.RewardConfigError as err:
                raise ConfigError(str(err)) from err
            monitor = None
            if cfg.reward.monitor:
                from rewards.monitor import RewardMonitor

                try:
                    monitor = RewardMonitor.from_config(OmegaConf.to_container(cfg.reward.monitor_params))
                except rewards.RewardConfigError as err:
                    raise ConfigError(f"reward.monitor_params: {err}") from err
            self.reward_stream = RewardStream(self.reward_term, self.buffer, cfg.num_envs, cfg.reward.scale,
                                              cfg.reward.relabel_batch, cfg.reward.nonfinite, monitor)
        self.rng = np.random.default_rng(cfg.seed + 1)  # warm-up actions
        self.step = 0  # env steps so far (all envs)
        self.num_updates = 0
        self.episodes = 0
        self.rows: list[dict[str, Any]] = []  # every metrics row, also in metrics.jsonl
        self.resumed_from: int | None = None
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.resume_dir = self.run_dir / "resume"

    # ---- metrics ----------------------------------------------------------
    def record(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        outputs.append_jsonl(self.metrics_path, row)

    # ---- resumable state --------------------------------------------------
    def save_resume_state(self) -> None:
        if self.reward_stream is not None:  # held transitions go into the saved replay, scored
            self.reward_stream.flush()
        self.resume_dir.mkdir(exist_ok=True)
        replay_name = f"replay_{self.step}.npz"
        self.buffer.save(self.resume_dir / replay_name)  # replay first; state.pt names it, so a crash
        checkpoint.atomic_torch_save({  # between the two writes leaves the previous pair intact
            "format": RESUME_FORMAT, "step": self.step, "num_updates": self.num_updates,
            "episodes": self.episodes, "replay": replay_name, "agent": self.agent.state_dict(),
            "torch_rng": torch.get_rng_state(), "action_rng": repr(self.rng.bit_generator.state),
            "rows": self.rows, "config": OmegaConf.to_container(self.cfg, resolve=True),
            "reward_term": self.reward_term.state_dict() if self.reward_term is not None else {},
        }, self.resume_dir / "state.pt")
        for old in self.resume_dir.glob("replay_*.npz"):
            if old.name != replay_name:
                old.unlink(missing_ok=True)

    def try_resume(self) -> bool:
        path = self.resume_dir / "state.pt"
        if not (self.cfg.resume and path.exists()):
            if path.exists():
                raise ConfigError(f"run_dir {self.run_dir} already holds a run; set resume=true to continue it "
                                  "or choose another run_dir")
            return False
        import ast

        state = torch.load(path, map_location=self.device, weights_only=True)
        now = OmegaConf.to_container(self.cfg, resolve=True)
        changed = [k for k in RESUME_MUST_MATCH if _identity(state["config"], k) != _identity(now, k)]
        if changed:  # total_steps, eval/log/checkpoint settings, device... may change; these may not
            raise ConfigError(f"run_dir {self.run_dir} was started with different {', '.join(changed)}; "
                              "resume it with the same values (see its config.yaml) or choose another run_dir")
        self.agent.load_state_dict(state["agent"])
        if self.reward_term is not None:
            self.reward_term.load_state_dict(state.get("reward_term", {}))
        self.buffer.load(self.resume_dir / state["replay"])
        self.step, self.num_updates, self.episodes = state["step"], state["num_updates"], state["episodes"]
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = ast.literal_eval(state["action_rng"])
        self.rows = list(state["rows"])
        outputs.rewrite_jsonl(self.metrics_path, self.rows)  # drop rows logged after the saved step
        self.resumed_from = self.step
        log.info("resumed from %s at env step %d", path, self.step)
        return True

    def _add_demo_rows(self, rows: np.ndarray, obs: Any, action: np.ndarray, reward: np.ndarray, next_obs: Any,
                       term: np.ndarray) -> None:
        """Intervened transitions to the demonstration buffer too (HIL-SERL). Each is stored as
        truncated: consecutive rows there come from different moments and envs, so n-step
        returns must not run across them (truncation stops them and still bootstraps)."""
        for i in rows:
            sl = slice(i, i + 1)
            self.demo_buffer.add(_rows(obs, sl), action[sl], reward[sl].astype(np.float32), _rows(next_obs, sl),
                                 term[sl], np.ones(1, bool))

    # ---- observations -------------------------------------------------------
    def agent_obs(self, obs: dict[str, np.ndarray]) -> Any:
        """What the agent reads and the replay stores: the flat state vector, or for a pixel agent
        ``{"state": ..., "image_<cam>": uint8}`` (one observation or a batch)."""
        return self.pixel_obs(obs) if self.pixel_obs is not None else flatten_state(self.spec, obs)

    def _eval_input(self, obs: dict[str, np.ndarray]) -> Any:
        x = self.agent_obs(obs)
        return {k: v[None] for k, v in x.items()} if isinstance(x, dict) else x[None]

    def _obs_slice(self, t: dict[str, torch.Tensor], key: str, s: slice) -> Any:
        if self.pixel_obs is None:
            return t[key][s]
        return {"state": t[key][s], **{n: t[f"{key}_{n}"][s] for n in self.pixel_obs.image_names}}

    # ---- evaluation / checkpoints -----------------------------------------
    def policy_act(self, obs_flat: Any) -> np.ndarray:
        return self.agent.act(to_device(obs_flat, self.device), deterministic=True).cpu().numpy()

    def run_eval(self) -> dict[str, Any]:
        success, ret = evaluate(self.policy_act, self.eval_env, self.spec, self.cfg.eval_episodes,
                                seed=self.cfg.seed * 100_003 + 1_000_000, prepare=self._eval_input)
        row = {"step": self.step, "kind": "eval", "eval_success_rate": success, "eval_return": ret}
        self.record(row)
        return row

    def save_checkpoint(self, name: str) -> Path:
        path = self.run_dir / "checkpoints" / name
        checkpoint.save(path, self.agent, self.cfg, self.spec, self.step,
                        extra={"episodes": self.episodes, "num_updates": self.num_updates})
        return path

    # ---- main loop --------------------------------------------------------
    def train(self) -> dict[str, Any]:
        cfg, agent_cfg, E = self.cfg, self.cfg.agent, self.cfg.num_envs
        if not self.try_resume() and cfg.bc_steps and self.demo_buffer is not None:
            self.pretrain_bc(cfg.bc_steps)
            if agent_cfg.ibrl:  # the clone(s), frozen, become the second proposal (a resumed run loads it)
                self.agent.set_reference(self.pretrain_extra_clones(cfg.bc_steps, cfg.bc_ensemble - 1))
        OmegaConf.save(cfg, self.run_dir / "config.yaml", resolve=True)
        start_step, t0 = self.step, time.perf_counter()
        obs, _ = self.envs.reset(seed=cfg.seed + self.step)  # a resumed run starts fresh episodes
        obs_flat = self.agent_obs(obs)
        ep_ret, ep_len, ep_success = np.zeros(E), np.zeros(E, int), np.zeros(E, bool)
        ep_taken = np.zeros(E, int)  # env steps the scripted person ran this episode
        recent = deque((r["success"] for r in self.rows if r["kind"] == "episode"), maxlen=cfg.success_window)
        recent_ret = deque((r["episode_return"] for r in self.rows if r["kind"] == "episode"), maxlen=cfg.success_window)
        last_metrics: dict[str, torch.Tensor] = {}
        log_t, log_step = t0, self.step
        next_log = (self.step // cfg.log_every + 1) * cfg.log_every
        next_eval = (self.step // cfg.eval_every + 1) * cfg.eval_every if cfg.eval_every else None
        next_ckpt = (self.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every if cfg.checkpoint_every else None
        reward_scale, warmup, total, overlap = cfg.reward.scale, cfg.warmup_steps, cfg.total_steps, cfg.overlap_env_step
        B = agent_cfg.batch_size
        bar = tqdm(total=cfg.total_steps, initial=self.step, disable=not cfg.progress, unit="step",
                   dynamic_ncols=True, mininterval=1.0, desc=Path(str(cfg.task.env_id)).name)

        while self.step < total:
            # -- act and store ----------------------------------------------
            if self.step < warmup:
                action = self.warmup_action(obs_flat)
            else:
                action = self.agent.act(to_device(obs_flat, self.device)).cpu().numpy()
            # -- learn: utd critic updates per env step, actor after the last -------
            # With overlap_env_step the update runs while a worker thread steps the env (torch and
            # MuJoCo release the GIL); the same policy picked the action, only the newest transition
            # joins the buffer one update later.
            if overlap and self.step + E >= warmup and len(self.buffer) >= B:
                pending = self._pool.submit(self.envs.step, action)
                self.learn(E, last_metrics)
                next_obs, reward, term, trunc, info = pending.result()
            else:
                next_obs, reward, term, trunc, info = self.envs.step(action)
            next_flat = self.agent_obs(next_obs)
            done = term | trunc
            real_next = next_flat
            success_now = np.asarray(info.get("success", np.zeros(E, bool)), bool)
            stream = self.reward_stream
            progress = np.asarray(info["progress"], np.float32) if stream is not None and "progress" in info else None
            real_next_obs = next_obs
            if done.any():  # SAME_STEP autoreset: next_obs holds reset obs; the true s' is in final_obs
                real_next = _copy(next_flat)
                if stream is not None:
                    real_next_obs = {k: np.array(v) for k, v in next_obs.items()}
                for i in np.flatnonzero(done):
                    _set_row(real_next, i, self.agent_obs(info["final_obs"][i]))
                    success_now[i] = bool(info["final_info"].get("success", np.zeros(E, bool))[i])
                    if stream is not None:
                        for k in real_next_obs:
                            real_next_obs[k][i] = info["final_obs"][i][k]
                        if progress is not None and "progress" in info["final_info"]:
                            progress[i] = info["final_info"]["progress"][i]
            if cfg.intervention.enabled:  # store what ran, not what the policy asked
                action, taken = _executed(action, info, done)
                ep_taken += taken
                if self.to_demos and taken.any():
                    self._add_demo_rows(np.flatnonzero(taken), obs_flat, action, reward * reward_scale, real_next, term)
            if stream is None:
                self.buffer.add(obs_flat, action, reward * reward_scale, real_next, term, trunc)
            else:  # scored by the reward term now, or with the rest of its batch (episode end flushes)
                stream.add(step_transitions(obs, action, real_next_obs, reward, success_now, progress, ep_len),
                           obs_flat, real_next, term, trunc)
            obs, obs_flat = next_obs, next_flat
            ep_ret += reward
            ep_len += 1
            ep_success |= success_now
            self.step += E
            for i in np.flatnonzero(done):
                self.episodes += 1
                row = {"step": self.step, "kind": "episode", "episode_return": float(ep_ret[i]),
                       "episode_length": int(ep_len[i]), "success": bool(ep_success[i])}
                if cfg.intervention.enabled:
                    row["intervention_steps"] = int(ep_taken[i])
                    ep_taken[i] = 0
                if stream is not None:  # the trained reward's return and components (episode_return: the task's)
                    row.update(stream.end_episode(i))
                self.record(row)
                recent.append(bool(ep_success[i]))
                recent_ret.append(float(ep_ret[i]))
                ep_ret[i], ep_len[i], ep_success[i] = 0.0, 0, False
            bar.update(E)

            if not overlap and self.step >= warmup and len(self.buffer) >= B:
                self.learn(E, last_metrics)

            # -- log / evaluate / checkpoint ---------------------------------
            if self.step >= next_log:
                log_every = cfg.log_every
                now = time.perf_counter()
                sps = (self.step - log_step) / max(now - log_t, 1e-9)
                log_t, log_step, next_log = now, self.step, next_log + log_every
                row = {"step": self.step, "kind": "train", "steps_per_s": sps, "wall_time": now - t0}
                row.update({k: float(v) for k, v in last_metrics.items()})
                if self.reward_stream is not None and self.reward_stream.monitor is not None:
                    m = self.reward_stream.monitor.summary()
                    row.update({f"monitor/{k}": m[k] for k in ("flag_rate", "flagged", "transitions")})
                    row.update({f"monitor/{k}": v for k, v in m.items() if k.startswith("rate/")})
                self.record(row)
                bar.set_postfix(success=f"{np.mean(recent) if recent else 0:.2f}",
                                ret=f"{np.mean(recent_ret) if recent_ret else 0:.1f}", sps=f"{sps:.0f}", refresh=False)
            if next_eval is not None and self.step >= next_eval:
                next_eval += cfg.eval_every
                ev = self.run_eval()
                bar.write(f"step {self.step}: eval success {ev['eval_success_rate']:.2f}, return {ev['eval_return']:.2f}")
            if next_ckpt is not None and self.step >= next_ckpt:
                next_ckpt += cfg.checkpoint_every
                self.save_checkpoint(f"step_{self.step}.pt")
                self.save_resume_state()
        bar.close()
        wall = time.perf_counter() - t0

        # -- the end: final eval, checkpoint, resumable state, pictures ----------
        evals = [r for r in self.rows if r["kind"] == "eval"]
        final = evals[-1] if evals and evals[-1]["step"] == self.step else self.run_eval()
        final_ckpt = self.save_checkpoint("final.pt")
        if self.resumed_from != self.step:
            self.save_resume_state()
        self.write_reports()
        video = self.write_video() if cfg.video and cfg.video_episodes > 0 else None
        trained = self.step - start_step
        result = {
            "run_dir": str(self.run_dir), "env_steps": self.step, "episodes": self.episodes,
            "final_eval_success": final["eval_success_rate"], "final_eval_return": final["eval_return"],
            "train_returns": [r["episode_return"] for r in self.rows if r["kind"] == "episode"],
            "eval_curve": [(r["step"], r["eval_success_rate"], r["eval_return"]) for r in self.rows if r["kind"] == "eval"],
            "wall_time_s": wall, "steps_per_s": trained / wall if wall > 0 else 0.0,
            "resumed_from": self.resumed_from, "checkpoint": str(final_ckpt), "video": str(video) if video else None,
        }
        summary = {k: v for k, v in result.items() if k != "train_returns"}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info("done: %d env steps, final eval success %.2f, return %.2f, %.0f steps/s, run dir %s",
                 self.step, result["final_eval_success"], result["final_eval_return"], result["steps_per_s"], self.run_dir)
        return result

    def warmup_action(self, obs_flat: Any) -> np.ndarray:
        """An action for the warm-up steps: uniform, or the actor's deterministic action plus noise."""
        E, dim = self.cfg.num_envs, self.spec.action.dim
        if self.cfg.warmup_actions == "random":
            return self.rng.uniform(-1.0, 1.0, (E, dim)).astype(np.float32)
        action = self.agent.act(to_device(obs_flat, self.device), deterministic=True).cpu().numpy()
        action = action + self.cfg.warmup_noise * self.rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def pretrain_bc(self, steps: int) -> None:
        """Behaviour cloning on the demonstrations before RL (the actor starts near the demonstrator)."""
        B = self._agent_hp.batch_size
        for k in tqdm(range(steps), desc="BC pretraining", disable=not self.cfg.progress, unit="step"):
            obs, act = self._demo_batch(B)
            loss = self.agent.bc_update(obs, act, self.cfg.bc_loss)
            if k % 100 == 0 or k == steps - 1:
                self.bc_losses.append(float(loss))
        # Fresh Adam moments for RL: after cloning converges the second-moment estimates are tiny, so
        # the first (much larger) RL gradients would take steps far above the learning rate and undo
        # the cloning in one update (measured: 0.7 -> 0.1 evaluation success on pick-and-place).
        self.agent.optimizer.state.clear()
        self.record({"step": 0, "kind": "bc", "bc_steps": steps, "bc_loss": self.bc_losses[-1]})

    def _demo_batch(self, size: int) -> tuple[Any, torch.Tensor]:
        """(observations, actions) of ``size`` demo transitions on the device, for cloning."""
        t = {k: torch.from_numpy(v).to(self.device) for k, v in self.demo_buffer.sample(size).items()}
        return self._obs_slice(t, "obs", slice(None)), t["action"]

    def pretrain_extra_clones(self, steps: int, count: int) -> list[TanhGaussianActor]:
        """``count`` more clones of the demos beside the actor (``bc_ensemble`` - 1), each from its
        own initialisation and batches, ``steps`` steps each; IBRL's proposal is then the mean of
        all of them (networks.CloneEnsemble says why)."""
        clones, B = [], self._agent_hp.batch_size
        for i in range(count):
            net, opt = self.agent.new_clone()
            for _ in tqdm(range(steps), desc=f"BC clone {i + 2}/{count + 1}", disable=not self.cfg.progress, unit="step"):
                loss = bc_loss(net, *self._demo_batch(B), self.cfg.bc_loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            clones.append(net)
            self.record({"step": 0, "kind": "bc", "bc_steps": steps, "bc_loss": float(loss.detach()), "clone": i + 1})
        return clones

    def learn(self, num_env_steps: int, metrics: dict[str, torch.Tensor]) -> None:
        """``utd`` critic updates per env step (one sampled batch of utd x B split in B-sized
        minibatches, as RLPD), the actor and temperature after the last of them."""
        a = self._agent_hp
        for _ in range(num_env_steps):
            batch = mixed_sample(self.buffer, self.demo_buffer, a.batch_size, a.utd, self.cfg.demo_ratio,
                                 a.n_step, a.gamma)
            t = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
            self.num_updates += 1
            demo_rows = demo_rows_in(self.demo_buffer, a.batch_size, self.cfg.demo_ratio)
            actor_turn = (self.num_updates > self.cfg.actor_freeze_steps
                          and self.num_updates % a.actor_update_every == 0)
            if actor_turn and self.cfg.actor_lr_warmup:
                self._ramp_actor_lr()
            for j in range(a.utd):
                s = slice(j * a.batch_size, (j + 1) * a.batch_size)
                metrics.update(self.agent.update(self._obs_slice(t, "obs", s), t["action"][s], t["reward"][s],
                                                 self._obs_slice(t, "next_obs", s), t["discount"][s],
                                                 update_actor=actor_turn and j == a.utd - 1, demo_rows=demo_rows))

    def _ramp_actor_lr(self) -> None:
        """Actor learning rate = its value x min(1, k / actor_lr_warmup) on the k-th actor update.
        Why: Adam with fresh moments (pretrain_bc clears them) moves every weight by about the
        learning rate on its first steps, whatever the gradient's size, and the first critics'
        gradients are noise; a cloned grasp does not survive that (pick-and-place, 10 seeded
        episodes: 0.9 after cloning, 0.6 after the first update)."""
        k = (self.num_updates - self.cfg.actor_freeze_steps) // self._agent_hp.actor_update_every
        group = self.agent.optimizer.param_groups[1]  # SAC: critic, actor, temperature
        base = group.setdefault("base_lr", group["lr"])
        group["lr"] = base * min(1.0, k / self.cfg.actor_lr_warmup)

    def write_reports(self) -> None:
        outputs.write_csv(self.run_dir / "metrics.csv", self.rows)
        outputs.plot_learning_curve(self.run_dir / "learning_curve.png", self.rows,
                                    title=f"{self.spec.name} seed {self.cfg.seed}", window=self.cfg.success_window)

    def write_video(self) -> Path | None:
        try:
            env = make_env(self.eval_task, render_mode="rgb_array")
            frames: list[np.ndarray] = []
            evaluate(self.policy_act, env, self.spec, self.cfg.video_episodes, seed=self.cfg.seed + 2_000_000,
                     frames=frames, prepare=self._eval_input)
            env.close()
            fps = self.cfg.video_fps or self.spec.control_hz
            return outputs.write_video(self.run_dir / "eval_video", [f for f in frames if f is not None], fps)
        except Exception as err:  # noqa: BLE001 - a renderer problem must not lose a finished run
            log.warning("could not write the evaluation video: %s", err)
            return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self.envs.close()
        self.eval_env.close()


def _pin_cpus(envs: gym.vector.VectorEnv) -> None:
    """This process on the first allowed CPU, async env workers on the others (all on it if it is the only one)."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[:1])
    for proc in getattr(envs, "processes", []):
        os.sched_setaffinity(proc.pid, cpus[1:] or cpus)
    log.info("pinned the learner to CPU %d and %d env worker(s) to %s", cpus[0],
             len(getattr(envs, "processes", [])), cpus[1:] or cpus)


def _executed(action: np.ndarray, info: dict[str, Any], done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The actions the envs ran and which envs the scripted person drove this step (vector-env
    info of sim/intervention.py; an env that just ended reports them in ``final_info``)."""
    action, taken = action.copy(), np.zeros(len(action), bool)
    for src, rows in ((info, np.flatnonzero(~done)), (info.get("final_info", {}), np.flatnonzero(done))):
        if "intervention" not in src:
            continue
        present = np.asarray(src.get("_intervention", np.ones(len(action), bool)), bool)
        for i in rows:
            if present[i]:
                taken[i] = bool(src["intervention"][i])
                action[i] = src["executed_action"][i]
    return action, taken


def _rows(x: Any, sl: slice) -> Any:
    """Rows ``sl`` of a batch: an array, or each array of a dict (pixel observations)."""
    return {k: v[sl] for k, v in x.items()} if isinstance(x, dict) else x[sl]


def _copy(x: Any) -> Any:
    return {k: v.copy() for k, v in x.items()} if isinstance(x, dict) else x.copy()


def _set_row(x: Any, i: int, value: Any) -> None:
    """Row ``i`` of a batch (an array, or each array of a dict) <- one observation."""
    if isinstance(x, dict):
        for k, v in value.items():
            x[k][i] = v
    else:
        x[i] = value


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train with ``cfg`` (see :func:`compose`); returns final eval success/return, wall time, steps/s, paths."""
    validate(cfg)
    trainer = Trainer(cfg)
    try:
        return trainer.train()
    finally:
        trainer.close()


# ---------------------------------------------------------------------------
# command line


def _app(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """Console entry point ``rewardforge-train``: Hydra overrides on the command line."""
    hydra_command(CONFIG_DIR, "train", _app, check_overrides, (ConfigError,))


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    main()
