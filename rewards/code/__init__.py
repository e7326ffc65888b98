"""LLM-written dense reward programs: task view, prompts, static checks, sandbox, checks, store.

``rewards.build({"kind": "code", ...})`` imports this package lazily (``rewards.base._LAZY``);
importing it registers the ``code`` kind. The generation loop and its checks-only command line
(``rewardforge-reward-gen``) live in ``rewards.code.generate``; reflection from training
statistics in ``rewards.code.reflect``; the failed-episode analyser in ``rewards.code.trajectory``.
Scoring candidates by short SAC fine-tunes needs the training code, which ``rewards`` never
imports: that search (``rewardforge-reward-search``) is ``policies.reward_search``.
"""

from rewards.code.prompts import extract_code, first_prompt, refine_prompt
from rewards.code.sandbox import Sandbox, SandboxError, SandboxLimits
from rewards.code.static import StaticLimits, StaticReport, check_source
from rewards.code.store import ProgramStore
from rewards.code.term import CodeReward, build_code, resolve_program
from rewards.code.view import TaskView, build_view, view_arrays

__all__ = [
    "CodeReward", "ProgramStore", "Sandbox", "SandboxError", "SandboxLimits", "StaticLimits", "StaticReport",
    "TaskView", "build_code", "build_view", "check_source", "extract_code", "first_prompt", "refine_prompt",
    "resolve_program", "view_arrays",
]
