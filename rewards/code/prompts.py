"""Prompt templates and code extraction for reward-program generation.

The first round sends the task view (``view.TaskView.describe``), guidance on how a
good dense reward is built (progress terms first, bounded scales, a success bonus,
components returned by name so training can report them: Eureka's reward reflection
needs per-component statistics) and optional examples. Later rounds add what went
wrong: static-check and execution-check reasons, per-component statistics on logged
rollouts, and a person's written feedback (Text2Reward's refinement from feedback).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

SYSTEM = (
    "You write dense reward functions for robot reinforcement learning in Python. "
    "You answer with one ```python code block and nothing after it."
)

GUIDANCE = """Rules for the program:
- Define `compute_reward(obs, action, next_obs)`; use only `import numpy as np` and `import math`.
- Vectorise over the batch axis: every term is a (B,) numpy array; no Python loops over transitions.
- No files, network, processes, `while` loops, `try`, classes, lambdas, globals or dunder names.
- Return a dict {term_name: (B,) array}; the reward is the sum of the terms. Name terms by meaning
  (e.g. "reach", "grasp", "place", "success_bonus", "action_penalty").
- Keep each term bounded (roughly within [-2, 2]): prefer 1 - tanh(distance / scale) or -distance over
  1 / distance; add a success bonus when the goal condition holds; keep penalties small.
- Reward progress towards the goal: more reward must mean closer to success."""


def first_prompt(view_text: str, examples: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Messages for round one."""
    parts = [view_text, "", GUIDANCE]
    for i, ex in enumerate(examples, 1):
        parts += ["", f"Example {i} (hand-written, for another situation or style):", "```python", ex.strip(), "```"]
    parts += ["", "Write the reward program now."]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


def refine_prompt(view_text: str, parent_source: str, feedback: str, human: str | None = None) -> list[dict[str, Any]]:
    """Messages for a later round: the parent program, what the checks and statistics said, and
    a person's feedback (from the command line or a file) when there is some."""
    parts = [view_text, "", GUIDANCE, "", "Your previous program:", "```python", parent_source.strip(), "```", "",
             "What we observed:", feedback.strip()]
    if human:
        parts += ["", "Feedback from a person who watched the policy trained on it:", human.strip()]
    parts += ["", "Write an improved program that fixes these problems."]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text: str) -> str | None:
    """The program in a completion: the fenced block that defines ``compute_reward`` (the last
    such, models often restate), else the last python block, else the whole text if it parses
    and defines the function. None when nothing looks like a program."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text or "")]
    with_fn = [b for _, b in blocks if "def compute_reward" in b]
    if with_fn:
        return with_fn[-1].strip() + "\n"
    py = [b for lang, b in blocks if lang in ("python", "py", "python3")]
    if py:
        return py[-1].strip() + "\n"
    if text and "def compute_reward" in text:
        try:
            ast.parse(text)
            return text.strip() + "\n"
        except SyntaxError:
            return text.strip() + "\n"  # let the static check report the syntax error with a line
    return None


__all__ = ["GUIDANCE", "SYSTEM", "extract_code", "first_prompt", "refine_prompt"]
