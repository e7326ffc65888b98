"""Search for a reward program with an LLM, scoring candidates by short SAC fine-tunes.

``rewardforge-reward-search`` (``policies.reward_search:main``; Hydra config
``configs/reward_search.yaml``)::

    uv run rewardforge-reward-search train_task=panda_reach llm.base_url=http://127.0.0.1:8000/v1 llm.model=m \\
        llm.samples=4 rounds=3 finetune.env_steps=2000 full_run.enabled=true

The loop is ``rewards.code.generate.run_loop`` (generate -> static + execution checks ->
score -> refine -> store); this module adds what needs the training code, which ``rewards/``
may not import:

**Cheap candidate scoring** (:class:`FinetuneScorer`, handed to ``run_loop(scorer=...)``).
Eureka paid one full RL run per candidate. Here every candidate that passed the checks starts
from one *shared start*, built once per search:

* the shared replay buffer: rollouts of the scripted expert, noisy experts and random actions
  (``finetune.start_episodes`` each) in the training env;
* the shared agent: SAC whose actor was behaviour-cloned on the expert's rollouts
  (``finetune.bc_steps``; ``finetune.start=scratch``: untrained, for tasks without an expert).

Why this start: it is *reward-neutral*. A start trained by RL on the task's dense reward (or on
the first passing candidate) would already encode that reward's preferences, so candidates that
resemble it would look better, and a task that needs a generated reward usually has no good
dense reward to start from. Expert data also puts states near success into the buffer from the
first gradient step, so what a candidate pays near the goal is exercised, which a short run from
random play would rarely reach. It costs a few scripted episodes and a few hundred BC steps, once.

Per candidate (:meth:`FinetuneScorer.finetune`): a ``policies.train.Trainer`` with
``reward=code`` on the candidate, whose replay buffer is filled with the shared buffer
*relabelled by the candidate* (one batched sandbox call per ``finetune.relabel_chunk``
transitions) and whose agent is a copy of the shared agent; then ``finetune.critic_steps``
critic-only gradient steps (the fresh critic learns the candidate's values before the actor
follows it), ``finetune.offline_steps`` joint steps on the relabelled buffer, and
``finetune.env_steps`` online steps of the ordinary training loop (which logs the candidate's
per-episode terms). Finally ``finetune.eval_episodes`` deterministic episodes on fixed reset
seeds, the same for every candidate, judged by the env's own success flag and ground-truth
progress::

    score = (success_rate + late progress + approach) / 3                  in [-1/3, 1]

(late progress: mean ground-truth progress over the second half of each episode; approach: how
much closer to the goal the thing that must get there ended, 1 - d_final / d_start clipped to
[-1, 1], which unlike the clipped progress separates standing still from running away).

The candidate's reflection text (training statistics of the fine-tune, Eureka-style, and the
failed evaluation episodes, Auto MC-Reward's analyser) goes into the next round's prompt.

**Full run** (``full_run.enabled``, on by default): the task's whole budget on the best
program; its reflection (statistics over the full run, failed evaluation episodes) is stored
with the program (``training_reflection``), so ``parent=<id>`` refines from it.

**Cost**: env steps, gradient steps and seconds per fine-tuned candidate against the full run
(measured when it ran, else the budget at the fine-tunes' online steps/s, marked extrapolated).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from common.cli import hydra_command, output_dir
from common.spec import EmbodimentSpec, flatten_state
from policies.config import CONFIG_DIR, ConfigError
from rewards.base import Transitions
from rewards.code.checks import CheckSettings
from rewards.code.generate import Candidate, GenConfig, LoopResult, ScoreResult, run_loop
from rewards.code.reflect import ReflectionSettings, read_metrics, training_reflection
from rewards.code.sandbox import SandboxLimits
from rewards.code.store import ProgramStore
from rewards.code.trajectory import AnalyserSettings, analyse_failures
from rewards.code.view import TaskView

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# the config schema (configs/reward_search.yaml documents every key)


@dataclass
class LLMSettings:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o"
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = 0.8
    max_tokens: int | None = 1024
    samples: int = 4
    retries: int = 2
    timeout_s: float = 120.0
    backoff_s: float = 1.0


@dataclass
class RolloutSettings:
    episodes: int = 2
    noise: list[float] = field(default_factory=lambda: [0.3])


@dataclass
class FinetuneSettings:
    enabled: bool = True
    start: str = "expert"
    start_episodes: int = 5
    start_noise: list[float] = field(default_factory=lambda: [0.3])
    start_random: bool = True
    bc_steps: int = 1000
    critic_steps: int = 1000
    offline_steps: int = 500
    env_steps: int = 1000
    eval_episodes: int = 5
    top_k: int | None = None
    relabel_chunk: int = 4096
    overrides: list[str] = field(default_factory=lambda: ["agent.actor_lr=0.0001", "agent.init_alpha=0.05"])


@dataclass
class FullRunSettings:
    enabled: bool = True
    total_steps: int | None = None
    eval_episodes: int = 10
    overrides: list[str] = field(default_factory=list)


@dataclass
class AnalysisSettings:
    windows: int = 5
    flat_fraction: float = 0.05
    dominant_share: float = 0.7
    near_m: float = 0.04
    moved_m: float = 0.01
    goal_m: float = 0.03
    max_episodes: int = 3


@dataclass
class SearchConfig:
    train_task: str = "panda_reach"
    task_text: str | None = None
    train_overrides: list[str] = field(default_factory=list)
    store: str | None = None
    output_dir: str | None = None
    parent: str | None = None
    feedback: str | None = None
    feedback_file: str | None = None
    examples: list[str] = field(default_factory=list)
    seed: int = 0
    rounds: int = 2
    progress: bool = False
    llm: LLMSettings = field(default_factory=LLMSettings)
    rollouts: RolloutSettings = field(default_factory=RolloutSettings)
    checks: CheckSettings = field(default_factory=CheckSettings)  # the checks' own dataclass is the schema
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    full_run: FullRunSettings = field(default_factory=FullRunSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)


ConfigStore.instance().store(name="reward_search_schema", node=SearchConfig)
OmegaConf.register_new_resolver("rf_or", lambda a, b: b if a is None else a, replace=True)


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"invalid config value {key}={value!r}: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Ranges and choices; raises ConfigError naming the key and what is allowed."""
    for key in ("rounds", "llm.samples", "rollouts.episodes", "finetune.env_steps", "finetune.eval_episodes",
                "finetune.relabel_chunk", "full_run.eval_episodes", "analysis.windows", "analysis.max_episodes"):
        if OmegaConf.select(cfg, key) < 1:
            _fail(key, OmegaConf.select(cfg, key), "must be an integer >= 1")
    for key in ("llm.retries", "finetune.start_episodes", "finetune.bc_steps", "finetune.critic_steps",
                "finetune.offline_steps"):
        if OmegaConf.select(cfg, key) < 0:
            _fail(key, OmegaConf.select(cfg, key), "must be >= 0")
    if cfg.finetune.start not in ("expert", "scratch"):
        _fail("finetune.start", cfg.finetune.start, "allowed values: expert (BC on scripted-expert rollouts), scratch")
    if cfg.finetune.top_k is not None and cfg.finetune.top_k < 1:
        _fail("finetune.top_k", cfg.finetune.top_k, "must be >= 1 or null (all passing candidates)")
    if cfg.full_run.total_steps is not None and cfg.full_run.total_steps < 1:
        _fail("full_run.total_steps", cfg.full_run.total_steps, "must be >= 1 or null (the task's budget)")
    if not 0.0 <= cfg.llm.temperature <= 2.0:
        _fail("llm.temperature", cfg.llm.temperature, "must be in [0, 2]")
    if any(not s > 0 for s in list(cfg.rollouts.noise) + list(cfg.finetune.start_noise)):
        _fail("rollouts.noise / finetune.start_noise", [*cfg.rollouts.noise, *cfg.finetune.start_noise],
              "noise levels must be > 0 ([] for none)")
    if cfg.feedback_file is not None and not Path(cfg.feedback_file).is_file():
        _fail("feedback_file", cfg.feedback_file, "must be an existing file with a person's written feedback")
    for p in cfg.examples:
        if not Path(p).is_file():
            _fail("examples", p, "each entry must be an existing .py file (a hand-written example program)")
    try:
        SandboxLimits.from_config(OmegaConf.to_container(cfg.sandbox), where="sandbox")
    except ValueError as err:
        raise ConfigError(str(err)) from err


