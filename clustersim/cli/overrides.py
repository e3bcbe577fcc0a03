"""``--set KEY=VALUE`` options: the same dotted overrides as ``cluster.overrides``.

Values are read as YAML scalars (so ``--set scale_out.oversubscription=2`` is a number and
``--set scale_out.bandwidth="25 GB/s"`` a quantity string).

>>> parse_sets(["scale_out.bandwidth=25 GB/s", "scale_out.oversubscription=2"])
{'scale_out.bandwidth': '25 GB/s', 'scale_out.oversubscription': 2}
"""

from __future__ import annotations

from clustersim.config.yamlio import load_yaml
from clustersim.errors import InputError

__all__ = ["parse_sets", "add_set_argument"]


def add_set_argument(parser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a topology parameter (dotted key), repeatable")


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: write KEY=VALUE, e.g. "
                             f"--set scale_out.bandwidth='25 GB/s'")
        parsed = load_yaml(f"v: {value}" if value.strip() else "v: ''", "--set").data["v"]
        out[key.strip()] = parsed
    return out
