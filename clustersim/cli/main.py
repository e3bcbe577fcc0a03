"""Argument parsing and exit codes; each subcommand lives in its own module.

>>> main(["--version"])  # doctest: +SKIP
clustersim 0.1.0
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
import traceback

from clustersim.errors import InputError
from clustersim.version import __version__

__all__ = ["main", "COMMANDS"]

# name -> module under clustersim.cli that defines `add_arguments(parser)` and `run(args)`
COMMANDS = {
    "run": "run_cmd",
    "validate": "validate_cmd",
    "topology": "topology_cmd",
    "collective": "collective_cmd",
    "presets": "presets_cmd",
    "calibrate": "calibrate_cmd",
}


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage already; keep its message to one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _load(name: str):
    return importlib.import_module(f"clustersim.cli.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clustersim", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--version", action="version", version=f"clustersim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        module = _load(name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
    return parser


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or no real file behind stdout
        return False


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0 done, 2 bad input, 1 anything else)."""
    args = build_parser().parse_args(argv)
    try:
        return int(_load(args.command).run(args) or 0)
    except InputError as exc:
        print(f"error: {exc}" if not exc.file else str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if _stdout_closed():  # `clustersim ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
            return 0
        traceback.print_exc()  # another pipe (a worker's, multiprocessing's): our problem
        return 1
    except Exception:  # anything else is our bug: show it in full
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
