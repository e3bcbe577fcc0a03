"""A closed standard output (``clustersim ... | head``) ends quietly with 0; a broken pipe
anywhere else (a worker's, multiprocessing's) is a failure with its traceback, never a silent
0 with no results."""

from __future__ import annotations

import importlib
import subprocess
import sys

from clustersim.cli import presets_cmd


def test_a_broken_pipe_that_is_not_stdout_fails_loudly(monkeypatch, capsys):
    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(presets_cmd, "run", broken)
    assert importlib.import_module("clustersim.cli.main").main(["presets"]) == 1
    assert "BrokenPipeError" in capsys.readouterr().err


def test_a_reader_that_stops_early_is_not_an_error():
    sizes = ",".join(str(n) for n in range(1, 3001))  # ~200 KB of table: more than a pipe holds
    code = ("import sys, clustersim.cli.main as _; "
            "m = sys.modules['clustersim.cli.main']; "
            "sys.exit(m.main(['collective', '--topology', 'dgx-h100', '--devices', '8', "
            f"'--op', 'all_reduce', '--sizes', '{sizes}']))")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.read(10)
    child.stdout.close()
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err.decode()
    assert b"Traceback" not in err
