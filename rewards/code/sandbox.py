"""Run a reward program in a separate, resource-limited worker process, a whole batch per call.

Generated code is never ``exec``-ed in the trainer (Text2Reward, Eureka and Auto MC-Reward
all did). One :class:`Sandbox` owns one persistent worker (``_runner.py``), started with

* an **empty environment** (plus single-threaded BLAS variables) and ``python -I``
  (no PYTHON* variables, no user site, the script's directory not on the path);
* **resource limits** applied before the interpreter starts: ``RLIMIT_AS`` (address
  space: a memory bomb gets MemoryError or dies, the parent does not), ``RLIMIT_CPU``
  (a hard cap over the worker's life; the worker also lowers its soft limit to "used so
  far + ``cpu_s``" before every call, so each call has its own CPU budget and SIGXCPU
  ends a spinning program), ``RLIMIT_FSIZE = 0`` (no file can be written),
  ``RLIMIT_NPROC`` at the user's current count (no fork), ``RLIMIT_CORE = 0``;
* a **wall-clock timeout** per call in this process: past it, the worker's process group
  is killed (SIGKILL) and the next call starts a fresh worker (the program reloaded);
* **no network**: ``socket``/``ssl``/``subprocess``/``ctypes``... are unimportable in the
  worker, its ``__import__`` admits only ``math`` and ``numpy``, and the AST whitelist
  rejects the names before that. Not enforced: kernel-level isolation (no namespaces,
  seccomp or chroot; the worker runs as the same user and could read files if a program
  found a way past both the whitelist and the restricted builtins).

Batches travel as ``.npz`` bytes over the worker's pipes, read with ``allow_pickle=False``.
A persistent worker keeps the per-call overhead to serialisation plus one pipe round trip
(``benchmarks/reward_code_sandbox.py`` measures it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RUNNER = Path(__file__).with_name("_runner.py")


class SandboxError(RuntimeError):
    """The program failed in the sandbox; ``kind`` is one of error, timeout, cpu, memory, crashed."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class SandboxLimits:
    """Per-worker limits (config keys ``reward.params.sandbox.*``)."""

    cpu_s: float = 10.0  # CPU seconds per call (load or batch)
    wall_s: float = 20.0  # wall-clock seconds per call before the worker is killed
    memory_mb: int = 2048  # address-space limit of the worker (numpy itself needs ~300 MB of it)
    cpu_total_s: int = 3600  # hard CPU cap over the worker's whole life
    start_s: float = 30.0  # wall-clock limit for the worker to start (import numpy)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, where: str = "reward.params.sandbox") -> SandboxLimits:
        cfg = dict(cfg or {})
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}")
        out = cls(**cfg)
        if out.cpu_s <= 0 or out.wall_s <= 0 or out.memory_mb < 256 or out.cpu_total_s < 1:
            raise ValueError(f"{where}: cpu_s and wall_s must be > 0, memory_mb >= 256, cpu_total_s >= 1; got {out}")
        return out


def _limit_child(limits: SandboxLimits) -> Any:
    mem = int(limits.memory_mb) * 2**20
    nproc = _current_nproc()

    def apply() -> None:  # runs in the child between fork and exec
        os.setsid()  # own process group: a kill reaches anything it might have started
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (int(limits.cpu_total_s), int(limits.cpu_total_s)))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return apply


def _current_nproc() -> int | None:
    """The user's process count now plus a margin: the worker cannot fork beyond it.
    (RLIMIT_NPROC counts all of the user's processes; other jobs may start more meanwhile.)"""
    try:
        n = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and p.stat().st_uid == os.getuid())
    except OSError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    want = n + 64
    return None if soft != resource.RLIM_INFINITY and want > soft else want


