"""The result columns, declared once: one flat row per scenario, units in the names.

A row is a plain dict; the DataFrame is built once, at the end of a sweep (Mesa style). The
declared columns come first in DESIGN.md order, then one column per swept dotted key, then any
extra column the simulator returned (``energy_<part>_j``, ``busiest_link``,
``link_util_<tech>``, ...) in the order first seen.

>>> row = error_row("demo/0001", "exp.yaml:9:20: training.parallelism.tp: must be > 0")
>>> row["status"], row["step_time_s"]
('error', None)
>>> frame = result_frame([row, {"scenario": "demo/0000", "status": "ok", "step_time_s": 1.5,
...                             "energy_pump_j": 3.0, "training.parallelism.tp": 4}],
...                      swept_keys=["training.parallelism.tp"])
>>> list(frame.columns[:4]), list(frame.columns[-2:])
(['scenario', 'status', 'error', 'step_time_s'], ['training.parallelism.tp', 'energy_pump_j'])
>>> frame["step_time_s"].tolist()
[nan, 1.5]
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Column", "RESULT_COLUMNS", "COLUMN_NAMES", "NUMERIC_COLUMNS", "STATUSES",
           "JOB_COLUMNS", "NEIGHBOUR_COLUMNS", "job_columns", "neighbour_columns",
           "error_row", "normalise_row", "column_order", "result_frame"]


@dataclass(frozen=True)
class Column:
    """One declared result column: its name (unit in the name), type and meaning."""

    name: str
    kind: str  # "str" or "float"
    description: str


RESULT_COLUMNS: tuple[Column, ...] = (
    Column("scenario", "str", "scenario name: <experiment>/<index> and the swept values"),
    Column("status", "str", "ok | infeasible | oom | error"),
    Column("error", "str", "why the scenario did not give a result (empty when ok)"),
    Column("step_time_s", "float", "time of one training step"),
    Column("tokens_per_s", "float", "training throughput of the whole cluster"),
    Column("mfu", "float", "model FLOPs utilisation (no recompute FLOPs)"),
    Column("hfu", "float", "hardware FLOPs utilisation (recompute FLOPs included)"),
    Column("model_tflops_per_device", "float", "model TFLOP/s achieved per device"),
    Column("compute_s", "float", "compute time per step on the critical rank"),
    Column("comm_s", "float", "communication time per step, overlapped or not"),
    Column("exposed_comm_s", "float", "communication not hidden behind compute"),
    Column("hidden_comm_s", "float", "communication hidden behind compute"),
    Column("overlap_cost_s", "float", "compute slowed by the SM-borne communication beside it "
           "(in compute_s and step_time_s)"),
    Column("bubble_s", "float", "pipeline bubble (idle) time per step"),
    Column("peak_memory_gib", "float", "peak memory of the fullest device"),
    Column("memory_capacity_gib", "float", "memory capacity of that device"),
    Column("energy_j", "float", "energy of one step, whole cluster"),
    Column("energy_per_token_j", "float", "energy per trained token"),
    Column("avg_power_w", "float", "average power of the whole cluster over a step"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in RESULT_COLUMNS)
NUMERIC_COLUMNS: tuple[str, ...] = tuple(c.name for c in RESULT_COLUMNS if c.kind == "float")
STATUSES: tuple[str, ...] = ("ok", "infeasible", "oom", "error")

# With ``jobs:`` (several jobs on one cluster; clustersim.experiment.jobs) the row is the
# primary job's, on its own devices, and adds these columns; each neighbour adds the
# NEIGHBOUR_COLUMNS as ``jobs.<name>.<column>``. The analytic fidelity leaves the slowdowns
# empty: it has no contention (job_contention says so).
JOB_COLUMNS: tuple[Column, ...] = (
    Column("step_time_alone_s", "float", "the primary's step alone on the same devices"),
    Column("slowdown_vs_alone", "float", "step_time_s over step_time_alone_s (flow only)"),
    Column("job_contention", "str", "how the jobs' traffic meets: max-min shared links "
           "(flow) or none (analytic)"),
)
NEIGHBOUR_COLUMNS: tuple[Column, ...] = (
    Column("step_time_s", "float", "the neighbour's mean step over those that began while "
           "the primary's step ran"),
    Column("step_time_alone_s", "float", "the same steps alone on the same devices"),
    Column("slowdown_vs_alone", "float", "step_time_s over step_time_alone_s (flow only)"),
    Column("steps", "float", "neighbour steps simulated, back to back, to cover the "
           "primary's step"),
)


def job_columns(step_time_s: float, alone_s: float, contention: str, shared: bool
                ) -> dict[str, Any]:
    """The JOB_COLUMNS of a primary row (``shared``: the flow fidelity ran the jobs together).

    >>> job_columns(1.5, 1.0, "max-min", True)["slowdown_vs_alone"]
    1.5
    """
    return {"step_time_alone_s": alone_s,
            "slowdown_vs_alone": step_time_s / alone_s if shared else None,
            "job_contention": contention}


def neighbour_columns(name: str, step_time_s: float, alone_s: float, steps: int,
                      shared: bool) -> dict[str, Any]:
    """The NEIGHBOUR_COLUMNS of neighbour ``name``, as ``jobs.<name>.<column>``.

    >>> neighbour_columns("moe", 2.0, 1.6, 3, True)["jobs.moe.slowdown_vs_alone"]
    1.25
    """
    values = (step_time_s, alone_s, step_time_s / alone_s if shared else None, steps)
    return {f"jobs.{name}.{c.name}": v for c, v in zip(NEIGHBOUR_COLUMNS, values)}


def error_row(scenario: str, message: str, status: str = "error") -> dict[str, Any]:
    """A row for a scenario that gave no result: every measured column empty.

    >>> error_row("demo/0003", "ValueError: boom", status="infeasible")["error"]
    'ValueError: boom'
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
    row.update(scenario=scenario, status=status, error=message)
    return row


