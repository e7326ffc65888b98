"""The program store: every reward program kept with where it came from and how it did.

One directory per program under the store root::

    <root>/<id>/program.py   the source, exactly as checked and run
    <root>/<id>/meta.json    origin (llm | hand-written | file), model, prompt messages,
                             generation parameters, parent id, round/sample, static and
                             execution check results, scores, and the runs that used it

Ids are ``<4-digit sequence>-<first 8 hex of the source's sha256>``: sortable by creation
and tied to the content. A config picks a program by id (``reward.params.program``).
Writes go through ``common.atomic.atomic_open`` so a crash never leaves half a file.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.atomic import atomic_open

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "reward_programs"


class ProgramStore:
    """Directory-backed store; see the module doc for the layout."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else DEFAULT_ROOT

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "meta.json").is_file())

    def add(self, source: str, **meta: Any) -> str:
        """Store ``source`` with ``meta`` (origin, model, prompt, params, parent, checks, scores...); returns the id."""
        self.root.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256(source.encode()).hexdigest()
        seq = 1 + max((int(i.split("-")[0]) for i in self.ids() if i.split("-")[0].isdigit()), default=0)
        pid = f"{seq:04d}-{sha[:8]}"
        d = self.root / pid
        d.mkdir(parents=True, exist_ok=False)
        with atomic_open(d / "program.py") as f:
            f.write(source.encode())
        record = {"id": pid, "sha256": sha, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "origin": "llm",
                  "parent": None, "checks": None, "scores": None, "runs": [], **meta}
        self._write(pid, record)
        return pid

    def _write(self, pid: str, record: Mapping[str, Any]) -> None:
        with atomic_open(self.root / pid / "meta.json") as f:
            f.write(json.dumps(record, indent=2, default=_jsonable).encode())

    def has(self, pid: str) -> bool:
        return (self.root / pid / "meta.json").is_file()

    def source(self, pid: str) -> str:
        self._require(pid)
        return (self.root / pid / "program.py").read_text()

    def meta(self, pid: str) -> dict[str, Any]:
        self._require(pid)
        return json.loads((self.root / pid / "meta.json").read_text())

    def update(self, pid: str, **fields: Any) -> dict[str, Any]:
        rec = self.meta(pid)
        rec.update(fields)
        self._write(pid, rec)
        return rec

    def add_run(self, pid: str, run: Mapping[str, Any]) -> None:
        """Record that a run (training, evaluation) used the program."""
        rec = self.meta(pid)
        rec.setdefault("runs", []).append(dict(run))
        self._write(pid, rec)

    def _require(self, pid: str) -> None:
        if not self.has(pid):
            known = self.ids()
            raise KeyError(f"no program {pid!r} in the store {self.root} (it has {known[-10:] if known else 'none'})")

    # ---- commands -------------------------------------------------------------
    def list_rows(self) -> list[str]:
        rows = [f"{'id':15s} {'origin':12s} {'parent':15s} {'round':>5s} {'passed':>6s} {'score':>7s}  model"]
        for pid in self.ids():
            m = self.meta(pid)
            passed = (m.get("checks") or {}).get("passed")
            score = (m.get("scores") or {}).get("score")
            rows.append(f"{pid:15s} {m.get('origin', ''):12s} {str(m.get('parent') or '-'):15s} "
                        f"{str(m.get('round', '-')):>5s} {str(passed if passed is not None else '-'):>6s} "
                        f"{score if isinstance(score, str) else (f'{score:.3f}' if score is not None else '-'):>7s}  "
                        f"{m.get('model', '')}")
        return rows

    def show(self, pid: str) -> str:
        m = self.meta(pid)
        shown = {k: v for k, v in m.items() if k != "prompt"}
        return json.dumps(shown, indent=2) + "\n\n" + self.source(pid)

    def diff(self, a: str, b: str) -> str:
        return "".join(difflib.unified_diff(self.source(a).splitlines(True), self.source(b).splitlines(True),
                                            fromfile=f"{a}/program.py", tofile=f"{b}/program.py"))


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(x)


__all__ = ["DEFAULT_ROOT", "ProgramStore"]
