"""The ``code`` reward term: a (generated or hand-written) program run in the sandbox.

Config (``configs/reward/code.yaml``)::

    kind: code
    params:
      program: 0003-1a2b3c4d      # an id in the program store, or a path to a .py file
      store: null                 # store root (null: <repo>/reward_programs)
      task_text: null             # only needed for tasks without a built-in text
      sandbox: {cpu_s, wall_s, memory_mb, cpu_total_s, start_s}
      record_use: true            # append this use to the program's "runs" in the store

The program is statically checked again at build time (a file edited by hand may break the
rules), then loaded into its worker. If it returns a dict of terms, they become the
components the training log reports (Eureka-style reflection reads them back).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.spec import EmbodimentSpec
from rewards.base import RewardConfigError, RewardOutput, RewardTerm, Transitions, register
from rewards.code.sandbox import Sandbox, SandboxLimits
from rewards.code.static import check_source
from rewards.code.store import ProgramStore
from rewards.code.view import TaskView, build_view, view_arrays

EXAMPLES = Path(__file__).with_name("examples")
PARAMS = ("program", "store", "task_text", "sandbox", "record_use")


class CodeReward(RewardTerm):
    """Scores batches with a reward program in a sandboxed worker; components from its dict of terms."""

    name = "code"
    # Each call crosses a process boundary (~2 ms): let the training loop hand over whole batches
    # (reward.relabel_batch transitions, or an episode), not one env step at a time.
    batched = True

    def __init__(self, source: str, limits: SandboxLimits | None = None, program_id: str | None = None,
                 task_text: str | None = None) -> None:
        report = check_source(source)
        if not report.ok:
            raise RewardConfigError("reward.params.program fails the static checks: " + "; ".join(report.reasons))
        self.source, self.program_id, self.task_text = source, program_id, task_text
        self.reads = report.reads
        self.sandbox = Sandbox(limits)
        self.view: TaskView | None = None

    def bind(self, spec: EmbodimentSpec) -> RewardTerm:
        super().bind(spec)
        try:
            self.view = build_view(spec, self.task_text)
        except ValueError:
            self.view = build_view(spec, text="(task text not needed to run a program)")
        return self

    def compute(self, batch: Transitions) -> RewardOutput:
        if self.sandbox.source is None:
            self.sandbox.load(self.source)
        obs, nxt = view_arrays(self.view, batch.obs), view_arrays(self.view, batch.next_obs)
        reward, comps = self.sandbox(obs, batch.action, nxt)
        return RewardOutput(reward, comps)

    def close(self) -> None:
        self.sandbox.close()


def resolve_program(program: Any, store: ProgramStore) -> tuple[str, str | None]:
    """(source, store id or None) for ``reward.params.program``: a store id, a .py path, or an example name."""
    if not isinstance(program, str) or not program:
        raise RewardConfigError("reward.params.program must be a program id from the store "
                                f"({store.root}) or a path to a .py file; got {program!r}")
    if store.has(program):
        return store.source(program), program
    for cand in (Path(program), EXAMPLES / program, EXAMPLES / f"{program}.py"):
        if cand.suffix == ".py" and cand.is_file():
            return cand.read_text(), None
    known = store.ids()
    examples = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    raise RewardConfigError(f"reward.params.program={program!r} is neither an id in the store {store.root} "
                            f"(ids: {known[-10:] if known else 'none'}) nor a .py file; examples: {examples}")


@register("code")
def build_code(params: Mapping[str, Any], spec: EmbodimentSpec | None) -> RewardTerm:
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise RewardConfigError(f"reward.params has unknown keys {unknown}; allowed: {list(PARAMS)}")
    store = ProgramStore(params.get("store"))
    source, pid = resolve_program(params.get("program"), store)
    try:
        limits = SandboxLimits.from_config(params.get("sandbox"))
    except (TypeError, ValueError) as e:
        raise RewardConfigError(str(e)) from e
    term = CodeReward(source, limits, pid, params.get("task_text"))
    if pid is not None and params.get("record_use", True):
        store.add_run(pid, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "cwd": os.getcwd(),
                            "argv": list(sys.argv), "task": spec.name if spec else None})
    return term


__all__ = ["CodeReward", "build_code", "resolve_program"]
