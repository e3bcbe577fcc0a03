"""report.md and the plots: the right sections, plots only from data that exists, and a
failing plot never costs the run."""

from __future__ import annotations

import math

import pandas as pd

import fake_runs
from clustersim.experiment import plots
from clustersim.experiment.runner import output_directory, run_experiment

from .conftest import BASE_YAML

SWEEP = """\
sweep:
  grid:
    training.parallelism.tp: [1, 2, 3, 4]
    cluster.overrides.scale_out.bandwidth: [100 GB/s, 25 GB/s]
"""
WITH_PLOTS = BASE_YAML.replace("plots: false", "plots: true")


def test_report_has_question_best_failures_and_plots(tmp_path, write_experiment):
    out = tmp_path / "out"
    frame = run_experiment(write_experiment(SWEEP, base=WITH_PLOTS), out, executor="serial",
                           run_fn=fake_runs.flaky_run, progress=False)
    report = (out / "report.md").read_text()
    assert report.startswith("# demo\n\n> Which tensor-parallel size trains fastest?")
    assert "8 scenarios: 4 ok, 2 oom, 2 error." in report
    best = report.split("### Shortest step time")[1].split("###")[0]
    fastest = frame[frame["status"] == "ok"].sort_values("step_time_s")["scenario"].iloc[0]
    assert best.split("\n")[4].startswith(f"| {fastest} |")
    assert "oom" not in best  # only ok scenarios rank
    failures = report.split("## Failures")[1].split("## Plots")[0]
    assert failures.count("| error | ValueError: cannot split 32 heads over tp=3 |") == 2
    names = {p.name for p in (out / "plots").iterdir()}
    assert names == {"step_time_breakdown.png", "step_time_vs_training_parallelism_tp.png",
                     "step_time_vs_cluster_overrides_scale_out_bandwidth.png",
                     "link_utilisation.png", "memory.png"}
    for name in names:
        assert f"(plots/{name})" in report
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_plots_off_writes_none(tmp_path, write_experiment):
    out = tmp_path / "out"
    run_experiment(write_experiment(SWEEP), out, executor="serial", run_fn=fake_runs.ok_run,
                   progress=False)
    assert (out / "report.md").exists() and not (out / "plots").exists()
    assert "## Plots" not in (out / "report.md").read_text()


def test_plots_are_skipped_without_their_columns(tmp_path):
    frame = pd.DataFrame({"scenario": ["a/0", "a/1"], "status": ["ok", "error"],
                          "step_time_s": [1.0, math.nan], "peak_memory_gib": [math.nan] * 2,
                          "x.y": [1, 2]})
    made = plots.make_plots(frame, ["x.y"], tmp_path)
    assert made == []  # no breakdown, one ok point per x, no links, memory all NaN
    assert list(tmp_path.iterdir()) == []


def test_a_failing_plot_is_skipped_and_the_run_finishes(tmp_path, write_experiment, monkeypatch,
                                                        caplog):
    def broken(frame, path):
        path.write_bytes(b"half")
        raise RuntimeError("font cache on fire")

    monkeypatch.setattr(plots, "memory_against_capacity", broken)
    out = tmp_path / "out"
    frame = run_experiment(write_experiment(SWEEP, base=WITH_PLOTS), out, executor="serial",
                           run_fn=fake_runs.ok_run, progress=False)
    assert len(frame) == 8
    assert "skipped plot 'Peak memory against capacity'" in caplog.text
    assert not (out / "plots" / "memory.png").exists()
    assert (out / "plots" / "step_time_breakdown.png").exists()


def test_swept_quantities_are_ordered_by_value():
    assert plots._ordered(["100 GB/s", "25 GB/s", "400 Gb/s"]) == [
        "25 GB/s", "400 Gb/s", "100 GB/s"]
    assert plots._ordered(["b", "a"]) == ["b", "a"]  # no order known: as given


def test_output_directory_defaults(tmp_path, write_experiment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_experiment()
    frame = run_experiment(path, executor="serial", run_fn=fake_runs.ok_run, progress=False)
    assert frame.attrs["output_dir"] == "results/demo"
    assert (tmp_path / "results" / "demo" / "results.csv").exists()
    path = write_experiment(base=BASE_YAML.replace("plots: false", "dir: elsewhere"))
    run_experiment(path, executor="serial", run_fn=fake_runs.ok_run, progress=False)
    assert (tmp_path / "elsewhere" / "results.parquet").exists()
    assert output_directory(None, "given").as_posix() == "given"
