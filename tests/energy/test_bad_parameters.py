"""Bad technology parameters are input errors a user can act on (exit code 2, the file and the
line of the offending value); a model that does not fit is an ``oom`` row with its reason and
its energy, never a silent zero."""

from __future__ import annotations

import re

import pytest

from clustersim.errors import InputErrors

from clustersim.cli.main import main
from clustersim.config.experiment import ExperimentConfig
from clustersim.config.yamlio import load_yaml_file
from clustersim.experiment.scenario import Scenario, run_scenario
from clustersim.experiment.sweep import expand

SCALE_OUT = """\
name: negative-scale-out
cluster:
  topology: dgx-h100
  devices: 16
  overrides:
    scale_out.bandwidth: -5 GB/s
model: llama3-8b
training:
  global_batch: 16
  parallelism: {tp: 8}
output:
  plots: false
"""
SCALE_OUT_LINE = 6

DEVICE = """\
name: negative-device-memory
cluster:
  topology: dgx-h100
  devices: 8
  overrides:
    device_overrides:
      memory.bandwidth: -5 GB/s
model: llama3-8b
training:
  global_batch: 16
  parallelism: {tp: 8}
output:
  plots: false
"""
DEVICE_LINE = 7


def _run(tmp_path, text: str, capsys) -> tuple[int, str]:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--executor", "serial"])
    return code, capsys.readouterr().err


def test_negative_scale_out_bandwidth_is_bad_input(tmp_path, capsys):
    code, err = _run(tmp_path, SCALE_OUT, capsys)
    assert code == 2
    assert "experiment.yaml" in err and "scale_out.bandwidth" in err and "-5 GB/s" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_negative_scale_out_bandwidth_points_at_its_line(tmp_path, capsys):
    _, err = _run(tmp_path, SCALE_OUT, capsys)
    assert re.search(rf"experiment\.yaml:{SCALE_OUT_LINE}\b", err), err


def test_negative_device_memory_bandwidth_is_bad_input_at_its_line(tmp_path, capsys):
    code, err = _run(tmp_path, DEVICE, capsys)
    assert code == 2
    assert re.search(rf"experiment\.yaml:{DEVICE_LINE}\b", err), err
    assert "memory.bandwidth" in err and "-5 GB/s" in err


def test_negative_device_memory_bandwidth_never_runs(tmp_path):
    """The scenario never runs with a negative bandwidth: expanding the experiment refuses
    it, naming the key and the line that set it."""
    path = tmp_path / "experiment.yaml"
    path.write_text(DEVICE)
    with pytest.raises(InputErrors) as err:
        expand(load_yaml_file(path))
    assert "memory.bandwidth" in str(err.value) and "positive" in str(err.value)
    assert f"experiment.yaml:{DEVICE_LINE}:" in str(err.value)


def test_a_model_that_does_not_fit_is_an_oom_row_with_its_reason_and_energy():
    """Llama 3 70B on 16 H100-80GB, tp=8 and ZeRO-1 without offload (cxl-offload-vs-hbm's
    first case): weights 16.4 GiB + Adam states 49.3 GiB + activations exceed 80 GiB."""
    config = ExperimentConfig.model_validate({
        "name": "no-offload", "cluster": {"topology": "cxl-memory-pool", "devices": 16},
        "model": "llama3-70b",
        "training": {"global_batch": 32, "micro_batch": 1, "recompute": "full",
                     "parallelism": {"tp": 8, "sp": True, "zero": 1},
                     "offload": {"optimizer": "none"}},
        "simulation": {"fidelity": "analytic"}})
    row = run_scenario(Scenario(0, "no-offload", config))
    assert row["status"] == "oom"
    assert re.search(r"needs \d+\.\d GiB per device, has 80\.0 GiB", row["error"])
    assert "optimizer" in row["error"]
    assert row["peak_memory_gib"] > row["memory_capacity_gib"] == 80.0
    for key in ("energy_j", "energy_per_token_j", "avg_power_w", "energy_compute_j"):
        assert row[key] > 0, key


def test_offloading_the_optimizer_states_makes_it_fit_and_moves_energy_to_cxl():
    """The same model with the states in the CXL pool fits and pays for the traffic on the
    CXL links (flow fidelity: the offload flows cross the cxl2 edges)."""
    config = ExperimentConfig.model_validate({
        "name": "cxl-offload", "cluster": {"topology": "cxl-memory-pool", "devices": 16},
        "model": "llama3-70b",
        "training": {"global_batch": 32, "micro_batch": 1, "recompute": "full",
                     "parallelism": {"tp": 8, "sp": True, "zero": 1},
                     "offload": {"optimizer": "cxl"}},
        "simulation": {"fidelity": "flow"}})
    row = run_scenario(Scenario(0, "cxl-offload", config))
    assert row["status"] == "ok", row["error"]
    assert row["energy_link_cxl2_j"] > 0
