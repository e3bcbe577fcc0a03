"""``report.md``: the question, the best scenarios, the failures and why, and the plots.

>>> import pandas as pd, tempfile, pathlib
>>> from types import SimpleNamespace as NS
>>> frame = pd.DataFrame({"scenario": ["a/0000 tp=2", "a/0001 tp=4", "a/0002 tp=8"],
...                       "status": ["ok", "ok", "infeasible"],
...                       "error": [None, None, "tp=8 does not divide 12 heads"],
...                       "step_time_s": [2.0, 1.5, None], "tokens_per_s": [1e5, 1.3e5, None],
...                       "training.parallelism.tp": [2, 4, 8]})
>>> text = render_report(frame, NS(name="a", description="Which tp?"), ["training.parallelism.tp"])
>>> print(text.split("## Failures")[1].strip())
| scenario | status | error |
|---|---|---|
| a/0002 tp=8 | infeasible | tp=8 does not divide 12 heads |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clustersim.experiment.columns import STATUSES
from clustersim.experiment.plots import make_plots

__all__ = ["BEST", "write_report", "render_report", "markdown_table"]

BEST = 5  # rows in each "best scenarios" table
_SHOWN = ("step_time_s", "tokens_per_s", "mfu", "peak_memory_gib", "energy_per_token_j")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def markdown_table(frame, columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table of ``columns`` (those present) of ``frame``.

    >>> import pandas as pd
    >>> print(markdown_table(pd.DataFrame({"a": [1.23456], "b": ["x|y"]}), ["a", "b", "c"]))
    | a | b |
    |---|---|
    | 1.235 | x\\|y |
    """
    columns = [c for c in columns if c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame[columns].itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _counts(frame) -> str:
    counts = frame["status"].value_counts()
    parts = [f"{int(counts[s])} {s}" for s in STATUSES if s in counts]
    parts += [f"{int(n)} {s}" for s, n in counts.items() if s not in STATUSES]
    return ", ".join(parts)


def render_report(frame, experiment: Any, swept_keys: Sequence[str],
                  plots: Sequence[tuple[str, Path]] = (), directory: Path | None = None) -> str:
    """The report's Markdown; ``plots`` are ``(title, path)`` pairs, linked relative to it."""
    lines = [f"# {experiment.name}", ""]
    question = (getattr(experiment, "description", "") or "").strip()
    lines += [("> " + question.replace("\n", "\n> ")) if question else
              "_No question given: add `description:` to the experiment file._", ""]
    lines += [f"{len(frame)} scenarios: {_counts(frame)}. "
              "Every row is in [results.csv](results.csv) and results.parquet.", ""]

    ok = frame[frame["status"] == "ok"]
    shown = ["scenario", *swept_keys, *_SHOWN]
    lines += ["## Best scenarios", ""]
    rankings = [("Shortest step time", "step_time_s", True),
                ("Highest throughput", "tokens_per_s", False)]
    ranked = False
    for title, column, ascending in rankings:
        if column in ok.columns and ok[column].notna().any():
            best = ok[ok[column].notna()].sort_values(column, ascending=ascending,
                                                      kind="stable").head(BEST)
            lines += [f"### {title}", "", markdown_table(best, shown), ""]
            ranked = True
    if not ranked:
        lines += ["No scenario finished with status ok.", ""]

    failed = frame[frame["status"] != "ok"]
    lines += ["## Failures", ""]
    lines += [markdown_table(failed, ["scenario", "status", "error"]) if len(failed)
              else "None.", ""]

    if plots:
        lines += ["## Plots", ""]
        for title, path in plots:
            link = Path(path).relative_to(directory) if directory else Path(path)
            lines += [f"### {title}", "", f"![{title}]({link.as_posix()})", ""]
    return "\n".join(lines)


def write_report(directory: str | Path, frame, experiment: Any, swept_keys: Sequence[str],
                 plots: bool = True) -> Path:
    """Write ``report.md`` (and, unless ``plots`` is false, ``plots/*.png``) in ``directory``."""
    directory = Path(directory)
    made: list[tuple[str, Path]] = []
    if plots:
        made = make_plots(frame, swept_keys, directory / "plots")
    path = directory / "report.md"
    path.write_text(render_report(frame, experiment, swept_keys, made, directory),
                    encoding="utf-8")
    return path
