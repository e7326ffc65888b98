"""Crash-safe file writes: a reader sees the old file or the new one, never half of one.

Checkpoints, replay snapshots and (later) recorded episodes are all written this way:
write to a temporary file beside the target, flush it to disk, then rename it over the
target (``os.replace`` is atomic on POSIX file systems). A process killed mid-write
leaves the previous file intact plus a stray ``.tmp`` file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_open(path: str | os.PathLike, tmp_suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing; the file appears under its name only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + tmp_suffix)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
