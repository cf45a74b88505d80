"""divaext.io.atomic: a file appears whole or not at all (the feature cache and the CLI's
staged outputs both write through it)."""
from __future__ import annotations

import os

import pytest

from divaext.io.atomic import atomic_write


def test_atomic_write_creates_the_directory_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    atomic_write(str(path), lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(path.parent) == ["out.bin"]
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()  # not mkstemp's 0600


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise KeyboardInterrupt  # Ctrl-C too

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
