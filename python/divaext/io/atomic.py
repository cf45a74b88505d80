"""Files that appear whole or not at all: each is written to a temporary file in its
destination's directory and moved into place with ``os.replace`` (atomic on one file system),
so a reader never sees half a file and a failure leaves no temporary behind."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO, Callable


def temp_beside(final: str) -> str:
    """A new empty file next to ``final`` (same directory, so the later move is atomic), named
    ``.<base>.<random>.tmp<ext>``: its last extension is still final's (the plots choose their
    format by it)."""
    base, ext = os.path.splitext(os.path.basename(final))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(final), prefix=f".{base}.", suffix=f".tmp{ext}")
    os.close(fd)
    return tmp


def publish(tmp: str, final: str) -> None:
    """Move the finished ``tmp`` onto ``final``, with the permissions a new file would get
    (mkstemp creates 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, final)


def remove_quietly(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(tmp)


def atomic_write(path: str, write: Callable[[BinaryIO], object]) -> None:
    """``write(f)`` to a binary temporary file, then move it onto ``path`` (its directory is
    created if needed); on any failure, Ctrl-C included, the temporary is removed and ``path``
    is untouched."""
    final = os.path.abspath(path)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = temp_beside(final)
    try:
        with open(tmp, "wb") as f:
            write(f)
        publish(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise
