"""Static checks on a generated reward program, before it ever runs.

A program is accepted only if it parses and stays inside a small whitelist: imports of
``math`` and ``numpy`` only, no names or attributes that reach the interpreter's
internals (dunders, ``open``, ``exec``, ``eval``, ``compile``, ``getattr``, ``globals``,
``__import__`` ...), no ``while`` loops (the only way to write an endless loop without
recursion; ``for`` loops over ``range`` are fine), no ``global``/``nonlocal``, no
``async``/``yield``/``lambda`` tricks, size limits, and a top-level ``compute_reward``
function. Each violation becomes one plain-English reason that goes back to the model.

This is a first filter, not the security boundary: the sandbox (``sandbox.py``) runs the
program in another process under resource limits with a restricted set of builtins, and
that process is what protects the trainer from whatever the filter misses.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

ALLOWED_IMPORTS = frozenset({"math", "numpy"})
ENTRY = "compute_reward"
FORBIDDEN_NAMES = frozenset({
    "open", "exec", "eval", "compile", "getattr", "setattr", "delattr", "hasattr", "globals", "locals", "vars",
    "dir", "__import__", "input", "breakpoint", "help", "exit", "quit", "memoryview", "type", "object", "super",
    "classmethod", "staticmethod", "property", "os", "sys", "subprocess", "socket", "builtins", "importlib",
    "pickle", "ctypes", "shutil", "pathlib", "signal", "resource", "threading", "multiprocessing", "gc",
    "inspect", "io", "marshal", "code", "codeop", "pty", "asyncio", "http", "urllib", "requests",
})
# numpy attributes that touch files, the network, C code or the import system.
FORBIDDEN_ATTRS = frozenset({
    "load", "loads", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt", "fromfile",
    "tofile", "memmap", "ctypeslib", "ctypes", "lib", "distutils", "f2py", "testing", "DataSource", "format",
    "frombuffer", "fromregex", "dump", "dumps", "show_config", "get_include", "os", "sys", "system",
})
FORBIDDEN_NODES: dict[type, str] = {
    ast.While: "a `while` loop (it may never end; use vectorised numpy or `for i in range(n)`)",
    ast.Global: "a `global` statement",
    ast.Nonlocal: "a `nonlocal` statement",
    ast.AsyncFunctionDef: "an async function",
    ast.Await: "`await`",
    ast.Yield: "`yield` (generators)",
    ast.YieldFrom: "`yield from`",
    ast.ClassDef: "a class definition",
    ast.Lambda: "a `lambda`",
    ast.Try: "a `try` block (errors must surface so the checks see them)",
    ast.With: "a `with` block",
    ast.Delete: "a `del` statement",
}


@dataclass
class StaticLimits:
    """Size limits: long programs are slow to check and usually wrong."""

    max_chars: int = 20_000
    max_lines: int = 400
    max_nodes: int = 5_000
    max_range: int = 10_000  # largest literal bound of a `range(...)`


@dataclass
class StaticReport:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)  # observation keys the program subscripts with literals


def _const(node: ast.AST) -> bool:
    """A literal number, or arithmetic over literal numbers only."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int | float) and not isinstance(node.value, bool)
    if isinstance(node, ast.BinOp):
        return _const(node.left) and _const(node.right)
    if isinstance(node, ast.UnaryOp):
        return _const(node.operand)
    return False


def check_source(source: str, limits: StaticLimits | None = None) -> StaticReport:
    """Parse ``source`` and list every whitelist violation (empty list: accepted)."""
    limits = limits or StaticLimits()
    reasons: list[str] = []
    if len(source) > limits.max_chars:
        reasons.append(f"program is {len(source)} characters long; the limit is {limits.max_chars}")
    if source.count("\n") + 1 > limits.max_lines:
        reasons.append(f"program has {source.count(chr(10)) + 1} lines; the limit is {limits.max_lines}")
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return StaticReport(False, [*reasons, f"syntax error at line {e.lineno}: {e.msg}"])
    nodes = list(ast.walk(tree))
    if len(nodes) > limits.max_nodes:
        reasons.append(f"program has {len(nodes)} syntax nodes; the limit is {limits.max_nodes}")
    reads: list[str] = []
    for node in nodes:
        line = getattr(node, "lineno", "?")
        for kind, what in FORBIDDEN_NODES.items():
            if isinstance(node, kind):
                reasons.append(f"line {line}: {what} is not allowed")
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m.split(".")[0] not in ALLOWED_IMPORTS or (isinstance(node, ast.ImportFrom) and node.level):
                    reasons.append(f"line {line}: import of {m!r} is not allowed (only {sorted(ALLOWED_IMPORTS)})")
        elif isinstance(node, ast.Name):
            if node.id.startswith("__") or node.id in FORBIDDEN_NAMES:
                reasons.append(f"line {line}: use of the name {node.id!r} is not allowed")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                reasons.append(f"line {line}: access to the private/dunder attribute {node.attr!r} is not allowed")
            elif node.attr in FORBIDDEN_ATTRS:
                reasons.append(f"line {line}: attribute {node.attr!r} (file, C or import access) is not allowed")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("__"):
            reasons.append(f"line {line}: the string {node.value!r} looks like a dunder lookup; not allowed")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            for a in node.args:
                if isinstance(a, ast.Constant) and isinstance(a.value, int) and abs(a.value) > limits.max_range:
                    reasons.append(f"line {line}: range bound {a.value} exceeds {limits.max_range}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow | ast.LShift) and _const(node.left):
            # 2 ** 10 ** 10, 1 << 10 ** 9: literal integer arithmetic that eats CPU/memory before any limit
            r = node.right
            if (isinstance(r, ast.Constant) and isinstance(r.value, int) and abs(r.value) > 64) or (
                    isinstance(r, ast.BinOp) and _const(r)):
                reasons.append(f"line {line}: huge literal arithmetic ({ast.unparse(node)}) is not allowed")
        elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
              and isinstance(node.slice.value, str)):
            reads.append(node.slice.value)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == ENTRY]
    if not funcs:
        reasons.append(f"no top-level function `{ENTRY}(obs, action, next_obs)` is defined")
    else:
        args = funcs[0].args
        if len(args.posonlyargs) + len(args.args) != 3 or args.vararg or args.kwarg:
            reasons.append(f"`{ENTRY}` must take exactly three arguments (obs, action, next_obs)")
    for n in tree.body:
        if not isinstance(n, ast.FunctionDef | ast.Import | ast.ImportFrom | ast.Assign | ast.AnnAssign | ast.Expr):
            reasons.append(f"line {n.lineno}: top-level {type(n).__name__} statements are not allowed "
                           "(only imports, constants and function definitions)")
        elif isinstance(n, ast.Expr) and not (isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)):
            reasons.append(f"line {n.lineno}: top-level expressions other than docstrings are not allowed")
    return StaticReport(not reasons, list(dict.fromkeys(reasons)), sorted(set(reads)))


__all__ = ["ALLOWED_IMPORTS", "ENTRY", "StaticLimits", "StaticReport", "check_source"]