class Sandbox:
    """A persistent worker running one program: ``load(source)`` then ``__call__(obs, action, next_obs)``."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.proc: subprocess.Popen[bytes] | None = None
        self.source: str | None = None
        self.restarts = 0
        self.calls = 0

    # ---- lifecycle ----------------------------------------------------------
    def _start(self) -> None:
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen([sys.executable, "-I", str(RUNNER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/",
                                     preexec_fn=_limit_child(self.limits), close_fds=True)
        hello = self._recv(self.limits.start_s, "start")
        if not hello.get("ready"):
            self.close()
            raise SandboxError(f"the sandbox worker did not start: {hello}", "crashed")

    def close(self) -> None:
        """Kill the worker (its whole process group) and reap it."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
        for f in (p.stdin, p.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        p.wait(timeout=10)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        with contextlib.suppress(Exception):
            self.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # ---- protocol -----------------------------------------------------------
    def _send(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        h = json.dumps(dict(header)).encode()
        payload = b""
        if arrays:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            payload = buf.getvalue()
        try:
            self.proc.stdin.write(struct.pack("<Q", len(h)) + h + struct.pack("<Q", len(payload)) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            self._died("send", e)

    def _read(self, n: int, deadline: float, what: str) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise SandboxError(f"the program ran past the wall-clock limit of {self.limits.wall_s:g} s "
                                   f"during {what}; the worker was killed", "timeout")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                self._died(what)
            buf += chunk
        return bytes(buf)

    def _died(self, what: str, err: Exception | None = None) -> None:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        self.close()
        if rc == -signal.SIGXCPU or rc == -signal.SIGKILL and what != "start":
            kind, why = "cpu", f"the program used more than its CPU-time limit ({self.limits.cpu_s:g} s)"
        elif rc is not None and rc < 0:
            kind, why = "crashed", f"the worker died from signal {signal.Signals(-rc).name}"
        else:
            kind, why = "crashed", f"the worker exited (status {rc})"
        raise SandboxError(f"{why} during {what}" + (f" ({err})" if err else ""), kind)

    def _recv(self, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        (hl,) = struct.unpack("<Q", self._read(8, deadline, what))
        header = json.loads(self._read(hl, deadline, what))
        (pl,) = struct.unpack("<Q", self._read(8, deadline, what))
        payload = self._read(pl, deadline, what) if pl else b""
        if payload:
            with np.load(io.BytesIO(payload), allow_pickle=False) as z:
                header["_arrays"] = {k: z[k] for k in z.files}
        return header

    def _request(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None, what: str) -> dict[str, Any]:
        if self.proc is None:
            self._start()
        self._send(header, arrays)
        reply = self._recv(self.limits.wall_s, what)
        if not reply.get("ok"):
            raise SandboxError(str(reply.get("error", "unknown error")), str(reply.get("kind", "error")))
        return reply

    # ---- API ------------------------------------------------------------------
    def load(self, source: str) -> None:
        """Start the worker if needed and execute the program's module body there."""
        self.source = source
        try:
            self._request({"op": "load", "source": source, "cpu_s": self.limits.cpu_s}, None, "load")
        except SandboxError:
            self.close()
            raise

    def __call__(self, obs: Mapping[str, np.ndarray], action: np.ndarray,
                 next_obs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Reward (B,) and components {name: (B,)} for one batch. A killed worker is restarted
        (and the program reloaded) on the next call, so one bad batch does not end a run."""
        if self.source is None:
            raise SandboxError("no program loaded (call load(source) first)")
        if self.proc is None:
            self.restarts += 1
            self.load(self.source)
        arrays = {"action": np.asarray(action, np.float64)}
        arrays.update({f"obs/{k}": np.asarray(v) for k, v in obs.items()})
        arrays.update({f"next/{k}": np.asarray(v) for k, v in next_obs.items()})
        self.calls += 1
        reply = self._request({"op": "call"}, arrays, "a batch")
        got = reply.get("_arrays", {})
        comps = {name: got[f"c{i}"] for i, name in enumerate(reply.get("components", []))}
        return got["reward"], comps


__all__ = ["RUNNER", "Sandbox", "SandboxError", "SandboxLimits"]
