"""The whole experiment: load, expand the sweep, run, store, combine, report.

Output directory (``out_dir``, else ``output.dir`` of the file, else ``results/<name>``;
relative paths are taken from the current directory)::

    results.parquet, results.csv   one row per scenario, by index (columns.py)
    report.md, plots/*.png         the question, the best scenarios, failures, plots
    parts/                         one file per finished scenario (store.py), for --resume
    logs/<index>.log               the traceback of a scenario whose run raised
    traces/<index>.json            Chrome traces, with ``trace=True``

>>> import tempfile
>>> experiment = {"name": "demo", "cluster": {"topology": "dgx-h100", "devices": 16},
...               "model": "llama3-8b", "training": {"global_batch": 64},
...               "sweep": {"grid": {"training.parallelism.tp": [2, 4, 8]}},
...               "output": {"plots": False}}
>>> def fake(scenario):
...     return {"step_time_s": 10.0 / scenario.config.training.parallelism.tp}
>>> frame = run_experiment(experiment, out_dir=tempfile.mkdtemp(), executor="serial",
...                        run_fn=fake)
>>> frame[["scenario", "status", "step_time_s", "training.parallelism.tp"]]
         scenario status  step_time_s  training.parallelism.tp
0  demo/0000 tp=2     ok         5.00                        2
1  demo/0001 tp=4     ok         2.50                        4
2  demo/0002 tp=8     ok         1.25                        8
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from clustersim.config.yamlio import YamlDocument, load_yaml_file
from clustersim.errors import InputError
from clustersim.experiment import scenario as _scenario_module
from clustersim.experiment.columns import error_row
from clustersim.experiment.executors import RunFunction, check_options, run_scenarios
from clustersim.experiment.headline import render
from clustersim.experiment.report import write_report
from clustersim.experiment.scenario import Scenario
from clustersim.experiment.store import PartId, ResultStore, config_hash
from clustersim.experiment.sweep import MAX_SCENARIOS, Expansion, expand

__all__ = ["run_experiment", "output_directory", "load_document"]

_log = logging.getLogger(__name__)


def load_document(source: str | Path | Mapping | YamlDocument) -> YamlDocument:
    """A path is read as YAML; a mapping is an already-loaded experiment (positions unknown)."""
    if isinstance(source, YamlDocument):
        return source
    if isinstance(source, Mapping):
        return YamlDocument(copy.deepcopy(dict(source)), None)
    return load_yaml_file(source)


def output_directory(sweep: Expansion, out_dir: str | Path | None = None) -> Path:
    """``out_dir``, else the file's ``output.dir``, else ``results/<experiment name>``.

    >>> from types import SimpleNamespace as NS
    >>> output_directory(NS(base=NS(name="gpt3 / 175b", output=NS(dir=None))))
    PosixPath('results/gpt3-175b')
    """
    if out_dir:
        return Path(out_dir)
    if sweep.base.output.dir:
        return Path(sweep.base.output.dir)
    return Path("results") / (re.sub(r"[^A-Za-z0-9._-]+", "-", sweep.base.name) or "experiment")


def _with_trace(scenario: Scenario) -> Scenario:
    output = scenario.config.output.model_copy(update={"trace": True})
    return replace(scenario, config=scenario.config.model_copy(update={"output": output}))


def _progress_bar(total: int, done: int, enabled: bool | None, name: str):
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, initial=done, disable=not enabled, unit="scenario", desc=name,
                file=sys.stderr, dynamic_ncols=True)


def _clear(directory: Path, pattern: str) -> None:
    for old in directory.glob(pattern):
        old.unlink(missing_ok=True)


def run_experiment(source: str | Path | Mapping | YamlDocument, out_dir: str | Path | None = None,
                   workers: int | None = None, executor: str = "local",
                   scheduler: str | None = None, resume: bool = False,
                   progress: bool | None = None, trace: bool = False,
                   run_fn: RunFunction | None = None, max_scenarios: int = MAX_SCENARIOS):
    """Run every scenario of an experiment and return the results as one DataFrame.

    ``source`` is a path to an experiment file, or a mapping of an already-loaded one.
    ``executor`` is ``local`` (a process pool of ``workers`` processes), ``dask`` (the
    scheduler at ``scheduler``, else a local dask cluster), ``serial``, or ``auto`` (this
    process while the sweep is short, then a local pool: ``executors.run_auto``). ``resume`` keeps the
    scenarios an earlier run of the same experiment already stored in the output directory.
    ``progress`` shows a progress bar (default: when stderr is a terminal). ``run_fn`` replaces
    :func:`clustersim.experiment.scenario.run_scenario` (it must be importable by the workers).
    A sweep of more than ``max_scenarios`` points is refused before any is built.

    Raises InputErrors when the file itself is invalid; a scenario that fails is a row. The
    frame's ``attrs`` hold ``experiment``, ``output_dir``, ``swept_keys`` and ``headline`` (the
    experiment's answer, filled from the results).
    """
    check_options(executor, workers, scheduler)
    doc = load_document(source)
    sweep = expand(doc, max_scenarios)
    out = output_directory(sweep, out_dir)
    run_fn = run_fn or _scenario_module.run_scenario
    store = ResultStore(out, resume=resume)
    logs, traces = out / "logs", out / "traces"
    if not resume:
        _clear(logs, "*.log")
        _clear(traces, "*.json")

    parts = {s.index: PartId(s.index, s.name, config_hash(s.config)) for s in sweep.scenarios}
    for bad in sweep.invalid:
        part = PartId(bad.index, bad.name, config_hash(bad.data))
        parts[bad.index] = part
        store.put(part, {**error_row(bad.name, bad.error), **bad.swept})
    if sweep.invalid:
        _log.warning("%d of %d scenarios are invalid and are recorded as errors:\n%s",
                     len(sweep.invalid), sweep.size, "\n".join(s.error for s in sweep.invalid))

    by_index = {s.index: s for s in sweep.scenarios}
    todo = [s for s in sweep.scenarios if not store.has(parts[s.index])]
    if trace or sweep.base.output.trace:
        todo = [_with_trace(s) for s in todo]
    bar = _progress_bar(len(sweep.scenarios), len(sweep.scenarios) - len(todo), progress,
                        sweep.base.name)
    failed = 0
    try:
        for outcome in run_scenarios(todo, run_fn, executor, workers, scheduler):
            scenario = by_index[outcome.index]
            store.put(parts[outcome.index], {**outcome.row, **scenario.swept})
            if outcome.traceback:
                logs.mkdir(exist_ok=True)
                (logs / f"{outcome.index:06d}.log").write_text(
                    f"{scenario.name}\n\n{outcome.traceback}")
            if outcome.trace is not None:
                traces.mkdir(exist_ok=True)
                (traces / f"{outcome.index:06d}.json").write_text(
                    json.dumps(outcome.trace, default=str))
            failed += outcome.row.get("status") == "error"
            bar.set_postfix_str(f"failed {failed}, left {bar.total - bar.n - 1}", refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()  # before the message, so it gets a line of its own
        _log.warning("interrupted: %d of %d scenarios are stored in %s; run again with "
                     "--resume to finish", sum(map(store.has, parts.values())), sweep.size, out)
        store.close()
        raise
    finally:
        bar.close()

    frame = store.combine(list(parts.values()), sweep.swept_keys)
    store.close()
    try:
        write_report(out, frame, sweep.base, sweep.swept_keys, plots=sweep.base.output.plots)
    except Exception as exc:  # the results are safe; a report problem must not lose them
        _log.warning("could not write the report: %s: %s", type(exc).__name__, exc)
    frame.attrs.update(experiment=sweep.base.name, output_dir=str(out),
                       swept_keys=list(sweep.swept_keys), headline=_headline(sweep.base, frame))
    return frame


def _headline(base, frame) -> str:
    """The experiment's answer filled from its results ("" when it has none; a headline
    that names what the results lack is a warning: the results are safe)."""
    try:
        return render(base.headline, frame) if base.headline else ""
    except InputError as exc:
        _log.warning("headline: %s", exc)
        return ""