def _plain(value: Any) -> Any:
    """A value a results table can hold: a Python scalar, or the JSON text of a structure."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy 0-d / scalar
        return _plain(value.item())
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return None  # tables and other objects are not row values


def normalise_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Plain Python values only, so a row pickles, serialises and tabulates the same everywhere.

    numpy scalars become Python numbers, lists and dicts become JSON text, anything else
    (a DataFrame, an object) is dropped.

    >>> import numpy as np
    >>> normalise_row({"mfu": np.float64(0.5), "placement": ["tp", "dp"], "table": object()})
    {'mfu': 0.5, 'placement': '["tp", "dp"]'}
    """
    out = {}
    for key, value in row.items():
        plain = _plain(value)
        if plain is not None or value is None:
            out[str(key)] = plain
    return out


def column_order(columns: Iterable[str], swept_keys: Sequence[str] = ()) -> list[str]:
    """Declared columns, then swept keys, then the other columns in the order given.

    >>> column_order(["busiest_link", "mfu", "scenario"], ["cluster.devices"])[-2:]
    ['cluster.devices', 'busiest_link']
    """
    seen = list(dict.fromkeys(columns))
    fixed = list(COLUMN_NAMES) + [k for k in swept_keys if k not in COLUMN_NAMES]
    return fixed + [c for c in seen if c not in fixed]


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Real):
        return "number"
    return "text"


def _uniform(values: list[Any]) -> list[Any]:
    """One type per column: a column that mixes numbers, booleans and text becomes text."""
    kinds = {_kind_of(v) for v in values if v is not None and not (
        isinstance(v, float) and math.isnan(v))}
    if len(kinds) <= 1:
        return values
    return [None if v is None else str(v) for v in values]


def result_frame(rows: Iterable[Mapping[str, Any]], swept_keys: Sequence[str] = ()):
    """The one DataFrame of a sweep: columns in declared order, numeric columns as float64."""
    # pandas on use: every pool worker imports this module (normalise_row), none builds a frame
    import pandas as pd

    rows = [dict(r) for r in rows]
    names = column_order((k for r in rows for k in r), swept_keys)
    data = {name: _uniform([r.get(name) for r in rows]) for name in names}
    frame = pd.DataFrame(data, columns=names)
    for name in NUMERIC_COLUMNS:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame
