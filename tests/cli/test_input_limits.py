"""Inputs with no size or sense are one located message and exit 2, before any work: booleans
for counts, fractional bytes, one-device collectives, alias bombs, sweeps past the cap and
clusters past the machine."""

from __future__ import annotations

import pytest

from clustersim.cli.main import main


def _run(tmp_path, capsys, text, *extra):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--executor", "serial",
                 *extra])
    return code, capsys.readouterr().err


BASE = """name: e
cluster: {topology: dgx-h100, devices: 8}
model: llama3-8b
training:
  global_batch: 8
"""


def test_a_boolean_is_not_a_count(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, BASE + "  parallelism: {tp: true}\n")
    assert code == 2 and "e.yaml:6:" in err and "expected a whole number, got the boolean true" in err


def test_an_alias_bomb_stops_at_the_value_cap(tmp_path, capsys):
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    code, err = _run(tmp_path, capsys, "\n".join(lines) + "\n")
    assert code == 2 and "expands to more than 1,000,000 values" in err


def test_a_sweep_is_counted_before_it_is_expanded(tmp_path, capsys):
    grid = "".join(f"    model.{k}: [{', '.join(str(v) for v in range(1, 11))}]\n"
                   for k in ("layers", "heads", "hidden", "ffn_hidden", "vocab", "kv_heads",
                             "seq_len"))
    text = BASE + "sweep:\n  grid:\n" + grid
    code, err = _run(tmp_path, capsys, text)
    assert code == 2 and "declares 10,000,000 scenarios" in err and "--max-scenarios" in err
    code, err = _run(tmp_path, capsys, text, "--max-scenarios", "5")
    assert code == 2 and "more than the 5 one run takes" in err


@pytest.mark.parametrize("args,words", [
    (["--devices", "1000000000", "--sizes", "1MiB"], "devices would take about"),
    (["--devices", "8", "--sizes", "0.5B"], "not a whole number of bytes"),
    (["--devices", "1", "--sizes", "1MiB"], "moves nothing"),
])
def test_collective_arguments_without_sense(capsys, args, words):
    code = main(["collective", "--op", "all_reduce", "--topology", "dgx-h100", *args])
    assert code == 2 and words in capsys.readouterr().err
