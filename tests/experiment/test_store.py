"""The results store: whole parts or none, resume identity, one row per scenario."""

from __future__ import annotations

import json
import os

import pytest

import fake_runs
from clustersim.errors import InputError
from clustersim.experiment.runner import run_experiment
from clustersim.experiment.store import PartId, ResultStore, config_hash

from .conftest import BASE_YAML


def test_a_part_is_whole_or_absent(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    part = PartId(3, "demo/0003", "h1")
    path = store.put(part, {"scenario": "demo/0003", "status": "ok", "step_time_s": 2.5})
    assert json.loads(path.read_text())["row"]["step_time_s"] == 2.5
    assert [p.name for p in store.parts.iterdir()] == [part.filename]  # no temporary left

    def crash(*_):
        raise OSError("disk yanked")

    monkeypatch.setattr(os, "replace", crash)
    other = PartId(4, "demo/0004", "h1")
    with pytest.raises(OSError):
        store.put(other, {"scenario": "demo/0004", "status": "ok"})
    monkeypatch.undo()
    assert not store.has(other)
    assert any(p.name.endswith(".tmp") for p in store.parts.iterdir())
    store.close()   # the crashed run's process is gone, and its lock with it
    ResultStore(tmp_path, resume=True)  # reopening clears what the crash left half-written
    assert sorted(p.name for p in store.parts.iterdir()) == [part.filename]


def test_identity_is_name_and_config_hash_and_an_index_keeps_one_part(tmp_path):
    store = ResultStore(tmp_path)
    old, new = PartId(0, "demo/0000", "old"), PartId(0, "demo/0000", "new")
    store.put(old, {"scenario": "demo/0000", "status": "ok", "step_time_s": 1.0})
    assert store.has(old) and not store.has(new)
    assert not store.has(PartId(0, "demo/0000 renamed", "old"))
    store.put(new, {"scenario": "demo/0000", "status": "ok", "step_time_s": 2.0})
    assert not store.has(old) and len(list(store.parts.glob("*.json"))) == 1
    frame = store.combine([new])
    assert frame["step_time_s"].tolist() == [2.0]
    assert (tmp_path / "results.csv").exists() and (tmp_path / "results.parquet").exists()


def test_a_fresh_run_forgets_old_parts_and_resume_keeps_them(tmp_path):
    ResultStore(tmp_path).put(PartId(0, "a", "h"), {"scenario": "a", "status": "ok"})
    assert ResultStore(tmp_path, resume=True).has(PartId(0, "a", "h"))
    assert not ResultStore(tmp_path).has(PartId(0, "a", "h"))


def test_config_hash_ignores_output_but_not_results_inputs():
    from clustersim.config.experiment import ExperimentConfig
    from clustersim.config.yamlio import load_yaml

    data = load_yaml(BASE_YAML).data
    base = config_hash(ExperimentConfig.model_validate(data))
    moved = config_hash(ExperimentConfig.model_validate({**data, "output": {"dir": "x"}}))
    changed = config_hash(ExperimentConfig.model_validate(
        {**data, "simulation": {"fidelity": "analytic"}}))
    assert base == moved != changed


def _calls(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    calls.mkdir(exist_ok=True)
    for old in calls.iterdir():
        old.unlink()
    monkeypatch.setenv("FAKE_RUN_CALLS_DIR", str(calls))
    return calls


def _ran(calls) -> list[int]:
    return sorted(int(p.name.split("-")[0]) for p in calls.iterdir())


def test_resume_reruns_only_changed_or_new_scenarios(tmp_path, write_experiment, monkeypatch):
    out = tmp_path / "out"
    sweep = "sweep:\n  grid:\n    training.parallelism.tp: [1, 2]\n"
    path = write_experiment(sweep)
    calls = _calls(tmp_path, monkeypatch)
    run_experiment(path, out, executor="serial", run_fn=fake_runs.slow_run)
    assert _ran(calls) == [0, 1]

    calls = _calls(tmp_path, monkeypatch)  # nothing changed: nothing runs
    frame = run_experiment(path, out, executor="serial", run_fn=fake_runs.slow_run, resume=True)
    assert _ran(calls) == [] and len(frame) == 2

    path = write_experiment("sweep:\n  grid:\n    training.parallelism.tp: [1, 2, 4]\n")
    calls = _calls(tmp_path, monkeypatch)  # a new value: only the new scenario runs
    frame = run_experiment(path, out, executor="serial", run_fn=fake_runs.slow_run, resume=True)
    assert _ran(calls) == [2]
    assert frame["training.parallelism.tp"].tolist() == [1, 2, 4]

    # the same scenario names with a changed configuration: all of them run again
    path = write_experiment(sweep, base=BASE_YAML.replace("global_batch: 64",
                                                          "global_batch: 128"))
    calls = _calls(tmp_path, monkeypatch)
    frame = run_experiment(path, out, executor="serial", run_fn=fake_runs.slow_run, resume=True)
    assert _ran(calls) == [0, 1]
    assert frame["scenario"].tolist() == ["demo/0000 tp=1", "demo/0001 tp=2"]
    assert frame["step_time_s"].tolist() == [
        fake_runs.fake_row(s)["step_time_s"] for s in _scenarios(path)]


def _scenarios(path):
    from clustersim.config.yamlio import load_yaml_file
    from clustersim.experiment.sweep import expand

    return expand(load_yaml_file(path)).scenarios


def test_one_run_at_a_time_writes_a_directory(tmp_path):
    """A second run into a directory another run is writing is refused (it used to delete
    the first's parts); once the first is done the directory is free again. A directory
    that cannot be made (``--out`` naming a file) is one located message."""
    first = ResultStore(tmp_path)
    with pytest.raises(InputError, match="another run is writing"):
        ResultStore(tmp_path, resume=True)
    first.close()
    ResultStore(tmp_path, resume=True).close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write results to .*file.*choose another --out"):
        ResultStore(tmp_path / "file")
