"""``clustersim validate``."""

from __future__ import annotations

from clustersim.errors import InputError

HELP = "validate (coming with the validate issue)"


def add_arguments(parser) -> None:
    parser.add_argument("rest", nargs="*")


def run(args) -> int:
    raise InputError("`clustersim validate` is not available yet")
