"""The ``divaext`` command: ``divaext detect | reweight | extend | demo``.

| module | what it holds |
| --- | --- |
| ``main`` | the entry point ``main`` (console script, ``python -m divaext``), signals, errors |
| ``parser`` | the argument parser, one place for every flag and its default |
| ``commands`` | one function per subcommand |
| ``steps`` | the steps the subcommands share (read inputs, classes, plots, reports) |
"""
from .main import main
from .parser import LOSSES, build_parser

__all__ = ["main", "build_parser", "LOSSES"]
