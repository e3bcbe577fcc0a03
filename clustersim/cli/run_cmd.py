"""``clustersim run EXP.yaml``: run an experiment and its sweep, write results, report and plots.

Exit code 0 when the sweep finished, even if some scenarios are infeasible, oom or errors (they
are rows with a reason); 2 when the experiment file is wrong.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="clustersim run")
>>> add_arguments(parser)
>>> args = parser.parse_args(["exp.yaml", "--workers", "4", "--resume"])
>>> args.experiment, args.workers, args.resume, args.executor
('exp.yaml', 4, True, None)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from clustersim.errors import InputError

__all__ = ["HELP", "add_arguments", "run", "summary_table", "failure_summary",
           "SUMMARY_COLUMNS", "SUMMARY_ROWS", "FAILURE_REASONS"]

HELP = "run an experiment file (and its sweep); write results, a report and plots"
SUMMARY_COLUMNS = ("scenario", "status", "step_time_s", "tokens_per_s", "mfu", "peak_memory_gib")
SUMMARY_ROWS = 30  # beyond this the summary shows the first and last rows
FAILURE_REASONS = 5  # distinct reasons printed; report.md lists every failure


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``clustersim run`` (DESIGN.md; stable)."""
    parser.add_argument("experiment", help="experiment YAML file")
    parser.add_argument("--out", metavar="DIR",
                        help="output directory (default: output.dir, else results/<name>)")
    parser.add_argument("--workers", type=_positive, metavar="N",
                        help="parallel worker processes (default: number of cores)")
    parser.add_argument("--executor", choices=("auto", "local", "dask", "serial"),
                        help="auto (default: in this process while the sweep is short, then "
                             "a local pool), local process pool, dask.distributed, or serial "
                             "in this process; --scheduler implies dask")
    parser.add_argument("--scheduler", metavar="ADDR",
                        help="dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: start "
                             "a local dask cluster)")
    parser.add_argument("--resume", action="store_true",
                        help="keep scenarios already stored in the output directory")
    parser.add_argument("--trace", action="store_true",
                        help="write a Chrome/Perfetto trace per scenario to DIR/traces")
    parser.add_argument("--max-scenarios", type=_positive, metavar="N", default=None,
                        help="refuse a sweep of more points (default 1,000,000)")


def summary_table(frame, swept_keys: Sequence[str] = (), max_rows: int = SUMMARY_ROWS) -> str:
    """The compact table printed after a run: key results and the swept values.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"scenario": ["a/0000"], "status": ["ok"], "step_time_s": [1.23456],
    ...                       "mfu": [0.41], "cluster.devices": [64]})
    >>> print(summary_table(frame, ["cluster.devices"]))
    scenario status  step_time_s  mfu  cluster.devices
      a/0000     ok        1.235 0.41               64
    """
    columns = [c for c in (*SUMMARY_COLUMNS, *swept_keys) if c in frame.columns]
    width = int(frame["scenario"].str.len().max()) if len(frame) else 0
    return frame[columns].to_string(index=False, max_rows=max_rows, na_rep="-",
                                    float_format=lambda x: f"{x:.4g}",
                                    formatters={"scenario": lambda s: str(s).ljust(width)})


def failure_summary(frame, limit: int = FAILURE_REASONS) -> list[str]:
    """The most common reasons scenarios did not finish ok, with how many hit each.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"status": ["ok", "error", "error", "oom"],
    ...                       "error": [None, "boom", "boom", "needs 90 GiB"]})
    >>> failure_summary(frame)
    ['2 error: boom', '1 oom: needs 90 GiB']
    """
    failed = frame[frame["status"] != "ok"]
    first_lines = failed["error"].fillna("").astype(str).str.split("\n").str[0]
    counts = (failed.assign(reason=first_lines).groupby(["status", "reason"], sort=False)
              .size().sort_values(ascending=False, kind="stable"))
    return [f"{n} {status}: {reason}" for (status, reason), n in counts.head(limit).items()]


def run(args: argparse.Namespace) -> int:
    """Run the experiment; print the summary and where the files are."""
    # imported on use (pandas, the simulator): `clustersim --help` loads every subcommand
    from clustersim.experiment.runner import run_experiment
    from clustersim.experiment.sweep import MAX_SCENARIOS

    executor = args.executor or ("dask" if args.scheduler else "auto")
    if args.scheduler and executor != "dask":
        raise InputError(f"--scheduler needs --executor dask (got --executor {executor})")
    frame = run_experiment(args.experiment, out_dir=args.out, workers=args.workers,
                           executor=executor, scheduler=args.scheduler, resume=args.resume,
                           trace=args.trace, max_scenarios=args.max_scenarios or MAX_SCENARIOS)
    print(summary_table(frame, frame.attrs.get("swept_keys", ())))
    counts = frame["status"].value_counts()
    print(f"\n{len(frame)} scenarios: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for line in failure_summary(frame):
        print(f"  {line}")
    if frame.attrs.get("headline"):
        print(f"\nanswer: {frame.attrs['headline']}")
    out = Path(frame.attrs.get("output_dir", "."))
    written = [out / "results.csv", out / "results.parquet", out / "report.md"]
    print("wrote " + ", ".join(str(p) for p in written if p.exists()))
    for folder, what in (("logs", "tracebacks of runs that raised"), ("traces", "traces")):
        if any((out / folder).glob("*")):
            print(f"{what} in {out / folder}")
    return 0
