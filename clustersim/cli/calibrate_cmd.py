"""``clustersim calibrate [--check] [--only training]``.

Refits every fitted number of the catalog from the bundled measurements (see
:mod:`clustersim.calibrate.refit`), prints predicted against measured on the rows each fit
used and on the rows it held out, apart, and writes the values into the catalog files.
``--check`` writes nothing and exits 1 when a committed value differs from its refit by more
than 1% or lies outside its physical bounds (CI runs it).
"""

from __future__ import annotations

HELP = "refit the calibrated catalog values from the bundled data (--check: verify only)"

__all__ = ["HELP", "add_arguments", "run"]

_TOLERANCE = 0.01


def add_arguments(parser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="refit without writing; exit 1 if a committed value is off by "
                             "more than 1%% or outside its bounds")
    parser.add_argument("--only", choices=["training", "collectives"], default=None,
                        help="refit one family of values only")


def run(args) -> int:
    # the fits run the simulator: imported on use (`clustersim --help` loads every command)
    import pandas as pd

    from clustersim.calibrate.refit import refit, summary, write_refits

    values, extra, reports, problems = refit(args.only)
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        for name, report in reports.items():
            print(f"\n{name}: predicted vs measured on every row (role: fitted / held-out)")
            print(report.to_string(index=False))
            print(summary(report).to_string())
    print("\nvalues: committed -> refit")
    for v in values:
        print(f"  {v.name:60s} {v.committed:10.4g} -> {v.refit:10.4g}   "
              f"bounds [{v.bounds[0]:g}, {v.bounds[1]:g}]")
        problems += v.problems(_TOLERANCE)
    if args.check:
        for p in problems:
            print(f"check: {p}")
        print("check: ok" if not problems else f"check: {len(problems)} problem(s)")
        return 1 if problems else 0
    for file in write_refits(values, extra):
        print(f"wrote {file}")
    return 0
