"""The sandbox worker: runs one reward program in this separate process, batch after batch.

Started by ``sandbox.Sandbox`` as ``python -I -S? _runner.py`` with an empty environment and
resource limits already applied (CPU time, address space, no file writes, no new processes).
It speaks a framed protocol on its own copy of stdout: each message is an 8-byte length +
JSON header, then an 8-byte length + an ``.npz`` payload (numpy's format read with
``allow_pickle=False``, so neither side unpickles anything the other sent).

Before the program is loaded, the worker removes what a program must not reach: modules
for sockets, processes and files are made unimportable (``sys.modules[name] = None``),
``__import__`` only admits ``math`` and ``numpy``, and the program's builtins are a short
whitelist (no ``open``, ``exec``, ``eval``, ``compile``, ``getattr``, ``globals`` ...).
This file imports nothing from the project on purpose: it must start fast and alone.
"""

import ast
import builtins
import io
import json
import math
import os
import resource
import struct
import sys
import time
import traceback

import numpy as np

OUT = os.fdopen(os.dup(1), "wb", buffering=0)
IN = os.fdopen(os.dup(0), "rb", buffering=0)
# The program's own prints go nowhere (stdout/stdin are not the protocol channel any more).
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0)
os.dup2(_null, 1)


def _read_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = IN.read(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def recv():
    (hl,) = struct.unpack("<Q", _read_exact(8))
    header = json.loads(_read_exact(hl))
    (pl,) = struct.unpack("<Q", _read_exact(8))
    payload = _read_exact(pl)
    arrays = dict(np.load(io.BytesIO(payload), allow_pickle=False)) if pl else {}
    return header, arrays


def send(header, arrays=None):
    h = json.dumps(header).encode()
    buf = io.BytesIO()
    if arrays:
        np.savez(buf, **arrays)
    p = buf.getvalue()
    OUT.write(struct.pack("<Q", len(h)) + h + struct.pack("<Q", len(p)) + p)


SAFE_BUILTINS = {name: getattr(builtins, name) for name in (
    "abs", "min", "max", "sum", "len", "range", "enumerate", "zip", "float", "int", "bool", "dict", "list",
    "tuple", "set", "frozenset", "isinstance", "round", "pow", "map", "filter", "sorted", "reversed", "any",
    "all", "print", "divmod", "str", "slice", "ValueError", "TypeError", "KeyError", "IndexError", "Exception",
    "ArithmeticError", "ZeroDivisionError", "RuntimeError", "NotImplementedError", "AssertionError",
)}
SAFE_BUILTINS.update({"True": True, "False": False, "None": None})
ALLOWED = {"math": math, "numpy": np}
# Network, process and foreign-code modules: made unimportable for the rest of this process's life.
BLOCKED = ("socket", "_socket", "ssl", "_ssl", "subprocess", "_posixsubprocess", "multiprocessing", "ctypes",
           "_ctypes", "urllib", "http", "ftplib", "smtplib", "asyncio", "pty", "webbrowser", "shutil", "pickle",
           "_pickle", "marshal", "mmap", "fcntl")


def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 - __import__'s signature
    root = name.split(".")[0]
    if level or root not in ALLOWED:
        raise ImportError(f"import of {name!r} is not allowed in a reward program (only math, numpy)")
    mod = ALLOWED[root]
    if fromlist or "." not in name:
        return mod if "." not in name else sys.modules[name]
    return mod


SAFE_BUILTINS["__import__"] = guarded_import


def refuse_dunders(source):
    """Second line of defence, independent of the parent's whitelist: no private/dunder attribute
    or name in the program (``().__class__.__mro__[-1].__subclasses__()`` is the classic escape)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise PermissionError(f"attribute {node.attr!r} is not allowed in the sandbox (line {node.lineno})")
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise PermissionError(f"name {node.id!r} is not allowed in the sandbox (line {node.lineno})")


def set_cpu_budget(seconds):
    """Soft RLIMIT_CPU = CPU used so far + ``seconds`` (the hard limit, set by the parent, caps it)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    total = used.ru_utime + used.ru_stime
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = int(math.ceil(total + seconds))
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (want, hard))


def main():
    # Warm up what the protocol itself needs (zipfile under np.savez/np.load) before blocking modules.
    warm = io.BytesIO()
    np.savez(warm, x=np.zeros(1))
    np.load(io.BytesIO(warm.getvalue()), allow_pickle=False)["x"]
    for name in BLOCKED:
        sys.modules[name] = None  # `import socket` now raises ImportError even via numpy internals
    fn = None
    cpu_s = 10.0
    send({"ok": True, "ready": True, "pid": os.getpid()})
    while True:
        try:
            header, arrays = recv()
        except EOFError:
            return
        op = header.get("op")
        try:
            if op == "load":
                cpu_s = float(header.get("cpu_s", cpu_s))
                set_cpu_budget(cpu_s)
                refuse_dunders(header["source"])
                glb = {"__builtins__": SAFE_BUILTINS, "__name__": "reward_program"}
                exec(compile(header["source"], "<reward program>", "exec"), glb)  # noqa: S102 - the sandbox
                fn = glb.get("compute_reward")
                if not callable(fn):
                    raise ValueError("the program defines no callable compute_reward")
                send({"ok": True})
            elif op == "call":
                if fn is None:
                    raise RuntimeError("no program loaded")
                set_cpu_budget(cpu_s)
                obs = {k[4:]: v for k, v in arrays.items() if k.startswith("obs/")}
                nxt = {k[5:]: v for k, v in arrays.items() if k.startswith("next/")}
                t0 = time.perf_counter()
                out = fn(obs, arrays["action"], nxt)
                dt = time.perf_counter() - t0
                n = len(arrays["action"])
                if isinstance(out, dict):
                    comps = {str(k): np.broadcast_to(np.asarray(v, np.float64), (n,)) for k, v in out.items()}
                    if not comps:
                        raise ValueError("compute_reward returned an empty dict")
                    reward = np.sum(np.stack(list(comps.values())), axis=0)
                else:
                    reward, comps = np.asarray(out, np.float64), {}
                    if reward.ndim == 0:
                        raise ValueError("compute_reward returned a scalar; it must return one reward per "
                                         f"transition, shape ({n},)")
                if reward.shape != (n,):
                    raise ValueError(f"compute_reward returned shape {reward.shape}; expected ({n},)")
                send({"ok": True, "seconds": dt, "components": list(comps)},
                     {"reward": reward, **{f"c{i}": v for i, v in enumerate(comps.values())}})
            elif op == "ping":
                send({"ok": True})
            else:
                send({"ok": False, "error": f"unknown op {op!r}"})
        except MemoryError:
            send({"ok": False, "kind": "memory", "error": "MemoryError: the program exceeded the memory limit"})
        except RecursionError:
            send({"ok": False, "kind": "error", "error": "RecursionError: maximum recursion depth exceeded"})
        except BaseException as e:  # noqa: BLE001 - everything the program raises is reported, never fatal
            tb = traceback.extract_tb(e.__traceback__)
            where = next((f"line {f.lineno}" for f in reversed(tb) if f.filename == "<reward program>"), "")
            send({"ok": False, "kind": "error", "error": f"{type(e).__name__}: {e}".strip() + (f" ({where})" if where else "")})


if __name__ == "__main__":
    main()
