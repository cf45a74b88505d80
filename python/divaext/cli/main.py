"""``divaext detect | reweight | extend | demo``: the workflows from the command line.

Features come from .npy/.npz/.pt files, labels from .npy/.npz/.pt or a .csv/.tsv/.parquet
table read by pandas (see :mod:`divaext.io`); results go to a CSV, TSV or JSON file chosen by
its extension, with the settings used (inside the JSON, or in a ``.meta.json`` file next to
the CSV/TSV), plus an optional plot. Output locations are checked before any computation, and
every output is staged in a temporary file and moved into place only when the whole command
has succeeded, so a failing, interrupted (Ctrl-C) or terminated (SIGTERM) command leaves
nothing behind. Errors print one line ``divaext <command>: error: <what is wrong>`` to stderr
and exit with status 1 (2 for bad command-line usage, as argparse does; 130 / 143 after
SIGINT / SIGTERM).

Here: the entry point (``main``, the ``divaext`` console script and ``python -m divaext``);
the parser is in :mod:`divaext.cli.parser`, the subcommands in :mod:`divaext.cli.commands`,
the steps they share in :mod:`divaext.cli.steps`.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import List, Optional

from .. import io as dio
from .commands import cmd_demo, cmd_detect, cmd_embed, cmd_extend, cmd_reweight
from .parser import LOSSES, build_parser  # noqa: F401  (LOSSES: divaext.cli.LOSSES, as before)
from .steps import Classes


COMMANDS = {"detect": cmd_detect, "reweight": cmd_reweight, "extend": cmd_extend, "embed": cmd_embed,
            "demo": cmd_demo}


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so that staged outputs are discarded (as on Ctrl-C)."""


@contextlib.contextmanager
def _sigterm_raises():
    """While the command runs, SIGTERM raises :class:`_Terminated` instead of killing the
    process outright, which would leave the staged temporary files behind."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI on ``argv`` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2; argparse printed it)
        return int(e.code or 0)
    args.classes = Classes()
    try:
        with _sigterm_raises():
            COMMANDS[args.command](args)
    except (dio.InputError, ValueError, TypeError, RuntimeError, ImportError, OSError) as e:
        message = str(e)
        if message.startswith("divaext: "):
            message = message[len("divaext: "):]
        print(f"divaext {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"divaext {args.command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"divaext {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
