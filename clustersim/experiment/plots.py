"""Plots of a sweep's results, as PNG files (matplotlib's object API on Agg, imported lazily).

Each plot function takes the results DataFrame and a path, draws only from the rows and columns
it needs, and returns False without writing anything when they are absent or all empty.
:func:`make_plots` draws every plot that has data and never raises: a failing plot is logged
and skipped, because a plot must not cost the user their results.

>>> import pandas as pd, tempfile, pathlib
>>> frame = pd.DataFrame({"scenario": ["a/0", "a/1"], "status": ["ok", "ok"],
...                       "step_time_s": [2.0, 1.0], "compute_s": [1.5, 0.8],
...                       "exposed_comm_s": [0.3, 0.1], "bubble_s": [0.2, 0.1],
...                       "training.parallelism.tp": [2, 4]})
>>> made = make_plots(frame, ["training.parallelism.tp"], pathlib.Path(tempfile.mkdtemp()))
>>> [title for title, _ in made]
['Step time breakdown', 'Step time against training.parallelism.tp']
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clustersim.units import KINDS, parse

__all__ = ["MAX_BARS", "make_plots", "step_time_breakdown", "step_time_against",
           "link_utilisation", "memory_against_capacity", "LINK_UTIL_PREFIX"]

_log = logging.getLogger(__name__)
MAX_BARS = 40  # more bars than this are unreadable: plot the fastest ones
LINK_UTIL_PREFIX = "link_util_"
_PARTS = (("compute_s", "compute", "#4C72B0"), ("exposed_comm_s", "exposed communication",
          "#DD8452"), ("bubble_s", "pipeline bubble", "#8C8C8C"))


# Margins are set from the text they hold rather than by matplotlib's constrained layout,
# which measures every label again at each save (a third of the drawing time). Inches, at
# the default 10-point text: a label character is at most ~0.09 in wide, a line ~0.2 in high.
_CHAR_IN = 0.09
_TITLE_IN = 0.4
_XAXIS_IN = 0.5     # tick labels and the x label
_LEGEND_IN = 0.3    # one row of a legend under the axes


def _figure(width: float, height: float, left_in: float = 0.9, bottom_in: float = _XAXIS_IN,
            right_in: float = 0.3):
    """A figure with one axes, its margins in inches (the defaults fit a y label)."""
    # matplotlib on use (~0.3 s to import); no pyplot: no global backend state to disturb
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left_in / width, right=1 - right_in / width,
                        bottom=bottom_in / height, top=1 - _TITLE_IN / height)
    return fig


def _bar_figure(labels: Sequence[str], width: float = 9):
    """A figure for one horizontal bar per label, the labels on the left, a legend below."""
    left_in = 0.25 + _CHAR_IN * max((len(s) for s in labels), default=1)
    height = 1.2 + 0.3 * len(labels)
    return _figure(width, height, left_in=min(left_in, 0.6 * width),
                   bottom_in=_XAXIS_IN + _LEGEND_IN)


def _has(frame, column: str) -> bool:
    return column in frame.columns and frame[column].notna().any()


def _ok(frame):
    return frame[frame["status"] == "ok"] if "status" in frame.columns else frame


def _label(name: Any, width: int = 42) -> str:
    text = str(name)
    return text if len(text) <= width else text[:width - 1] + "…"


def _fastest(frame):
    """At most MAX_BARS rows, the fastest ones, and a note if rows were left out."""
    if len(frame) <= MAX_BARS:
        return frame, ""
    if "step_time_s" in frame.columns:
        frame = frame.sort_values("step_time_s", kind="stable")
    return frame.head(MAX_BARS), f" ({MAX_BARS} fastest of {len(frame)})"


def step_time_breakdown(frame, path: Path) -> bool:
    """Stacked bars per scenario: compute, exposed communication, bubble (and the rest)."""
    rows = _ok(frame)
    parts = [p for p in _PARTS if _has(rows, p[0])]
    if not parts:
        return False
    rows = rows[rows[[p[0] for p in parts]].notna().any(axis=1)]
    rows, note = _fastest(rows)
    labels = [_label(s) for s in rows["scenario"]]
    fig = _bar_figure(labels)
    ax = fig.add_subplot()
    y = range(len(rows))  # positions, not labels: two names may shorten to the same label
    left = [0.0] * len(rows)
    for column, name, colour in parts:
        values = rows[column].fillna(0.0).tolist()
        ax.barh(y, values, left=left, label=name, color=colour)
        left = [a + b for a, b in zip(left, values)]
    if _has(rows, "step_time_s"):
        rest = [max(0.0, t - s) if not math.isnan(t) else 0.0
                for t, s in zip(rows["step_time_s"].tolist(), left)]
        if any(r > 0 for r in rest):
            ax.barh(y, rest, left=left, label="other", color="#CCB974")
    _save_per_scenario(fig, ax, labels, "time per step (s)", "Step time breakdown" + note, path)
    return True


def _save_per_scenario(fig, ax, labels, xlabel: str, title: str, path: Path) -> None:
    """Finish a horizontal bar chart with one bar per scenario (first on top) and save it."""
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.legend(loc="lower center", ncol=4, fontsize="small", frameon=False)
    fig.savefig(path, dpi=110)


def _ordered(values: Sequence[Any]) -> list[Any]:
    """Distinct values in a sensible order: by number, by quantity ("25 GB/s"), else as given."""
    distinct = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
        return sorted(distinct)
    for kind in KINDS:
        try:
            return sorted(distinct, key=lambda v: parse(v, kind))
        except (ValueError, TypeError):
            continue
    return distinct


def step_time_against(frame, key: str, path: Path) -> bool:
    """Step time of every ok scenario against one swept parameter, and the best at each value."""
    if not _has(frame, key) or not _has(frame, "step_time_s"):
        return False
    rows = _ok(frame)
    rows = rows[rows[key].notna() & rows["step_time_s"].notna()]
    order = _ordered(rows[key].tolist())
    if len(order) < 2:
        return False
    position = {v: i for i, v in enumerate(order)}
    x = [position[v] for v in rows[key]]
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    ax.scatter(x, rows["step_time_s"], alpha=0.5, label="scenarios")
    best = rows.groupby(rows[key].map(position))["step_time_s"].min().sort_index()
    ax.plot(best.index, best.values, marker="o", color="#C44E52", label="best")
    ax.set_xticks(range(len(order)), [_label(v, 16) for v in order])
    ax.set_xlabel(key)
    ax.set_ylabel("step time (s)")
    ax.set_title(f"Step time against {key}")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    return True


def link_utilisation(frame, path: Path) -> bool:
    """Utilisation of each link technology (columns ``link_util_<tech>``) per scenario."""
    rows = _ok(frame)
    columns = [c for c in rows.columns if c.startswith(LINK_UTIL_PREFIX) and _has(rows, c)]
    if not columns:
        return False
    techs = [c[len(LINK_UTIL_PREFIX):] for c in columns]
    fig = _figure(max(6, 1.2 * len(columns)), 4.5)
    ax = fig.add_subplot()
    if len(rows) <= 12:  # a bar per scenario and technology
        width = 0.8 / len(rows)
        for i, (_, row) in enumerate(rows.iterrows()):
            ax.bar([j + i * width for j in range(len(columns))],
                   [row[c] for c in columns], width, label=_label(row["scenario"], 30))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(columns))], techs)
        ax.legend(fontsize="x-small")
    else:  # the spread over scenarios
        ax.boxplot([rows[c].dropna().tolist() for c in columns])
        ax.set_xticks(range(1, len(columns) + 1), techs)
    ax.set_ylabel("utilisation")
    ax.set_title("Link utilisation by technology")
    fig.savefig(path, dpi=110)
    return True


def memory_against_capacity(frame, path: Path) -> bool:
    """Peak memory per scenario (oom ones too) against the device's capacity."""
    if not _has(frame, "peak_memory_gib"):
        return False
    rows = frame[frame["peak_memory_gib"].notna()]
    rows, note = _fastest(rows)
    y = range(len(rows))
    peak = rows["peak_memory_gib"].tolist()
    capacity = (rows["memory_capacity_gib"].tolist() if "memory_capacity_gib" in rows.columns
                else [math.nan] * len(rows))
    colours = ["#C44E52" if p > c else "#4C72B0" for p, c in zip(peak, capacity)]  # NaN: False
    labels = [_label(s) for s in rows["scenario"]]
    fig = _bar_figure(labels)
    ax = fig.add_subplot()
    ax.barh(y, peak, color=colours, label="peak memory")
    if not all(math.isnan(c) for c in capacity):
        ax.scatter(capacity, y, marker="|", s=300, color="black", label="capacity")
    _save_per_scenario(fig, ax, labels, "memory per device (GiB)",
                       "Peak memory against capacity" + note, path)
    return True


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", key)


def make_plots(frame, swept_keys: Sequence[str], directory: Path) -> list[tuple[str, Path]]:
    """Draw every plot that has data into ``directory``; ``(title, path)`` of those drawn."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):  # plots of an earlier run of another sweep
        old.unlink(missing_ok=True)
    wanted: list[tuple[str, str, Callable[[Path], bool]]] = [
        ("Step time breakdown", "step_time_breakdown.png",
         lambda p: step_time_breakdown(frame, p))]
    for key in swept_keys:
        wanted.append((f"Step time against {key}", f"step_time_vs_{_slug(key)}.png",
                       lambda p, key=key: step_time_against(frame, key, p)))
    wanted += [("Link utilisation by technology", "link_utilisation.png",
                lambda p: link_utilisation(frame, p)),
               ("Peak memory against capacity", "memory.png",
                lambda p: memory_against_capacity(frame, p))]
    made = []
    for title, name, draw in wanted:
        path = directory / name
        try:
            if draw(path):
                made.append((title, path))
        except Exception as exc:  # a plot must never cost the run
            _log.warning("skipped plot %r: %s: %s", title, type(exc).__name__, exc)
            path.unlink(missing_ok=True)
    return made
