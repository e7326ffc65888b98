"""Reward-hacking monitor: flag transitions and episodes where reward sources disagree.

A policy trained on a perceptual or learned reward finds the states that reward
over-scores (Skalse et al. 2022 call this reward hacking; for vision-language
rewards it shows up as a high similarity score for a frame where the task is not
done). The cheapest alarm is a second opinion that should agree with the reward:

``high_reward_failure``
    a reward signal (the total reward, or named components such as ``clip`` or
    ``keypoints``) is *high* (above a fixed ``threshold``, or above the
    ``quantile`` of the recent values of that signal) while the reference verdict
    says failure. The reference is the ground-truth success (the task state) when
    the caller has it, else the term's own success detector (``RewardOutput.success``).
``success_false_positive``
    the term's success detector says success where the ground truth says failure
    (only checkable with ground truth: simulation, labelled episodes).
``ensemble_disagreement``
    a learned reward's ensemble members disagree: a component such as
    ``prob_std`` (matched by name, or as the last part of a prefixed name like
    ``classifier/prob_std``) is above ``disagreement_threshold``. Disagreement
    means the model is outside its training data, where its reward is least
    trustworthy (the ensemble-uncertainty argument of Lakshminarayanan et al. 2017).

Per episode (:meth:`RewardMonitor.update_episode`), an episode is flagged for a
transition-level reason when at least ``episode_min_flags`` of its transitions
carry it, and for ``high_return_failure`` when its return is high (same rule,
over the recent episode returns) while it failed.

Pure numpy and no ROS on purpose: the training loop logs :meth:`summary`, the
evaluation command puts it in its report, and the ROS reward-monitor node turns
:meth:`diagnostics` into a ``diagnostic_msgs/DiagnosticArray`` (one
``DiagnosticStatus`` per tuple: name, level, message, key/value strings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewards.base import RewardConfigError, RewardOutput

# diagnostic_msgs/DiagnosticStatus levels (the ROS node sends them as bytes([level])).
OK, WARN, ERROR = 0, 1, 2

HIGH_REWARD_FAILURE = "high_reward_failure"
SUCCESS_FALSE_POSITIVE = "success_false_positive"
ENSEMBLE_DISAGREEMENT = "ensemble_disagreement"
HIGH_RETURN_FAILURE = "high_return_failure"
TRANSITION_REASONS = (HIGH_REWARD_FAILURE, SUCCESS_FALSE_POSITIVE, ENSEMBLE_DISAGREEMENT)
EPISODE_REASONS = (*TRANSITION_REASONS, HIGH_RETURN_FAILURE)

_EXPLAIN = {
    HIGH_REWARD_FAILURE: "reward high while the task state / success detector says failure",
    SUCCESS_FALSE_POSITIVE: "success detector says success, ground truth says failure",
    ENSEMBLE_DISAGREEMENT: "learned-reward ensemble members disagree",
    HIGH_RETURN_FAILURE: "episode return high while the episode failed",
}


@dataclass
class MonitorFlags:
    """What one :meth:`RewardMonitor.update` call found: ``any`` (B,) bool and one (B,) bool
    array per reason; for :meth:`RewardMonitor.update_episode` also the episode verdict."""

    any: np.ndarray
    reasons: dict[str, np.ndarray]
    episode: bool | None = None
    episode_reasons: tuple[str, ...] = ()
    cuts: dict[str, float] = field(default_factory=dict)  # the "high" cut used per signal
    checked: tuple[str, ...] = ()  # the reasons this batch could be checked for


class _Recent:
    """The last ``size`` values of a signal (a ring buffer); quantiles of recent values
    follow a reward whose scale drifts during training, which an all-time quantile would not."""

    def __init__(self, size: int) -> None:
        self.buf = np.zeros(size, np.float64)
        self.n = 0  # values ever added
        self.size = size

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1)
        x = x[np.isfinite(x)][-self.size:]
        idx = (self.n + np.arange(len(x))) % self.size
        self.buf[idx] = x
        self.n += len(x)

    def values(self) -> np.ndarray:
        return self.buf[: min(self.n, self.size)]


class RewardMonitor:
    """Running reward-hacking checks over batches of :class:`RewardOutput`.

    Args:
      reward_keys: signals checked for "high": ``reward`` (the total) and/or component
        names of the term (``clip``, ``keypoints``, ``classifier/prob``...).
      quantile: a signal is high above this quantile of its last ``history`` values
        (the current batch included). Ignored where ``threshold`` is set.
      threshold: fixed cut instead of the quantile, the same for every signal.
      min_history: values a signal needs before the quantile rule flags anything, so
        the first few batches of a run do not flag their own top decile.
      return_threshold / min_episodes: the same two rules for episode returns (the
        per-step ``threshold`` does not apply to sums over an episode).
      max_progress: with ground-truth progress, flag high rewards only where progress
        is below this (a state near success may honestly score high); None: off.
      disagreement_keys / disagreement_threshold: ensemble-spread components and the
        spread above which a transition is flagged.
      episode_min_flags: flagged transitions of one reason that flag their episode.
      warn_rate / error_rate: flag rates (per check) at which :meth:`diagnostics`
        reports WARN / ERROR.
      name: prefix of the diagnostic status names.
    """

    def __init__(
        self,
        reward_keys: Sequence[str] = ("reward",),
        quantile: float = 0.95,
        threshold: float | None = None,
        history: int = 10_000,
        min_history: int = 100,
        return_threshold: float | None = None,
        min_episodes: int = 10,
        max_progress: float | None = None,
        disagreement_keys: Sequence[str] = ("prob_std",),
        disagreement_threshold: float = 0.25,
        episode_min_flags: int = 1,
        warn_rate: float = 0.05,
        error_rate: float = 0.2,
        name: str = "reward_monitor",
    ) -> None:
        if isinstance(reward_keys, str):
            reward_keys = (reward_keys,)
        if isinstance(disagreement_keys, str):
            disagreement_keys = (disagreement_keys,)
        if not reward_keys:
            raise RewardConfigError("monitor.reward_keys must name at least one signal: 'reward' or a component")
        if not 0.0 < quantile < 1.0:
            raise RewardConfigError(f"monitor.quantile={quantile!r}: must be in (0, 1)")
        if history < 1 or min_history < 0:
            raise RewardConfigError(f"monitor.history={history!r} must be >= 1 and monitor.min_history="
                                    f"{min_history!r} >= 0")
        if min_episodes < 0:
            raise RewardConfigError(f"monitor.min_episodes={min_episodes!r}: must be >= 0")
        if max_progress is not None and not 0.0 < max_progress <= 1.0:
            raise RewardConfigError(f"monitor.max_progress={max_progress!r}: must be in (0, 1] or null")
        if episode_min_flags < 1:
            raise RewardConfigError(f"monitor.episode_min_flags={episode_min_flags!r}: must be >= 1")
        if not 0.0 <= warn_rate <= error_rate <= 1.0:
            raise RewardConfigError(f"monitor.warn_rate={warn_rate!r}, monitor.error_rate={error_rate!r}: "
                                    "need 0 <= warn_rate <= error_rate <= 1")
        self.reward_keys = tuple(str(k) for k in reward_keys)
        self.quantile, self.threshold = float(quantile), None if threshold is None else float(threshold)
        self.history, self.min_history = int(history), int(min_history)
        self.return_threshold = None if return_threshold is None else float(return_threshold)
        self.min_episodes = int(min_episodes)
        self.max_progress = None if max_progress is None else float(max_progress)
        self.disagreement_keys = tuple(str(k) for k in disagreement_keys)
        self.disagreement_threshold = float(disagreement_threshold)
        self.episode_min_flags = int(episode_min_flags)
        self.warn_rate, self.error_rate = float(warn_rate), float(error_rate)
        self.name = str(name)
        self.reset()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> RewardMonitor:
        """From a config mapping (``monitor:`` in configs/reward_eval.yaml); unknown keys fail by name."""
        cfg = dict(cfg or {})
        allowed = ("reward_keys", "quantile", "threshold", "history", "min_history", "return_threshold",
                   "min_episodes", "max_progress",
                   "disagreement_keys", "disagreement_threshold", "episode_min_flags", "warn_rate",
                   "error_rate", "name")
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise RewardConfigError(f"monitor has unknown keys {unknown}; allowed: {', '.join(allowed)}")
        for key in ("reward_keys", "disagreement_keys"):
            if key in cfg and cfg[key] is not None and not isinstance(cfg[key], str):
                cfg[key] = tuple(cfg[key])
        return cls(**cfg)

    def reset(self) -> None:
        """Forget all counts and histories (a new run)."""
        self.transitions = 0
        self.flagged = 0
        self.counts = dict.fromkeys(TRANSITION_REASONS, 0)
        self.checked = dict.fromkeys(TRANSITION_REASONS, 0)  # transitions where the check could run
        self.episodes = 0
        self.episodes_flagged = 0
        self.episode_counts = dict.fromkeys(EPISODE_REASONS, 0)
        self.episode_checked = dict.fromkeys(EPISODE_REASONS, 0)
        self.last_reasons: tuple[str, ...] = ()
        self.last_flagged_at: int | None = None  # transition index (counted from the start) of the last flag
        self._recent: dict[str, _Recent] = {}
        self._returns = _Recent(self.history)

    # ---- checks -------------------------------------------------------------------
    def _signal(self, out: RewardOutput, key: str) -> np.ndarray:
        if key == "reward":
            return out.reward
        if key in out.components:
            return out.components[key]
        raise RewardConfigError(f"monitor.reward_keys names {key!r}, which this reward does not produce; "
                                f"it produces 'reward' and components {sorted(out.components)}")

    def _cut(self, values: np.ndarray, store: _Recent, threshold: float | None, min_count: int) -> float:
        """The "high" cut for a signal: the fixed threshold, or the quantile of its recent values,
        this batch included (``inf``, so nothing is high, while fewer than ``min_count`` were seen)."""
        if threshold is not None:
            return threshold
        store.add(values)
        recent = store.values()
        if len(recent) < max(min_count, 1):
            return float("inf")
        return float(np.quantile(recent, self.quantile))

    def update(self, out: RewardOutput, success: np.ndarray | None = None,
               progress: np.ndarray | None = None) -> MonitorFlags:
        """Check one batch; ``success``/``progress`` are ground truth at the next observation, if known."""
        n = len(out.reward)
        gt = None if success is None else np.asarray(success, bool).reshape(-1)
        prog = None if progress is None else np.asarray(progress, np.float64).reshape(-1)
        for label, arr in (("success", gt), ("progress", prog)):
            if arr is not None and arr.shape != (n,):
                raise ValueError(f"monitor: {label} has shape {arr.shape}, expected ({n},)")
        reasons = {r: np.zeros(n, bool) for r in TRANSITION_REASONS}
        cuts: dict[str, float] = {}
        checked_now = [False] * len(TRANSITION_REASONS)

        # reward high while the reference verdict says failure
        failed = ~gt if gt is not None else (~out.success if out.success is not None else None)
        high = np.zeros(n, bool)
        for key in self.reward_keys:
            x = self._signal(out, key).astype(np.float64)
            store = self._recent.setdefault(key, _Recent(self.history))
            cuts[key] = self._cut(x, store, self.threshold, self.min_history)
            high |= x > cuts[key]
        if failed is not None:
            hit = high & failed
            if self.max_progress is not None and prog is not None:
                hit &= prog < self.max_progress
            reasons[HIGH_REWARD_FAILURE] = hit
            checked_now[0] = True

        # success detector against ground truth
        if out.success is not None and gt is not None:
            reasons[SUCCESS_FALSE_POSITIVE] = out.success & ~gt
            checked_now[1] = True

        # ensemble spread
        spread = [v for k, v in out.components.items()
                  if k in self.disagreement_keys or k.rsplit("/", 1)[-1] in self.disagreement_keys]
        if spread:
            reasons[ENSEMBLE_DISAGREEMENT] = np.logical_or.reduce(
                [np.asarray(v, np.float64) > self.disagreement_threshold for v in spread])
            checked_now[2] = True

        any_flag = np.logical_or.reduce(list(reasons.values()))
        for (r, m), c in zip(reasons.items(), checked_now, strict=True):
            self.counts[r] += int(m.sum())
            self.checked[r] += n if c else 0
        self.flagged += int(any_flag.sum())
        if any_flag.any():
            last = int(np.flatnonzero(any_flag)[-1])
            self.last_reasons = tuple(r for r, m in reasons.items() if m[last])
            self.last_flagged_at = self.transitions + last
        self.transitions += n
        checked = tuple(r for r, c in zip(TRANSITION_REASONS, checked_now, strict=True) if c)
        return MonitorFlags(any_flag, reasons, cuts=cuts, checked=checked)

    def update_episode(self, out: RewardOutput, success: np.ndarray | None = None,
                       progress: np.ndarray | None = None) -> MonitorFlags:
        """Check one whole episode (its transitions in order): the transition flags of
        :meth:`update` plus the episode's verdict. The episode failed if no transition
        reached success (ground truth, else the term's detector)."""
        flags = self.update(out, success, progress)
        episode_reasons = [r for r in TRANSITION_REASONS if flags.reasons[r].sum() >= self.episode_min_flags]
        for r in flags.checked:
            self.episode_checked[r] += 1
        verdict = success if success is not None else out.success
        ret = float(np.sum(out.reward, dtype=np.float64))
        cut = self._cut(np.array([ret]), self._returns, self.return_threshold, self.min_episodes)
        flags.cuts["episode_return"] = cut
        if verdict is not None:
            self.episode_checked[HIGH_RETURN_FAILURE] += 1
            if ret > cut and not bool(np.any(verdict)):
                episode_reasons.append(HIGH_RETURN_FAILURE)
        for r in episode_reasons:
            self.episode_counts[r] += 1
        self.episodes += 1
        self.episodes_flagged += int(bool(episode_reasons))
        flags.episode, flags.episode_reasons = bool(episode_reasons), tuple(episode_reasons)
        return flags

    # ---- reporting --------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Flat counts and rates for logging: ``count/<reason>``, ``rate/<reason>`` (over the
        transitions where that check could run; NaN where it never could), episode ditto."""

        def rate(count: int, total: int) -> float:
            return count / total if total else float("nan")

        s: dict[str, Any] = {
            "transitions": self.transitions, "flagged": self.flagged,
            "flag_rate": rate(self.flagged, self.transitions),
            "episodes": self.episodes, "episodes_flagged": self.episodes_flagged,
            "episode_flag_rate": rate(self.episodes_flagged, self.episodes),
        }
        for r in TRANSITION_REASONS:
            s[f"count/{r}"] = self.counts[r]
            s[f"rate/{r}"] = rate(self.counts[r], self.checked[r])
        for r in EPISODE_REASONS:
            s[f"episode_count/{r}"] = self.episode_counts[r]
            s[f"episode_rate/{r}"] = rate(self.episode_counts[r], self.episode_checked[r])
        s["last_reasons"] = ",".join(self.last_reasons)
        s["last_flagged_at"] = -1 if self.last_flagged_at is None else self.last_flagged_at
        return s

    def _level(self, r: float) -> int:
        if not np.isfinite(r):
            return OK
        return ERROR if r >= self.error_rate and r > 0 else WARN if r >= self.warn_rate and r > 0 else OK

    def diagnostics(self) -> list[tuple[str, int, str, dict[str, str]]]:
        """One (name, level, message, values) per check plus an overall status; levels are
        diagnostic_msgs/DiagnosticStatus OK/WARN/ERROR (0/1/2), values are strings as the
        message's KeyValue pairs need."""
        s = self.summary()
        statuses = []
        for r in TRANSITION_REASONS:
            rate, checked = s[f"rate/{r}"], self.checked[r]
            if checked == 0:
                level, msg = OK, "not checked (this reward or data cannot show it)"
            else:
                level = self._level(rate)
                msg = f"{self.counts[r]} of {checked} transitions ({100 * rate:.1f}%): {_EXPLAIN[r]}"
            values = {"count": str(self.counts[r]), "checked": str(checked), "rate": f"{rate:.6g}",
                      "episodes_flagged": str(self.episode_counts[r])}
            statuses.append((f"{self.name}: {r}", level, msg, values))
        r = HIGH_RETURN_FAILURE
        ep_checked = self.episode_checked[r]
        rate = s[f"episode_rate/{r}"]
        statuses.append((f"{self.name}: {r}", self._level(rate) if ep_checked else OK,
                         f"{self.episode_counts[r]} of {ep_checked} episodes: {_EXPLAIN[r]}" if ep_checked
                         else "not checked (no episodes with a success verdict)",
                         {"count": str(self.episode_counts[r]), "checked": str(ep_checked), "rate": f"{rate:.6g}"}))
        overall = max(level for _, level, _, _ in statuses)
        values = {k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in s.items()}
        statuses.insert(0, (self.name, overall,
                            f"{self.flagged} of {self.transitions} transitions flagged"
                            + (f"; last: {s['last_reasons']}" if s["last_reasons"] else ""), values))
        return statuses


__all__ = [
    "ENSEMBLE_DISAGREEMENT", "EPISODE_REASONS", "ERROR", "HIGH_RETURN_FAILURE", "HIGH_REWARD_FAILURE", "OK",
    "SUCCESS_FALSE_POSITIVE", "TRANSITION_REASONS", "WARN", "MonitorFlags", "RewardMonitor",
]
