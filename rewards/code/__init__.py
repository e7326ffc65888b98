"""LLM-written dense reward programs: task view, prompts, static checks, sandbox, checks, store.

``rewards.build({"kind": "code", ...})`` imports this package lazily (``rewards.base._LAZY``);
importing it registers the ``code`` kind. The generation loop and its command line live in
``rewards.code.generate`` and ``rewards.code.cli`` (imported only when used).
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
