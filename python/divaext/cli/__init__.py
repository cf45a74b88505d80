"""The ``divaext`` command: ``divaext detect | reweight | extend | demo``.

| module | what it holds |
| --- | --- |
| ``main`` | the entry point ``main`` (console script, ``python -m divaext``), signals, errors |
| ``parser`` | the argument parser, one place for every flag and its default |
| ``commands`` | one function per subcommand |
| ``steps`` | the steps the subcommands share (read inputs, classes, plots, reports) |
"""
from __future__ import annotations

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """The ``divaext`` console script: ``--version`` answers before torch is imported."""
    args = sys.argv[1:] if argv is None else argv
    if list(args) == ["--version"]:
        from .. import __version__
        print(f"divaext {__version__}")
        return 0
    from .main import main as run
    return run(argv)


def __getattr__(name):  # the parser imports torch (the loss names come from the compiled core)
    if name in ("LOSSES", "build_parser"):
        from . import parser
        return getattr(parser, name)
    raise AttributeError(f"module 'divaext.cli' has no attribute {name!r}")


__all__ = ["main", "build_parser", "LOSSES"]
