"""``clustersim validate [--csv FILE] [--fidelity flow|analytic] [--only ...] [--cross]``.

Predicts every bundled published measurement and prints predicted against measured with the
error, then the median and max absolute error: nccl-tests collectives
(:mod:`clustersim.validate.collectives`), end-to-end training runs
(:mod:`clustersim.validate.training`), frontier runs of zero-bubble schedules and FP8 training
that no calibration is fitted on (:mod:`clustersim.validate.frontier`) and energy plausibility
(:mod:`clustersim.validate.energy`).
``--cross`` predicts each publication's training runs with a calibration fitted without it
(:func:`clustersim.calibrate.training.cross_validate`), the figures to quote.
"""

from __future__ import annotations

HELP = "predict the bundled published measurements and report the error of every row"

__all__ = ["HELP", "add_arguments", "run"]



def _errors(stats) -> str:
    """``N rows, median |error| x%, max |error| y%`` of a validation summary."""
    return (f"{stats['rows']} rows, median |error| {stats['median_abs_error']:.1%}, "
            f"max |error| {stats['max_abs_error']:.1%}")


def _print_summary(summary, why_apart: str) -> None:
    """The summary line, then each row reported apart with its error and ``why_apart``."""
    print(f"summary: {_errors(summary)}")
    for row_id, error in summary["conflicting"].items():
        print(f"  apart: {row_id} {error:+.1%} ({why_apart})")


def add_arguments(parser) -> None:
    parser.add_argument("--csv", default=None, metavar="FILE",
                        help="also write every row (both tables) to FILE")
    parser.add_argument("--fidelity", choices=["flow", "analytic"], default="flow",
                        help="fidelity for the training and frontier runs (default: flow)")
    parser.add_argument("--only", choices=["collectives", "training", "frontier", "energy"],
                        default=None,
                        help="validate one table only")
    parser.add_argument("--cross", action="store_true",
                        help="training runs, leave one publication out: each predicted by a "
                             "calibration fitted on the others (analytic, ~2 min)")


def _print_table(frame, columns, title: str) -> None:
    import pandas as pd  # imported on use: `clustersim --help` loads every subcommand module

    print(f"\n{title}")
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 40, "display.float_format", "{:.4g}".format):
        print(frame[columns].to_string(index=False))


def _cross(args) -> int:
    # the fits run the simulator: imported on use
    import pandas as pd

    from clustersim.calibrate.training import cross_validate

    cross = cross_validate()
    _print_table(cross, ["id", "left_out", "devices", "measured_step_s", "predicted_step_s",
                         "error"], "training runs, each publication left out of the fit")
    errors = cross.assign(abs_error=cross["error"].abs())
    per = errors.groupby("left_out")["abs_error"].agg(["count", "median", "max"])
    print(per.to_string(float_format="{:.1%}".format))
    print(f"summary: {len(errors)} rows, median |error| {errors['abs_error'].median():.1%}, "
          f"max |error| {errors['abs_error'].max():.1%} (cross-validated)")
    if args.csv:
        pd.DataFrame(cross).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


def run(args) -> int:
    if args.cross:
        return _cross(args)
    # pandas and each table's validation (which runs the simulator) are imported on use:
    # `clustersim --help` loads every subcommand module, and --only skips the other tables
    import pandas as pd

    tables = []
    if args.only in (None, "collectives"):
        from clustersim.validate.collectives import collective_validation, summarize

        coll = collective_validation()
        _print_table(coll, [c for c in ("id", "collective", "devices", "size_bytes",
                                        "measured_busbw_GBps", "predicted_busbw_GBps",
                                        "error") if c in coll.columns],
                     "nccl-tests collectives: predicted vs measured bus bandwidth")
        print("summary:", summarize(coll))
        tables.append(coll.assign(table="collectives"))
    if args.only in (None, "training"):
        from clustersim.validate.training import summarize, training_validation

        train = training_validation(fidelity=args.fidelity)
        _print_table(train, ["id", "model", "devices", "tp", "pp", "measured_step_s",
                             "predicted_step_s", "error", "status"],
                     f"training runs ({args.fidelity}): predicted vs measured step time")
        _print_summary(summarize(train), "its published figure contradicts its stated "
                       "configuration: clustersim.validate.training.CONFLICTING_ROWS")
        tables.append(train.assign(table="training"))
    if args.only in (None, "frontier"):
        from clustersim.validate.frontier import frontier_validation
        from clustersim.validate.frontier import summarize as frontier_summary

        front = frontier_validation(fidelity=args.fidelity)
        _print_table(front, ["id", "devices", "tp", "pp", "dp", "schedule", "precision",
                             "measured_step_s", "predicted_step_s", "error", "bubble_s",
                             "exposed_comm_s", "peak_memory_gib", "measured_memory_gib", "status"],
                     f"frontier runs (never fitted; {args.fidelity}): predicted vs measured "
                     "step time")
        summary = frontier_summary(front)
        for family, fam in summary["families"].items():
            print(f"  {family}: {_errors(fam)}")
        _print_summary(summary, "its stated configuration contradicts first principles: "
                       "clustersim.validate.frontier.CONFLICTING_ROWS")
        tables.append(front.assign(table="frontier"))
    if args.only in (None, "energy"):
        from clustersim.validate.energy import energy_validation

        energy = energy_validation(fidelity=args.fidelity)
        _print_table(energy, [c for c in ("id", "quantity", "published", "predicted", "ratio",
                                          "within_factor_2") if c in energy.columns],
                     "energy plausibility: predicted vs published")
        tables.append(energy.assign(table="energy"))
    if args.csv:
        pd.concat(tables, ignore_index=True).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0