def check_overrides(overrides: Sequence[str]) -> None:
    """Unknown ``key=value`` overrides fail with the nearest valid key."""
    from common.cli import check_overrides as check

    check(overrides, OmegaConf.structured(SearchConfig), (), (), ConfigError)


def compose(overrides: Sequence[str] = (), config_name: str = "reward_search") -> DictConfig:
    """The command's config built in code: ``compose(["train_task=panda_reach", "rounds=1"])``."""
    from common.cli import compose as hydra_compose

    check_overrides(overrides)
    cfg = hydra_compose(CONFIG_DIR, config_name, overrides)
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------
# training configs for the fine-tunes and the full run


def _merge_overrides(*groups: Sequence[str]) -> list[str]:
    """Later groups win per key (Hydra refuses the same key twice on one command line)."""
    out: dict[str, str] = {}
    for g in groups:
        for o in g:
            out[str(o).split("=", 1)[0]] = str(o)
    return list(out.values())


def train_config(cfg: DictConfig, extra: Sequence[str] = (), fixed: Sequence[str] = ()) -> DictConfig:
    """A training config for ``cfg.train_task`` with the search's train_overrides, then ``extra`` (the
    user's per-phase overrides), then ``fixed`` (what the phase needs)."""
    from policies.config import compose as train_compose

    overrides = _merge_overrides([f"task={cfg.train_task}"], list(cfg.train_overrides), list(extra), list(fixed))
    try:
        return train_compose(overrides)
    except ConfigError:
        raise
    except Exception as err:  # Hydra's missing group option etc.
        tasks = sorted(p.stem for p in (Path(CONFIG_DIR) / "task").glob("*.yaml"))
        raise ConfigError(f"cannot compose the training config for train_task={cfg.train_task!r} with {overrides}: {err} "
                          f"(train_task must be one of {tasks})") from err


