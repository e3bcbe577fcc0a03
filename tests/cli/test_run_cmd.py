"""``clustersim run``: flags, summary, files written, exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import pytest

from clustersim.errors import InputError
from clustersim.cli import run_cmd
from clustersim.experiment import scenario as scenario_module

FAKES = Path(__file__).resolve().parents[1] / "experiment"
if str(FAKES) not in sys.path:  # spawned workers inherit sys.path and import fake_runs
    sys.path.insert(0, str(FAKES))
import fake_runs  # noqa: E402

EXPERIMENT = """\
name: cli-demo
cluster: {topology: dgx-h100, devices: 16}
model: llama3-8b
training: {global_batch: 64, parallelism: {tp: 8}}
sweep:
  grid:
    training.parallelism.tp: [2, 3, 4]
"""


@pytest.fixture(autouse=True)
def fake_simulator(monkeypatch):
    """The CLI runs the real default run function: point it at a fake one."""
    monkeypatch.setattr(scenario_module, "run_scenario", fake_runs.flaky_run)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clustersim run")
    run_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_run_prints_a_summary_and_writes_results(tmp_path, capsys):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(EXPERIMENT)
    out = tmp_path / "out"
    assert run_cmd.run(_args(str(experiment), "--out", str(out), "--workers", "2")) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0].split()
    assert header == ["scenario", "status", "step_time_s", "tokens_per_s", "mfu",
                      "peak_memory_gib", "training.parallelism.tp"]
    assert "3 scenarios: 2 ok, 1 error" in printed
    assert f"wrote {out / 'results.csv'}, {out / 'results.parquet'}, {out / 'report.md'}" \
        in printed
    frame = pd.read_csv(out / "results.csv")
    assert frame["status"].tolist() == ["ok", "error", "ok"]


def test_resume_and_executor_flags_reach_the_runner(tmp_path, capsys):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(EXPERIMENT)
    out = tmp_path / "out"
    assert run_cmd.run(_args(str(experiment), "--out", str(out), "--executor", "serial")) == 0
    parts = sorted(p.stat().st_mtime_ns for p in (out / "parts").iterdir())
    assert run_cmd.run(_args(str(experiment), "--out", str(out), "--executor", "serial",
                             "--resume")) == 0
    assert sorted(p.stat().st_mtime_ns for p in (out / "parts").iterdir())[:2] == parts[:2]


def test_bad_input_is_an_input_error(tmp_path):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(EXPERIMENT.replace("parallelism.tp", "parallelism.tq"))
    with pytest.raises(InputError, match=r"exp.yaml:7:5: sweep.grid: unknown key 'tq'"):
        run_cmd.run(_args(str(experiment), "--out", str(tmp_path / "out")))
    with pytest.raises(InputError, match="no such file"):
        run_cmd.run(_args(str(tmp_path / "missing.yaml")))
    with pytest.raises(InputError, match="--scheduler needs --executor dask"):
        run_cmd.run(_args(str(experiment), "--executor", "local", "--scheduler", "tcp://x:1"))


def test_flags_are_checked_by_the_parser():
    with pytest.raises(SystemExit):
        _args("exp.yaml", "--workers", "0")
    with pytest.raises(SystemExit):
        _args("exp.yaml", "--executor", "cloud")
    args = _args("exp.yaml", "--scheduler", "tcp://10.0.0.5:8786", "--trace")
    assert (args.scheduler, args.trace, args.executor) == ("tcp://10.0.0.5:8786", True, None)


def test_exit_codes_through_main(tmp_path, capsys):
    main = pytest.importorskip("clustersim.cli.main")
    try:
        main.build_parser()
    except ImportError as exc:  # another command is still being written
        pytest.skip(f"not every command imports yet: {exc}")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(EXPERIMENT)
    assert main.main(["run", str(experiment), "--out", str(tmp_path / "a"),
                      "--executor", "serial"]) == 0
    experiment.write_text(EXPERIMENT.replace("global_batch: 64", "global_batch: -1"))
    assert main.main(["run", str(experiment), "--out", str(tmp_path / "b")]) == 2
    assert "exp.yaml:4:" in capsys.readouterr().err
