"""An experiment's answer in one sentence, filled from its results (``headline:`` in the
experiment file), so the figures a README or a report quotes come from a run, not a keyboard.

A field is ``[[ref | column | format]]``; ``ref`` names rows by their scenario label (the text
after ``name/NNNN``):

- ``label``: that scenario's ``column``;
- ``a / b``: the ratio of two scenarios' ``column``; ``a vs b``: the relative change a/b - 1;
- ``best``: the ok scenario with the shortest step (``column`` ``label`` prints its label);
- ``count STATUS``: how many scenarios ended with that status (no column).

``format`` is a Python format spec (default ``.4g``).

>>> import pandas as pd
>>> frame = pd.DataFrame({"scenario": ["q/0000 tp=1", "q/0001 tp=2"], "status": ["ok", "oom"],
...                       "step_time_s": [3.45, 3.8], "mfu": [0.561, 0.5]})
>>> render("tp=1: [[tp=1 | step_time_s | .2f]] s, MFU [[tp=1 | mfu | .0%]]; tp=2 "
...        "[[tp=2 vs tp=1 | step_time_s | +.0%]]; [[count oom]] oom; best [[best | label]]",
...        frame)
'tp=1: 3.45 s, MFU 56%; tp=2 +10%; 1 oom; best tp=1'
"""

from __future__ import annotations

import re

from clustersim.errors import InputError

__all__ = ["render", "scenario_label"]

_FIELD = re.compile(r"\[\[(.+?)\]\]")


def scenario_label(scenario: str) -> str:
    """``'q/0003 tp=8'`` -> ``'tp=8'`` (the label the sweep gave the scenario)."""
    return scenario.split(" ", 1)[1] if " " in scenario else scenario


def _row(frame, label: str):
    if label == "best":
        ok = frame[frame["status"] == "ok"]
        if ok.empty:
            raise InputError("headline: `best` needs at least one ok scenario")
        return ok.loc[ok["step_time_s"].idxmin()]
    labels = frame["scenario"].map(scenario_label)
    match = frame[labels == label]
    if match.empty:
        raise InputError(f"headline names scenario {label!r}, which the sweep does not have; "
                         f"its scenarios: {', '.join(labels)}")
    return match.iloc[0]


def _value(frame, ref: str, column: str):
    if ref.startswith("count "):
        return int((frame["status"] == ref[len("count "):].strip()).sum())
    for op in (" / ", " vs "):
        if op in ref:
            a, b = (float(_value(frame, part.strip(), column)) for part in ref.split(op, 1))
            return a / b if op == " / " else a / b - 1.0
    row = _row(frame, ref)
    if column == "label":
        return scenario_label(str(row["scenario"]))
    if column not in row.index:
        raise InputError(f"headline names column {column!r}, which the results do not have")
    if row[column] is None:   # e.g. a slowdown the analytic fidelity cannot give
        raise InputError(f"scenario {scenario_label(str(row['scenario']))!r} has "
                         f"no value in column {column!r}")
    return row[column]


def render(headline: str, frame) -> str:
    """``headline`` with every ``[[ref | column | format]]`` field filled from ``frame``."""
    def fill(match) -> str:
        parts = [p.strip() for p in match.group(1).split("|")]
        ref, column = parts[0], parts[1] if len(parts) > 1 else ""
        spec = parts[2] if len(parts) > 2 else ".4g"
        value = _value(frame, ref, column)
        return value if isinstance(value, str) else format(value, spec)

    return _FIELD.sub(fill, headline)