def code_reward_overrides(cfg: DictConfig, store: ProgramStore, program: str) -> list[str]:
    sb = OmegaConf.to_container(cfg.sandbox)
    out = ["reward=code", f"reward.params.program={program}", f"reward.params.store={store.root}"]
    out += [f"reward.params.sandbox.{k}={v}" for k, v in sb.items()]
    if cfg.task_text is not None:
        out.append(f"reward.params.task_text={json.dumps(cfg.task_text)}")
    return out


# ---------------------------------------------------------------------------
# the shared start


@dataclass
class SharedStart:
    """The shared replay data (dict observations, as the sandbox reads them) and agent state."""

    spec: EmbodimentSpec
    obs: dict[str, np.ndarray]
    action: np.ndarray
    next_obs: dict[str, np.ndarray]
    terminated: np.ndarray
    truncated: np.ndarray
    agent_state: dict[str, Any]
    cost: dict[str, Any]

    def __len__(self) -> int:
        return len(self.action)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def collect_episodes(train_cfg: DictConfig, episodes: int, noise: Sequence[float], random: bool, expert: bool,
                     seed: int) -> tuple[list[Any], EmbodimentSpec, int]:
    """Rollouts (rewards.evaluate episodes) in the training env; also its episode step limit."""
    from policies.train import make_env
    from rewards.evaluate import collect, make_policies

    env = make_env(train_cfg.task)
    try:
        pols = make_policies(env, expert=expert, noise=tuple(noise), random=random, seed=seed)
        eps = collect(env, pols, episodes, seed=seed, progress=False)
        limit = env.spec.max_episode_steps if env.spec is not None else None
        return eps, env.unwrapped.embodiment, int(limit or 0)
    finally:
        env.close()


def build_shared_start(train_cfg: DictConfig, kind: str, episodes: int, noise: Sequence[float], random: bool,
                       bc_steps: int, seed: int) -> SharedStart:
    """Roll out the shared buffer and (``kind=expert``) behaviour-clone the shared agent on the
    expert's part of it. See the module doc for why this start."""
    from policies.sac import SAC

    t0 = time.perf_counter()
    eps, spec, limit = collect_episodes(train_cfg, episodes, noise, random, expert=kind == "expert", seed=seed)
    t_roll = time.perf_counter() - t0
    if not eps:
        raise ConfigError("finetune.start_episodes=0 and no random rollouts: the shared buffer would be empty")
    batch = Transitions.concat([e.batch for e in eps])
    n = len(batch)
    term, trunc = np.zeros(n, bool), np.zeros(n, bool)
    end = np.cumsum([len(e.batch) for e in eps]) - 1
    # The rollouts do not log `terminated`: an episode shorter than the step limit ended by termination.
    short = np.array([len(e.batch) < limit for e in eps]) if limit else np.zeros(len(eps), bool)
    term[end[short]], trunc[end[~short]] = True, True
    torch.manual_seed(seed)
    torch.set_num_threads(int(train_cfg.torch_threads))  # as the trainer does: extra threads only contend
    device = _device(train_cfg.device)
    agent = SAC(spec.state_dim, spec.action.dim, train_cfg.agent, device)
    t1 = time.perf_counter()
    steps = 0
    expert = [e for e in eps if e.policy == "expert"]
    if kind == "expert" and bc_steps and expert:
        eb = Transitions.concat([e.batch for e in expert])
        x = torch.from_numpy(flatten_state(spec, eb.obs)).to(device)
        a = torch.from_numpy(np.asarray(eb.action, np.float32)).to(device)
        rng = np.random.default_rng(seed)
        bs = min(int(train_cfg.agent.batch_size), len(a))
        for _ in range(bc_steps):
            idx = torch.from_numpy(rng.integers(0, len(a), bs)).to(device)
            agent.bc_update(x[idx], a[idx])
            steps += 1
    state = copy.deepcopy(agent.state_dict())
    cost = {"env_steps": int(n), "gradient_steps": steps, "rollout_seconds": t_roll,
            "bc_seconds": time.perf_counter() - t1, "seconds": time.perf_counter() - t0, "episodes": len(eps),
            "kind": kind}
    log.info("shared start (%s): %d transitions from %d episodes, %d BC steps, %.1f s", kind, n, len(eps), steps,
             cost["seconds"])
    return SharedStart(spec, batch.obs, np.asarray(batch.action, np.float32), batch.next_obs, term, trunc, state, cost)


# ---------------------------------------------------------------------------
# evaluation episodes (env success + progress + states for the analyser)


def eval_episodes(env: Any, act: Any, n: int, seed: int) -> list[Any]:
    """``n`` deterministic episodes from reset seeds seed, seed+1, ... (``act``: obs dict -> action)."""
    from rewards.evaluate import rollout

    return [rollout(env, act, seed + i, "policy") for i in range(n)]


