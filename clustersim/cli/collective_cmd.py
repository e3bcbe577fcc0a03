"""``clustersim collective --topology NAME --devices N --op OP --sizes 1KiB:8GiB``: an
nccl-tests-style table of one collective on a built topology.

``--explain`` adds, per size, every candidate algorithm/protocol's time and why the chosen
one won (its margin over the runner-up).

Sizes are ``FIRST:LAST`` (doubling from FIRST while not past LAST, as nccl-tests' ``-f 2``) or a
comma list. busbw is nccl-tests' (algbw x 2(p-1)/p for all_reduce, (p-1)/p for all_gather,
reduce_scatter and all_to_all, 1 otherwise).

>>> parse_sizes("1KiB:8KiB")
[1024.0, 2048.0, 4096.0, 8192.0]
>>> parse_sizes("1MB,3MB")
[1000000.0, 3000000.0]
"""

from __future__ import annotations

import csv

from clustersim.cli.overrides import add_set_argument, parse_sets
from clustersim.errors import InputError
from clustersim.units import UnitError, parse

HELP = "nccl-tests-style table of one collective (time, algbw, busbw per size) on a topology"

__all__ = ["HELP", "add_arguments", "run", "parse_sizes", "collective_rows", "collective_table",
           "explain_table", "format_rows", "COLUMNS"]

COLUMNS = ("size_bytes", "time_us", "algbw_GBps", "busbw_GBps", "algorithm")
_MAX_SIZES = 4096


def add_arguments(parser) -> None:
    parser.add_argument("--topology", required=True,
                        help="a preset (see `clustersim presets`) or a topology YAML file")
    parser.add_argument("--devices", type=int, default=None, help="devices to build")
    parser.add_argument("--ranks", type=int, default=None,
                        help="group size: the first RANKS devices (default: all)")
    parser.add_argument("--op", required=True, help="all_reduce, all_gather, reduce_scatter, "
                        "all_to_all, broadcast, reduce, send_recv")
    parser.add_argument("--sizes", required=True,
                        help="FIRST:LAST doubling (e.g. 1KiB:8GiB) or a comma list")
    parser.add_argument("--algorithm", default="auto",
                        help="auto (default: the fastest), nccl (as NCCL's tuner would choose), ring, tree, "
                             "rhd, direct, hierarchical, multidim, "
                             "nvls, sharp, pat, pxn; optionally /ll128, /ll or /simple")
    parser.add_argument("--skew", type=float, default=1.0,
                        help="all_to_all imbalance: hottest / coldest destination (1 = uniform)")
    parser.add_argument("--explain", action="store_true",
                        help="after the table, each candidate's time per size and why the "
                             "chosen one won")
    add_set_argument(parser)
    parser.add_argument("--csv", default=None, metavar="FILE", help="also write the table")


def parse_sizes(text: str) -> list[float]:
    """Sizes in bytes from ``FIRST:LAST`` (doubling) or ``A,B,C``."""
    def one(s: str) -> float:
        s = s.strip()
        try:
            value = float(s) if s.replace(".", "", 1).isdigit() else parse(s, "size")
        except UnitError as exc:
            raise InputError(f"--sizes: cannot read {s!r} as a size ({exc}); write e.g. "
                             f"1KiB:8GiB or 1MiB,4MiB") from None
        if value <= 0:
            raise InputError(f"--sizes: sizes must be positive, got {s!r}")
        if value != int(value):   # a buffer holds whole bytes: 0.5B is a typo, not 0 bytes
            raise InputError(f"--sizes: {s!r} is {value:g} bytes, not a whole number of "
                             f"bytes; write e.g. 512B or 1KiB")
        return value

    text = str(text).strip()
    if not text:
        raise InputError("--sizes is empty; write e.g. 1KiB:8GiB or 1MiB,4MiB")
    if ":" in text:
        first, sep, last = text.partition(":")
        lo, hi = one(first), one(last)
        if hi < lo:
            raise InputError(f"--sizes {text!r}: the last size is below the first")
        sizes = [lo]
        while sizes[-1] * 2 <= hi * (1 + 1e-12) and len(sizes) < _MAX_SIZES:
            sizes.append(sizes[-1] * 2)
        return sizes
    return [one(s) for s in text.split(",")]


def collective_rows(cluster, group, op: str, sizes, algorithm: str = "auto",
                    skew: float = 1.0) -> list[tuple]:
    """The table's rows, one tuple per size (columns COLUMNS)."""
    # imported on use (numba, networkx): `clustersim --help` loads every subcommand module
    from clustersim.collectives.op_types import bus_factor, check_op
    from clustersim.collectives.select import price

    check_op(op)
    times, algos = price(cluster, group, op, sizes, algorithm, skew=skew)
    factor = bus_factor(op, len(group))
    rows = []
    for s, t, a in zip(sizes, times, algos):
        algbw = s / t / 1e9 if t > 0 else float("inf")
        rows.append((int(s), float(t) * 1e6, float(algbw), float(algbw * factor), str(a)))
    return rows


def collective_table(cluster, group, op: str, sizes, algorithm: str = "auto",
                     skew: float = 1.0):
    """The table as a DataFrame (columns COLUMNS)."""
    # pandas on use: the command itself prints and writes the rows without it (0.3 s)
    import pandas as pd

    return pd.DataFrame(collective_rows(cluster, group, op, sizes, algorithm, skew),
                        columns=list(COLUMNS))


def format_rows(rows: list[tuple], columns) -> str:
    """Rows as ``DataFrame.to_string(index=False)`` prints them with floats to 2 decimals
    (the same text, without importing pandas for it): every column right-justified, one
    space apart, a numeric column's header one space wider than its name.

    >>> print(format_rows([(1024, 5.5, "ring/ll")], ("size_bytes", "time_us", "algorithm")))
     size_bytes  time_us algorithm
           1024     5.50   ring/ll
    """
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    numeric = [bool(rows) and all(isinstance(row[i], (int, float)) for row in rows)
               for i in range(len(columns))]
    header = [(" " if num else "") + name for name, num in zip(columns, numeric)]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(header)]
    lines = [header] + cells
    return "\n".join(" ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def _write_csv(path: str, rows: list[tuple], columns) -> None:
    """The rows as CSV; a float is written by repr, as pandas' ``to_csv`` writes it."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def explain_table(cluster, group, op: str, sizes, algorithm: str = "auto"):
    """Per size: every candidate's time (us), the one chosen and why (``auto``: its margin
    over the runner-up; ``nccl``: chosen by NCCL's beliefs, and how it compares with the
    fastest), as a DataFrame."""
    # imported on use: `clustersim --help` loads every subcommand module
    import numpy as np
    import pandas as pd

    from clustersim.collectives.select import candidate_times, price

    names, times = candidate_times(cluster, group, op, sizes, algorithm)
    _, chosen = price(cluster, group, op, sizes, algorithm)
    rows = []
    for k, s in enumerate(sizes):
        order = [int(i) for i in np.argsort(times[:, k])]
        pick = names.index(str(chosen[k])) if str(chosen[k]) in names else order[0]
        if len(order) == 1:
            why = "the only candidate"
        elif pick == order[0]:
            why = (f"{(times[order[1], k] / times[pick, k] - 1) * 100:.1f}% faster than "
                   f"{names[order[1]]}")
        else:
            why = (f"NCCL's tuner believes it fastest; {names[order[0]]} is "
                   f"{(times[pick, k] / times[order[0], k] - 1) * 100:.1f}% faster here")
        rows.append([int(s)] + [t * 1e6 for t in times[:, k]] + [names[pick], why])
    return pd.DataFrame(rows, columns=["size_bytes"] + [f"{n}_us" for n in names]
                        + ["chosen", "why"])


def run(args) -> int:
    # imported on use (numba, networkx): `clustersim --help` loads every subcommand module
    from clustersim.collectives.op_types import check_op
    from clustersim.network import build_cluster

    check_op(args.op)
    sizes = parse_sizes(args.sizes)
    if args.devices is not None and args.devices < 1:
        raise InputError(f"--devices must be a positive integer, got {args.devices}")
    cluster = build_cluster(args.topology, args.devices, parse_sets(args.set))
    ranks = len(cluster.devices) if args.ranks is None else args.ranks
    if not 1 <= ranks <= len(cluster.devices):
        raise InputError(f"--ranks {ranks}: the group must hold 1 to {len(cluster.devices)} "
                         f"devices (the topology was built with {len(cluster.devices)})")
    if ranks < 2:
        raise InputError(f"a collective on {ranks} device moves nothing (its bandwidth would "
                         f"be inf/NaN); give --devices or --ranks of 2 or more")
    group = cluster.devices[:ranks]
    rows = collective_rows(cluster, group, args.op, sizes, args.algorithm, args.skew)
    print(f"# {args.op} on {ranks} of {len(cluster.devices)} x {cluster.device.name} "
          f"({cluster.name})")
    print(format_rows(rows, COLUMNS))
    if getattr(args, "explain", False):
        why = explain_table(cluster, group, args.op, sizes, args.algorithm)
        rule = ("chosen as NCCL's tuner believes (tuning.cc), charged at this model's price"
                if args.algorithm == "nccl" else "the fastest by this model's prices wins")
        print(f"\n# why: every candidate's time (us); {rule}")
        print(why.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    if args.csv:
        _write_csv(args.csv, rows, COLUMNS)
        print(f"wrote {args.csv}")
    return 0
