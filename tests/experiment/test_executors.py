"""Executors: the local spawn pool and a real dask LocalCluster give the serial answer; a run
that raises, is infeasible, or kills its worker is a row and the rest of the sweep goes on."""

from __future__ import annotations

import pandas as pd

import fake_runs
from clustersim.experiment.runner import run_experiment

GRID = """\
sweep:
  grid:
    training.parallelism.tp: [1, 2, 4, 8]
    cluster.overrides.scale_out.bandwidth: [25 GB/s, 50 GB/s, 100 GB/s]
"""


def _run(path, out, **kwargs):
    return run_experiment(path, out, progress=False, **kwargs)


def test_local_pool_gives_the_serial_result(tmp_path, write_experiment):
    path = write_experiment(GRID)
    serial = _run(path, tmp_path / "serial", executor="serial", run_fn=fake_runs.ok_run)
    local = _run(path, tmp_path / "local", executor="local", workers=2, run_fn=fake_runs.ok_run)
    assert len(serial) == 12 and (serial["status"] == "ok").all()
    pd.testing.assert_frame_equal(local, serial)
    stored = pd.read_parquet(tmp_path / "local" / "results.parquet")
    pd.testing.assert_frame_equal(stored, serial, check_dtype=False)


def test_dask_local_cluster_gives_the_local_pool_result(tmp_path, write_experiment):
    path = write_experiment(GRID)
    local = _run(path, tmp_path / "local", executor="local", workers=2, run_fn=fake_runs.ok_run)
    dask = _run(path, tmp_path / "dask", executor="dask", workers=2, run_fn=fake_runs.ok_run)
    pd.testing.assert_frame_equal(dask, local)


def test_dask_on_an_existing_scheduler(tmp_path, write_experiment):
    from dask.distributed import LocalCluster

    path = write_experiment(GRID)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        frame = _run(path, tmp_path / "dask", executor="dask", scheduler=cluster.scheduler_address,
                     run_fn=fake_runs.ok_run)
        assert len(cluster.workers) == 2  # the runner left the cluster it did not start alone
    assert (frame["status"] == "ok").all() and len(frame) == 12


def test_failures_are_rows_and_the_rest_of_the_sweep_goes_on(tmp_path, write_experiment):
    path = write_experiment("""\
sweep:
  cases:
    - {training.parallelism.tp: 2}
    - {training.parallelism.tp: 3}
    - {training.parallelism.pp: 3}
    - {training.parallelism.pp: 5}
    - {training.parallelism.tp: 1}
    - {training.parallelism.tp: 4, training.parallelism.pp: 2}
""")
    out = tmp_path / "out"
    frame = _run(path, out, executor="local", workers=2, run_fn=fake_runs.flaky_run)
    assert frame["status"].tolist() == ["ok", "error", "infeasible", "infeasible", "oom", "ok"]
    assert frame["error"][1] == "ValueError: cannot split 32 heads over tp=3"
    assert frame["error"][3] == "Infeasible: pp=5 does not divide 32 layers"
    assert frame[["step_time_s", "mfu"]].iloc[[1, 2, 3]].isna().all().all()
    assert frame["step_time_s"].iloc[[0, 4, 5]].notna().all()
    log = (out / "logs" / "000001.log").read_text()
    assert "Traceback" in log and "flaky_run" in log and "Traceback" not in frame["error"][1]
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["000001.log", "000003.log"]


def test_a_worker_that_dies_costs_only_its_own_scenario(tmp_path, write_experiment):
    path = write_experiment("""\
sweep:
  grid:
    training.parallelism.tp: [1, 2, 4, 8]
    training.micro_batch: [1, 2]
""")
    frame = _run(path, tmp_path / "out", executor="local", workers=2,
                 run_fn=fake_runs.dying_run)
    died = frame["training.parallelism.tp"] == 2
    assert frame.loc[died, "status"].tolist() == ["error", "error"]
    assert frame.loc[died, "error"].str.startswith("worker process died").all()
    assert (frame.loc[~died, "status"] == "ok").all()
    expected = _run(path, tmp_path / "serial", executor="serial", run_fn=fake_runs.ok_run)
    pd.testing.assert_series_equal(frame.loc[~died, "step_time_s"],
                                   expected.loc[~died, "step_time_s"])


def test_invalid_scenarios_are_error_rows_in_place(tmp_path, write_experiment, caplog):
    path = write_experiment("""\
sweep:
  grid:
    training.parallelism.tp: [2, 0, 4]
""")
    frame = _run(path, tmp_path / "out", executor="serial", run_fn=fake_runs.ok_run)
    assert frame["status"].tolist() == ["ok", "error", "ok"]
    assert frame["error"][1].startswith(f"{path}:16:")
    assert frame["training.parallelism.tp"].tolist() == [2, 0, 4]
    assert "1 of 3 scenarios are invalid" in caplog.text


def test_traces_are_written_beside_the_results_not_into_them(tmp_path, write_experiment):
    import json

    path = write_experiment("sweep:\n  grid:\n    training.parallelism.tp: [2, 4]\n")
    out = tmp_path / "out"
    frame = _run(path, out, executor="local", workers=2, trace=True, run_fn=fake_runs.tracing_run)
    assert "trace" not in frame.columns
    traces = sorted((out / "traces").iterdir())
    assert [p.name for p in traces] == ["000000.json", "000001.json"]
    events = json.loads(traces[1].read_text())["traceEvents"]
    assert events[0]["dur"] == frame["step_time_s"][1] * 1e6
    _run(path, out, executor="serial", run_fn=fake_runs.tracing_run)  # no trace asked
    assert not any((out / "traces").iterdir())


def test_progress_bar_counts_done_failed_and_left(tmp_path, write_experiment, capsys):
    path = write_experiment("sweep:\n  grid:\n    training.parallelism.tp: [2, 3, 4]\n")
    run_experiment(path, tmp_path / "out", executor="serial", progress=True,
                   run_fn=fake_runs.flaky_run)
    shown = capsys.readouterr().err.replace("\r", "\n")
    assert "3/3" in shown and "failed 1, left 0" in shown


def test_auto_runs_a_short_sweep_here_and_hands_a_long_one_to_a_pool(tmp_path, monkeypatch,
                                                                        write_experiment):
    from clustersim.experiment import executors

    path = write_experiment(GRID)
    serial = _run(path, tmp_path / "serial", executor="serial", run_fn=fake_runs.ok_run)
    started = []
    real_pool = executors._new_pool
    monkeypatch.setattr(executors, "_new_pool", lambda n: started.append(n) or real_pool(n))
    short = _run(path, tmp_path / "short", executor="auto", workers=2, run_fn=fake_runs.ok_run)
    assert started == []  # 12 instant scenarios: a pool would only cost its start-up
    pd.testing.assert_frame_equal(short, serial)
    monkeypatch.setattr(executors, "POOL_START_S", 0.0)  # every pool pays
    pooled = _run(path, tmp_path / "pooled", executor="auto", workers=2, run_fn=fake_runs.ok_run)
    assert started == [2]
    pd.testing.assert_frame_equal(pooled, serial)
