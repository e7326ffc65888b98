"""A write that fails half-way leaves the previous file exactly as it was."""

import pytest

from common.atomic import atomic_open


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "ckpt.bin"
    with atomic_open(target) as f:
        f.write(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write(b"new but incomp")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["ckpt.bin"]
    with atomic_open(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
