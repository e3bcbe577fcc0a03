"""A sweep killed with SIGKILL mid-way, then resumed: every scenario exactly once, and the
values of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import fake_runs
from clustersim.experiment.runner import run_experiment

REPO = Path(__file__).resolve().parents[2]
DRIVER = """\
import sys
import fake_runs
from clustersim.experiment.runner import run_experiment

if __name__ == "__main__":  # spawned workers re-import this file
    run_experiment(sys.argv[1], sys.argv[2], workers=2, progress=False,
                   resume=sys.argv[3] == "resume", run_fn=fake_runs.slow_run)
"""
SWEEP = """\
sweep:
  grid:
    training.parallelism.tp: [1, 2, 4, 8]
    training.micro_batch: [1, 2, 4]
"""
N = 12
DEADLINE_S = 25  # only a bound on waiting; nothing asserts on time


def _driver(tmp_path, experiment, out, mode, calls, sleep_s):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "FAKE_RUN_SLEEP_S": str(sleep_s), "FAKE_RUN_CALLS_DIR": str(calls),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(fake_runs.__file__).parent),
                                          os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(script), str(experiment), str(out), mode],
                            env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _wait_for_parts(process, parts: Path, at_least: int) -> int:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and process.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.json"))) >= at_least:
            break
        time.sleep(0.02)
    return len(list(parts.glob("*.json"))) if parts.is_dir() else 0


def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path, write_experiment):
    experiment = write_experiment(SWEEP)
    out = tmp_path / "out"
    calls_before, calls_after = tmp_path / "calls-1", tmp_path / "calls-2"
    calls_before.mkdir()
    calls_after.mkdir()

    first = _driver(tmp_path, experiment, out, "fresh", calls_before, sleep_s=1.0)
    try:
        stored = _wait_for_parts(first, out / "parts", at_least=3)
        assert first.poll() is None, "the sweep ended before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its pool workers, no clean-up
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=DEADLINE_S)  # reap it and close its pipe
    stored_names = sorted(p.name for p in (out / "parts").glob("*.json"))
    assert 3 <= len(stored_names) < N
    assert not (out / "results.csv").exists()

    second = _driver(tmp_path, experiment, out, "resume", calls_after, sleep_s=0)
    output = second.communicate(timeout=DEADLINE_S)[0].decode()
    assert second.returncode == 0, output

    stored_indices = {int(name.split("-")[0]) for name in stored_names}
    rerun = {int(p.name.split("-")[0]) for p in calls_after.iterdir()}
    assert len(list(calls_after.iterdir())) == len(rerun)  # each at most once
    assert rerun == set(range(N)) - stored_indices  # stored ones were not run again

    resumed = pd.read_csv(out / "results.csv")
    assert len(resumed) == N and resumed["scenario"].is_unique
    assert len(list((out / "parts").glob("*.json"))) == N
    whole = run_experiment(experiment, tmp_path / "whole", executor="serial",
                           run_fn=fake_runs.ok_run, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), whole)
    assert stored >= 3
