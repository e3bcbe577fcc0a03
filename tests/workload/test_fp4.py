"""FP4 training (NVFP4 on Blackwell): GEMM operands in 4-bit E2M1 with one FP8 scale per 16
values (0.5625 bytes an element), attention and elementwise work in bf16, at the device's
FP4 peak; a device without FP4 refuses it with its available precisions."""

from __future__ import annotations

import pytest

from clustersim.config.experiment import ExperimentConfig
from clustersim.experiment.scenario import Scenario, run_scenario
from clustersim.hardware import get_device
from clustersim.hardware.compute import op_time_s
from clustersim.workload.flops import OpCost
from clustersim.workload.ops import element_bytes


def test_nvfp4_operands_carry_their_block_scales():
    assert element_bytes("fp4") == (2, 0.5 + 1 / 16)


def test_a_large_gemm_runs_at_most_twice_as_fast_as_fp8():
    b200 = get_device("b200")
    n = 8192
    times = {dt: op_time_s(OpCost("g", "gemm", 2 * n ** 3, 3 * n * n * element_bytes(dt)[1],
                                  m=n, n=n, k=n), b200, dt) for dt in ("fp8", "fp4")}
    # the FP4 peak is twice the FP8 one: a compute-bound GEMM gains up to that, no more
    assert 1.2 < times["fp8"] / times["fp4"] <= 2.0


def _step(topology, devices, precision):
    cfg = ExperimentConfig.model_validate({
        "name": "fp4", "cluster": {"topology": topology, "devices": devices},
        "model": "llama3-70b", "training": {"global_batch": 72, "precision": precision,
                                            "parallelism": {"tp": 8, "zero": 1}},
        "simulation": {"fidelity": "analytic"}})
    return run_scenario(Scenario(0, "fp4", cfg))


def test_fp4_steps_faster_than_fp8_on_gb200_but_not_twice():
    bf16, fp8, fp4 = (_step("gb200-nvl72", 72, p)["step_time_s"] for p in ("bf16", "fp8", "fp4"))
    assert fp4 < fp8 < bf16
    assert fp8 / fp4 < 2.0      # attention, norms and communication stay 16-bit


def test_a_device_without_fp4_says_which_precisions_it_has():
    row = _step("dgx-h100", 8, "fp4")
    assert row["status"] == "error" and "fp8" in row["error"] and "'fp4'" in row["error"]


def test_the_pre_run_check_refuses_fp4_on_hopper():
    from clustersim.errors import InputError  # noqa: only this test
    from clustersim.experiment.scenario import check_scenario  # noqa: only this test

    cfg = ExperimentConfig.model_validate({"name": "x", "cluster": {"topology": "dgx-h100"},
                                           "model": "llama3-8b",
                                           "training": {"global_batch": 8, "precision": "fp4"}})
    with pytest.raises(InputError, match="no peak FLOP/s for 'fp4'"):
        check_scenario(cfg)