def eval_summary(episodes: Sequence[Any], view: TaskView | None = None) -> dict[str, float]:
    """Success rate, progress and the score of evaluation episodes::

        late     = mean ground-truth progress over the second half of each episode
        approach = mean over episodes of clip(1 - d_final / d_start, -1, 1)
        score    = (success_rate + late + approach) / 3                       in [-1/3, 1]

    ``d`` is the distance to the goal of what must get there (the object, the handle, or for
    reach the pinch point), from the task view. Progress is clipped at 0, so it cannot tell a
    policy that stayed put from one that ran away; ``approach`` can, which matters when short
    fine-tunes reach no success yet."""
    from rewards.code.trajectory import summarise_episode

    succ = float(np.mean([e.success for e in episodes]))
    has = [e for e in episodes if e.batch.progress is not None]
    final = float(np.mean([e.batch.progress[-1] for e in has])) if has else 0.0
    late = float(np.mean([np.mean(e.batch.progress[len(e.batch) // 2:]) for e in has])) if has else 0.0
    ratios = []
    for e in episodes:
        sm = summarise_episode(e, view)
        if sm.get("start_goal_m"):
            ratios.append(float(np.clip(1.0 - sm["final_goal_m"] / max(sm["start_goal_m"], 1e-6), -1.0, 1.0)))
    approach = float(np.mean(ratios)) if ratios else 0.0
    return {"success_rate": succ, "final_progress": final, "late_progress": late, "approach": approach,
            "score": (succ + late + approach) / 3.0, "eval_env_steps": int(sum(len(e.batch) for e in episodes))}


# ---------------------------------------------------------------------------
# the scorer


class FinetuneScorer:
    """``run_loop(scorer=...)``: short SAC fine-tunes from the shared start (module doc)."""

    def __init__(self, cfg: DictConfig, store: ProgramStore, out_dir: Path) -> None:
        self.cfg, self.store, self.out_dir = cfg, store, Path(out_dir)
        self.ft = cfg.finetune
        self.start: SharedStart | None = None
        self.eval_seed = 50_000 + int(cfg.seed) * 1000  # the same reset seeds for every candidate
        self.results: dict[str, ScoreResult] = {}

    def train_cfg(self, program: str | None) -> DictConfig:
        fixed = ["num_envs=1", "warmup_steps=0", f"total_steps={self.ft.env_steps}", "eval_every=0",
                 "eval_episodes=1", "checkpoint_every=0", "video=false", f"progress={str(self.cfg.progress).lower()}",
                 "resume=false", f"seed={self.cfg.seed}", f"log_every={max(1, self.ft.env_steps // 4)}"]
        if program is not None:
            fixed += code_reward_overrides(self.cfg, self.store, program)
            fixed.append(f"run_dir={self.out_dir / 'finetune' / program}")
        return train_config(self.cfg, list(self.ft.overrides), fixed)

    def shared_start(self) -> SharedStart:
        if self.start is None:
            ft = self.ft
            self.start = build_shared_start(self.train_cfg(None), ft.start, ft.start_episodes, list(ft.start_noise),
                                            ft.start_random, ft.bc_steps, int(self.cfg.seed) + 7)
        return self.start

    def __call__(self, candidates: Sequence[Candidate], view: TaskView) -> dict[str, ScoreResult]:
        chosen = sorted(candidates, key=lambda c: c.score if c.score is not None else -9.0, reverse=True)
        if self.ft.top_k is not None:
            chosen = chosen[: self.ft.top_k]
        out = {}
        for c in chosen:
            out[c.id] = self.results[c.id] = self.finetune(c.id, view)
        return out

    def finetune(self, program: str, view: TaskView) -> ScoreResult:
        """Relabel the shared buffer with ``program``, fine-tune a copy of the shared agent, evaluate."""
        from policies.train import Trainer

        start = self.shared_start()
        ft = self.ft
        t0 = time.perf_counter()
        cfg = self.train_cfg(program)
        trainer = Trainer(cfg)
        try:
            term = trainer.reward_term
            t1 = time.perf_counter()
            reward = np.concatenate([
                np.asarray(term(Transitions(obs={k: v[i:i + ft.relabel_chunk] for k, v in start.obs.items()},
                                            action=start.action[i:i + ft.relabel_chunk],
                                            next_obs={k: v[i:i + ft.relabel_chunk] for k, v in start.next_obs.items()}
                                            )).reward, np.float64)
                for i in range(0, len(start), ft.relabel_chunk)])
            relabel_s = time.perf_counter() - t1
            if not np.all(np.isfinite(reward)):
                bad = int(np.sum(~np.isfinite(reward)))
                return ScoreResult(-1.0, f"Relabelling the shared buffer gave {bad} non-finite rewards.",
                                   {"error": "non-finite rewards"}, {"seconds": time.perf_counter() - t0})
            reward = (reward * float(cfg.reward.scale)).astype(np.float32)
            obs_flat = flatten_state(start.spec, start.obs)
            next_flat = flatten_state(start.spec, start.next_obs)
            for i in range(len(start)):
                trainer.buffer.add(obs_flat[i:i + 1], start.action[i:i + 1], reward[i:i + 1], next_flat[i:i + 1],
                                   start.terminated[i:i + 1], start.truncated[i:i + 1])
            trainer.agent.load_state_dict(copy.deepcopy(start.agent_state))
            # offline: critic first (a fresh critic would steer the cloned actor at random), then both
            a = cfg.agent
            t2 = time.perf_counter()
            for k in range(ft.critic_steps + ft.offline_steps):
                b = trainer.buffer.sample(int(a.batch_size), int(a.n_step), float(a.gamma))
                t = {key: torch.from_numpy(v).to(trainer.device) for key, v in b.items()}
                trainer.agent.update(t["obs"], t["action"], t["reward"], t["next_obs"], t["discount"],
                                     update_actor=k >= ft.critic_steps)
            offline_s = time.perf_counter() - t2
            result = trainer.train()
            online_grad = trainer.num_updates * int(a.utd)
            episodes = eval_episodes(trainer.eval_env, lambda o: trainer.policy_act(flatten_state(trainer.spec, o)[None])[0],
                                     ft.eval_episodes, self.eval_seed)
            rows = list(trainer.rows)
        finally:
            trainer.close()
        ev = eval_summary(episodes, view)
        a_cfg = self.cfg.analysis
        refl = training_reflection(rows, ReflectionSettings(a_cfg.windows, a_cfg.flat_fraction, a_cfg.dominant_share),
                                   title=f"short fine-tune ({ft.env_steps} env steps from the shared start)")
        fails = analyse_failures(episodes, view, AnalyserSettings(a_cfg.near_m, a_cfg.moved_m, a_cfg.goal_m,
                                                                  a_cfg.max_episodes))
        feedback = (f"A short SAC fine-tune on this reward reached evaluation success {ev['success_rate']:.2f} and mean "
                    f"final ground-truth progress {ev['final_progress']:.2f} over {len(episodes)} episodes.\n"
                    f"{refl}\n{fails}")
        seconds = time.perf_counter() - t0
        cost = {"env_steps": int(result["env_steps"]) + ev["eval_env_steps"] + int(cfg.eval_episodes) * int(
                    max(len(e.batch) for e in episodes)),
                "online_env_steps": int(result["env_steps"]), "eval_env_steps": ev["eval_env_steps"],
                "gradient_steps": ft.critic_steps + ft.offline_steps + online_grad,
                "offline_gradient_steps": ft.critic_steps + ft.offline_steps, "online_gradient_steps": online_grad,
                "seconds": seconds, "relabel_seconds": relabel_s, "offline_seconds": offline_s,
                "online_seconds": float(result["wall_time_s"]), "online_steps_per_s": float(result["steps_per_s"]),
                "relabelled_transitions": len(start)}
        details = {**ev, "run_dir": result["run_dir"], "trainer_eval_success": result["final_eval_success"]}
        log.info("fine-tune %s: success %.2f, final progress %.2f, score %.3f, %.1f s", program, ev["success_rate"],
                 ev["final_progress"], ev["score"], seconds)
        return ScoreResult(ev["score"], feedback, details, cost)


# ---------------------------------------------------------------------------
# the full run on the best program


def full_run(cfg: DictConfig, store: ProgramStore, program: str, view: TaskView, out_dir: Path) -> dict[str, Any]:
    """The task's whole budget on ``program``; reflection + failed-episode analysis stored with it."""
    from policies import checkpoint
    from policies.train import make_env, run

    fixed = [*code_reward_overrides(cfg, store, program), f"run_dir={out_dir / 'full' / program}",
             f"seed={cfg.seed}", f"progress={str(cfg.progress).lower()}", "resume=false"]
    if cfg.full_run.total_steps is not None:
        fixed.append(f"total_steps={cfg.full_run.total_steps}")
    tcfg = train_config(cfg, list(cfg.full_run.overrides), fixed)
    result = run(tcfg)
    ckpt = checkpoint.load(result["checkpoint"])
    grad = int(ckpt.get("extra", {}).get("num_updates", 0)) * int(tcfg.agent.utd)
    policy = checkpoint.load_policy(result["checkpoint"])
    env = make_env(tcfg.task)
    try:
        episodes = eval_episodes(env, policy, int(cfg.full_run.eval_episodes), 50_000 + int(cfg.seed) * 1000)
    finally:
        env.close()
    a = cfg.analysis
    refl = training_reflection(read_metrics(result["run_dir"]),
                               ReflectionSettings(a.windows, a.flat_fraction, a.dominant_share),
                               title=f"full training run ({result['env_steps']} env steps)")
    fails = analyse_failures(episodes, view, AnalyserSettings(a.near_m, a.moved_m, a.goal_m, a.max_episodes))
    ev = eval_summary(episodes, view)
    text = (f"A full training run on this reward reached evaluation success {ev['success_rate']:.2f} and mean "
            f"final ground-truth progress {ev['final_progress']:.2f}.\n{refl}\n{fails}")
    summary = {**ev, "run_dir": result["run_dir"], "env_steps": int(result["env_steps"]), "gradient_steps": grad,
               "seconds": float(result["wall_time_s"]), "steps_per_s": float(result["steps_per_s"])}
    store.update(program, training_reflection=text, full_run=summary)
    return {**summary, "reflection": text}


# ---------------------------------------------------------------------------
# the command


def _client(cfg: DictConfig) -> Any:
    from rewards.openai_client import ChatClient

    key = cfg.llm.api_key_env
    try:
        return ChatClient(base_url=cfg.llm.base_url, model=cfg.llm.model,
                          api_key_env=None if key is None or str(key).lower() in ("none", "null", "") else key,
                          temperature=float(cfg.llm.temperature), n=int(cfg.llm.samples),
                          max_tokens=cfg.llm.max_tokens, timeout_s=float(cfg.llm.timeout_s),
                          retries=int(cfg.llm.retries), backoff_s=float(cfg.llm.backoff_s))
    except ValueError as err:
        raise ConfigError(f"llm: {err}") from err


def cost_summary(res: LoopResult, scorer: FinetuneScorer | None, full: Mapping[str, Any] | None,
                 budget: Mapping[str, Any]) -> dict[str, Any]:
    """Compute per fine-tuned candidate against one full run (measured or extrapolated)."""
    costs = [r.cost for r in (scorer.results.values() if scorer else ()) if "online_steps_per_s" in r.cost]
    per: dict[str, Any] = {}
    if costs:
        per = {k: float(np.mean([c[k] for c in costs])) for k in ("env_steps", "gradient_steps", "seconds",
                                                                   "online_steps_per_s")}
    out: dict[str, Any] = {"candidates_fine_tuned": len(costs), "per_candidate": per,
                           "shared_start": scorer.start.cost if scorer and scorer.start else None,
                           "checks": {k: v for k, v in res.cost.items() if not k.startswith("scorer_")}}
    if full is not None:
        fr = {k: full[k] for k in ("env_steps", "gradient_steps", "seconds")}
        fr["measured"] = True
    else:
        fr = {"env_steps": budget["env_steps"], "gradient_steps": budget["gradient_steps"], "measured": False}
        if per:
            fr["seconds"] = budget["env_steps"] / max(per["online_steps_per_s"], 1e-9)
            fr["note"] = "seconds extrapolated: the budget's env steps at the fine-tunes' online steps/s"
    out["full_run"] = fr
    if per and fr.get("seconds"):
        out["ratio"] = {k: per[k] / fr[k] for k in ("env_steps", "gradient_steps", "seconds") if fr.get(k)}
    return out


def search(cfg: DictConfig) -> dict[str, Any]:
    """The whole command: rollouts, the loop with fine-tune scoring, the full run, a summary JSON."""
    validate(cfg)
    out_dir = output_dir(cfg.output_dir, f"reward_search/{cfg.train_task}")
    out_dir.mkdir(parents=True, exist_ok=True)
    store = ProgramStore(cfg.store)
    base = train_config(cfg)
    feedback = cfg.feedback
    if cfg.feedback_file:
        feedback = ((feedback + "\n") if feedback else "") + Path(cfg.feedback_file).read_text()
    gen = GenConfig(task=str(base.task.env_id), task_text=cfg.task_text, samples=int(cfg.llm.samples),
                    rounds=int(cfg.rounds), episodes=int(cfg.rollouts.episodes), noise=tuple(cfg.rollouts.noise),
                    seed=int(cfg.seed), examples=tuple(cfg.examples), feedback=feedback,
                    checks=CheckSettings(**OmegaConf.to_container(cfg.checks)),
                    sandbox=SandboxLimits(**OmegaConf.to_container(cfg.sandbox)))
    t0 = time.perf_counter()
    episodes, spec, _ = collect_episodes(base, gen.episodes, gen.noise, True, True, gen.seed)
    client = _client(cfg)
    scorer = FinetuneScorer(cfg, store, out_dir) if cfg.finetune.enabled else None
    res = run_loop(gen, client, store, episodes=episodes, spec=spec, parent=cfg.parent, scorer=scorer)
    full = None
    if cfg.full_run.enabled and res.best:
        from rewards.code.view import build_view

        try:
            view = build_view(spec, cfg.task_text)
        except ValueError:
            view = build_view(spec, text="(task text not needed)")
        full = full_run(cfg, store, res.best, view, out_dir)
    budget_steps = int(cfg.full_run.total_steps or base.total_steps)
    budget = {"env_steps": budget_steps,
              "gradient_steps": max(0, budget_steps - int(base.warmup_steps)) * int(base.agent.utd)}
    summary = {
        "task": cfg.train_task, "env_id": str(base.task.env_id), "best": res.best, "output_dir": str(out_dir),
        "store": str(store.root), "seconds": {**res.seconds, "command": time.perf_counter() - t0},
        "candidates": [{"id": c.id, "round": c.round, "sample": c.sample, "passed": c.passed, "score": c.score,
                        "fine_score": c.fine_score, "reasons": c.reasons,
                        "finetune": {k: v for k, v in (c.scored or {}).items() if k != "feedback"} or None}
                       for c in res.candidates],
        "cost": cost_summary(res, scorer, full, budget),
        "full_run": {k: v for k, v in full.items() if k != "reflection"} if full else None,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if full:
        (out_dir / "full_run_reflection.txt").write_text(full["reflection"] + "\n")
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    lines = []
    for c in summary["candidates"]:
        s = f"round {c['round']} sample {c['sample']}: {c['id']} {'PASS' if c['passed'] else 'REJECT'}"
        if c["score"] is not None:
            s += f" checks-score {c['score']:.3f}"
        if c["fine_score"] is not None:
            ft = c["finetune"] or {}
            s += (f" fine-tune-score {c['fine_score']:.3f} (success {ft.get('success_rate', 0):.2f}, "
                  f"progress {ft.get('final_progress', 0):.2f})")
        if not c["passed"]:
            s += f"  ({'; '.join(c['reasons'][:2])})"
        lines.append(s)
    lines.append(f"best: {summary['best'] or 'none passed'}")
    cost = summary["cost"]
    if cost.get("per_candidate"):
        p, f = cost["per_candidate"], cost["full_run"]
        lines.append(f"per fine-tuned candidate: {p['env_steps']:.0f} env steps, {p['gradient_steps']:.0f} gradient "
                     f"steps, {p['seconds']:.1f} s; full run ({'measured' if f['measured'] else 'budget'}): "
                     f"{f['env_steps']} env steps, {f['gradient_steps']} gradient steps"
                     + (f", {f['seconds']:.0f} s" if f.get("seconds") else "")
                     + (f" ({f['note']})" if f.get("note") else ""))
        if cost.get("ratio"):
            lines.append("ratio candidate / full run: " + ", ".join(f"{k} {v:.3f}" for k, v in cost["ratio"].items()))
    if summary.get("full_run"):
        fr = summary["full_run"]
        lines.append(f"full run on {summary['best']}: success {fr['success_rate']:.2f}, run dir {fr['run_dir']}")
    lines.append(f"summary: {Path(summary['output_dir']) / 'summary.json'}")
    return "\n".join(lines)


def _app(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = search(cfg)
    print(format_summary(summary))
    if not summary["best"]:
        sys.exit(1)


def main() -> None:
    """Console entry point ``rewardforge-reward-search``: Hydra overrides on the command line."""
    hydra_command(CONFIG_DIR, "reward_search", _app, check_overrides, (ConfigError,))


if __name__ == "__main__":
    main()


__all__ = ["FinetuneScorer", "SearchConfig", "SharedStart", "build_shared_start", "check_overrides", "compose",
           "cost_summary", "full_run", "main", "search", "validate"]
