"""Published training runs predicted within the issue's bounds: median |error| <= 8% and
max <= 15% over every bundled row (Megatron-LM 2020, Narayanan et al. SC'21, Megatron-Core
2024), compared like with like (each source's own FLOP formula turned back into its step time).

Calibration physics behind these numbers (per-family training efficiency and the H100 16-bit
GEMM k-overhead) is fitted by ``clustersim calibrate`` on named rows, a fifth held out
(tests/calibrate/test_training_fit.py bounds the held-out rows apart); nothing is tuned per
row. A row whose published figure contradicts its own stated configuration is predicted and
reported apart, and the contradiction itself is tested here.
"""

from __future__ import annotations

import pytest

from clustersim.validate.training import (CONFLICTING_ROWS, load_runs, predict_runs,
                                          summarize)


@pytest.fixture(scope="module")
def analytic():
    return predict_runs(fidelity="analytic")


def _consistent(frame):
    return frame[~frame["id"].isin(list(CONFLICTING_ROWS))]


def test_every_row_runs(analytic):
    assert (analytic["status"] == "ok").all(), analytic[analytic["status"] != "ok"]
    assert len(analytic) == len(load_runs())


def test_median_and_max_error_within_bounds(analytic):
    summary = summarize(analytic)
    print(analytic[["id", "measured_step_s", "predicted_step_s", "error"]].to_string())
    assert summary["rows"] == len(analytic) - len(CONFLICTING_ROWS)
    assert summary["median_abs_error"] <= 0.08, summary
    assert summary["max_abs_error"] <= 0.15, summary


def test_every_source_is_within_bounds_on_its_own(analytic):
    """No source is fitted at another's expense: each publication alone meets the bounds."""
    for source, rows in _consistent(analytic).groupby("source"):
        errors = rows["error"].abs()
        assert errors.median() <= 0.08 and errors.max() <= 0.15, (source, errors.tolist())


def test_the_conflicting_row_contradicts_its_sibling(analytic):
    """MCORE24-3 and -4 do the same FLOPs per GPU, and -4 carries twice the data-parallel
    bytes per NIC: simulated, -4 is at least 0.17 s slower (the bytes cannot hide), while the
    source reports them 0.04 s apart. Both rows' FLOPs per GPU agree within 2%."""
    rows = analytic.set_index("id")
    three, four = rows.loc["MCORE24-3"], rows.loc["MCORE24-4"]
    runs = load_runs().set_index("id")
    per_gpu = [runs.loc[i, "tflops_per_accel"] * rows.loc[i, "measured_step_s"]
               for i in ("MCORE24-3", "MCORE24-4")]
    assert abs(per_gpu[0] / per_gpu[1] - 1) < 0.02
    assert four["predicted_step_s"] - three["predicted_step_s"] >= 0.17
    assert four["measured_step_s"] - three["measured_step_s"] <= 0.05


def test_flow_fidelity_agrees_on_the_rows_that_simulate_quickly(analytic):
    """The default (flow) fidelity gives the same answers: on the rows up to 512 devices (a
    few seconds in all) it stays within the bounds and within 3% of the analytic model."""
    runs = load_runs()
    quick = runs[runs["num_accel"] <= 512]
    flow = predict_runs(quick, fidelity="flow").set_index("id")
    assert _consistent(flow.reset_index())["error"].abs().max() <= 0.15
    both = analytic.set_index("id").loc[flow.index]
    gap = (flow["predicted_step_s"] / both["predicted_step_s"] - 1).abs()
    assert gap.max() <= 0.03, gap.sort_values().tail()
