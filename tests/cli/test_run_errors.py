"""Bad experiment files through the command line: malformed YAML, an unknown key, a bad unit
and an unknown preset each give one line with file:line, exit code 2, and no traceback."""

from __future__ import annotations

import re

import pytest

from clustersim.cli.main import main

GOOD = """\
name: errors
cluster:
  topology: dgx-h100
  devices: 8
  overrides:
    scale_out.bandwidth: 50 GB/s
model: llama3-8b
training:
  global_batch: 8
  parallelism: {tp: 8}
simulation: {fidelity: analytic}
output: {plots: false}
"""

CASES = [
    ("malformed", GOOD.replace("parallelism: {tp: 8}", "parallelism: {tp: 8"), 10,
     "never closed"),
    ("unknown key", GOOD.replace("  global_batch: 8", "  global_bach: 8"), 9,
     "unknown key 'global_bach'"),
    ("bad unit", GOOD.replace("50 GB/s", "50 GHz"), 6, "frequency"),
    ("unknown preset", GOOD.replace("topology: dgx-h100", "topology: dgx-h10"), 3,
     "did you mean 'dgx-h100'"),
    ("unknown model", GOOD.replace("model: llama3-8b", "model: llama3-7b"), 7,
     "unknown model preset 'llama3-7b'"),
    ("bad enum", GOOD.replace("fidelity: analytic", "fidelity: packet"), 11, "'flow'"),
]


@pytest.mark.parametrize("what,text,line,words", CASES, ids=[c[0] for c in CASES])
def test_bad_experiment_file_is_one_located_line_and_exit_2(tmp_path, capsys, what, text, line,
                                                            words):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--executor", "serial"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(rf"exp\.yaml:{line}:\d+", lines[0]), lines[0]
    assert words in lines[0]


def test_the_good_file_runs(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(GOOD)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--executor", "serial"]) == 0
