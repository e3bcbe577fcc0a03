"""Published runs of zero-bubble pipeline schedules (Qi et al., ICLR 2024), FP8 training
(torchtitan H100 benchmarks, Dec 2024 and June 2025) and an MoE with MXFP8 (torchtitan, Llama 4
Scout on GB200), predicted by a simulator never fitted on them
(``clustersim/validate/data/frontier_runs.csv``, :mod:`clustersim.validate.frontier`).

The error bounds are the ones measured when the rows were bundled (analytic fidelity,
docs/frontier-runs.md) plus two points of margin: they record where the physics stands, and
fail when a change makes it worse. The relations below are the sources' own findings and
first principles, not snapshots: a schedule with less bubble is faster at the same plan, FP8
GEMMs are faster than BF16 ones at the same plan, overlapping TP communication does not slow
a step, and the zero-bubble schedules' memory follows from the micro-batches they hold.
"""

from __future__ import annotations

import pytest

from clustersim.calibrate import training as calibrate_training
from clustersim.validate import frontier
from clustersim.validate.frontier import (CONFLICTING_ROWS, KNOWN_OOM, load_runs,
                                          predict_runs, row_config, summarize)

# Measured (analytic): |error| median and max per family, conflicting rows apart; after the
# FP8 casts and the 500 W power-limited clock of TT24/TT25's H100s (bundling: fp8 16.1% /
# 31.8%, fp8-pipeline 32.7% / 33.5%, overall 6.6% / 33.5%).
MEASURED = {"zero-bubble": (0.040, 0.128), "fp8": (0.061, 0.140),
            "fp8-pipeline": (0.157, 0.165)}
OVERALL = (0.045, 0.165)
MARGIN = 0.02


@pytest.fixture(scope="module")
def analytic():
    return predict_runs(fidelity="analytic").set_index("id")


def test_every_row_runs(analytic):
    assert len(analytic) == len(load_runs())
    assert analytic["predicted_step_s"].notna().all()
    oom = set(analytic.index[analytic["status"] == "oom"])
    assert oom == set(KNOWN_OOM) | set(CONFLICTING_ROWS), oom
    assert (analytic.drop(index=list(oom))["status"] == "ok").all()


def test_errors_within_the_measured_bounds(analytic):
    summary = summarize(analytic.reset_index())
    print(analytic[["measured_step_s", "predicted_step_s", "error", "bubble_s",
                    "exposed_comm_s"]].to_string())
    assert summary["rows"] == len(analytic) - len(CONFLICTING_ROWS)
    assert summary["median_abs_error"] <= OVERALL[0] + MARGIN, summary
    assert summary["max_abs_error"] <= OVERALL[1] + MARGIN, summary
    assert set(summary["families"]) == set(MEASURED)
    for family, (median, worst) in MEASURED.items():
        fam = summary["families"][family]
        assert fam["median_abs_error"] <= median + MARGIN, (family, fam)
        assert fam["max_abs_error"] <= worst + MARGIN, (family, fam)


ZB_SIZES = ["1.5B", "14.6B", "28.3B"]


def _zb(frame, size):
    return [frame.loc[f"ZB24-{size}-{s}"] for s in ("1F1B", "ZB-1p", "ZB-2p")]


@pytest.mark.parametrize("size", ZB_SIZES)
def test_zero_bubble_schedules_order(analytic, size):
    """Qi et al. Table 4: ZB-2p faster than ZB-1p faster than 1F1B at every setting; the
    simulator agrees, and its bubble shrinks in the same order."""
    one, zb1, zb2 = _zb(analytic, size)
    for col in ("measured_step_s", "predicted_step_s"):
        assert zb2[col] < zb1[col] < one[col], (size, col)
    assert zb2["bubble_s"] <= zb1["bubble_s"] < one["bubble_s"]


@pytest.mark.parametrize("size", ZB_SIZES)
def test_zero_bubble_memory(analytic, size):
    """ZB-1p holds 1F1B's p micro-batches (peak within 15%; Table 4: 1.03-1.08x), ZB-2p
    twice their activations; every predicted peak is within 5% of Table 4's."""
    one, zb1, zb2 = _zb(analytic, size)
    for col in ("measured_memory_gib", "peak_memory_gib"):
        assert zb1[col] <= 1.15 * one[col] < zb2[col], (size, col)
    for row in (one, zb1, zb2):
        assert row["peak_memory_gib"] == pytest.approx(row["measured_memory_gib"], rel=0.05)


@pytest.mark.parametrize("pair", [
    ("TT24-8B-128-bf16", "TT24-8B-128-fp8"),
    ("TT25-70B-256-bf16", "TT25-70B-256-fp8"),
    ("TT25-70B-256-bf16-asynctp", "TT25-70B-256-fp8-asynctp"),
    ("TTMX25-SCOUT-256-bf16", "TTMX25-SCOUT-256-mxfp8")])
def test_fp8_faster_than_bf16_at_the_same_plan(analytic, pair):
    bf16, fp8 = (analytic.loc[i] for i in pair)
    for col in ("measured_step_s", "predicted_step_s"):
        assert fp8[col] < bf16[col], (pair, col)
    # never past the 2x of the FP8 peak: attention, norms and communication stay as they were
    assert bf16["predicted_step_s"] / fp8["predicted_step_s"] < 2.0


@pytest.mark.parametrize("slow, fast", [
    ("TT25-70B-256-bf16", "TT25-70B-256-bf16-asynctp"),
    ("TT25-70B-256-fp8", "TT25-70B-256-fp8-asynctp"),
    ("TT24-405B-512-fp8-1f1b", "TT24-405B-512-fp8-i1f1b")])
def test_async_tp_and_interleaving_do_not_slow_a_step(analytic, slow, fast):
    for col in ("measured_step_s", "predicted_step_s"):
        assert analytic.loc[fast, col] < analytic.loc[slow, col], (slow, fast, col)
    assert (analytic.loc[fast, "bubble_s"] + analytic.loc[fast, "exposed_comm_s"]
            < analytic.loc[slow, "bubble_s"] + analytic.loc[slow, "exposed_comm_s"])


def test_the_conflicting_rows_cannot_fit():
    """TTMX25's stated plan (no activation checkpointing, 10 x 8192 tokens a GPU): the two
    saved SwiGLU matmul outputs of the two experts each token visits alone exceed a GB200's
    186 GB, and the simulator puts the plan out of memory."""
    runs = load_runs().set_index("id")
    for row_id in CONFLICTING_ROWS:
        row = runs.loc[row_id]
        tokens = int(row["micro_batch"]) * int(row["seq_len"])
        experts_visited = int(row["top_k"]) + int(row["shared_experts"])
        width, layers = int(row["expert_ffn_hidden"]), int(row["layers"])
        floor = tokens * experts_visited * 2 * width * 2 * layers   # bf16 bytes
        assert row["recompute"] == "none" and floor > 186e9, (row_id, floor)


def test_frontier_rows_never_enter_a_fit():
    """The calibration reads training_runs.csv only (through validate.training.load_runs);
    no frontier id is in it, and every frontier id names a frontier source."""
    fitted = set(calibrate_training.load_runs()["id"])
    assert fitted and not fitted & set(load_runs()["id"])
    assert all(str(i).split("-")[0] in frontier.SOURCES for i in load_runs()["id"])


def test_row_config_through_training_module():
    """clustersim.validate.training.row_config builds frontier rows too (the same dict)."""
    from clustersim.validate.training import row_config as training_row_config
    for _, row in load_runs().iterrows():
        assert training_row_config(row) == row_config(row)
