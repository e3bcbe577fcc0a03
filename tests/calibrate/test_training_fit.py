"""The training-factor fit: which rows it uses and holds out, bounds that keep it physical, a
trial that leaves nothing behind, and the committed values' error on fitted and held-out
rows reported apart (each within the validation's bound)."""

from __future__ import annotations

import pytest

from clustersim.calibrate import training
from clustersim.calibrate.refit import FittedValue, summary
from clustersim.hardware.catalog import get_device
from clustersim.hardware.compute import compute_families, op_time_s
from clustersim.validate.training import CONFLICTING_ROWS, load_runs
from clustersim.workload.flops import OpCost


def test_a_fifth_of_every_family_is_held_out():
    runs = load_runs()
    for _, _, prefixes in training.TRAINING_FIT_PLAN:
        ids = list(training.family_rows(prefixes, runs)["id"])
        held = training.held_out(ids)
        assert len(held) >= 1 and len(held) >= len(ids) // 5
        assert not set(held) & set(CONFLICTING_ROWS)


def test_every_fitted_parameter_has_bounds_and_the_committed_values_lie_inside():
    for family, params, _ in training.TRAINING_FIT_PLAN:
        for name, value in training.current_values(family, params).items():
            low, high = training.BOUNDS[name]
            assert low <= value <= high, (family, name, value)


def test_every_family_states_its_training_efficiency_decision():
    for name, family in compute_families().items():
        assert family.training_efficiency is not None, name
        assert (family.training_efficiency_fitted_on or family.training_efficiency_basis
                or family.training_efficiency_from), name


def test_a_trial_changes_compute_time_and_is_undone():
    h100 = get_device("h100-sxm-80gb")
    gemm = OpCost("g", "gemm", 2 * 4096 ** 3, 3 * 2 * 4096 ** 2, m=4096, n=4096, k=4096)
    before = op_time_s(gemm, h100, "bf16")
    eff = training.current_values("h100", ["training_efficiency"])["training_efficiency"]
    with training.trial_values("h100", {"training_efficiency": eff / 2}):
        during = op_time_s(gemm, h100, "bf16")
    assert during == pytest.approx(2 * before - h100_overhead(), rel=0.01)
    assert op_time_s(gemm, h100, "bf16") == before


def h100_overhead() -> float:
    return compute_families()["h100"].kernel_overhead_s


def test_fitted_value_check_names_what_moved_and_what_is_out_of_bounds():
    moved = FittedValue("compute.yaml", ("h100", "training_efficiency"), 0.80, 0.85, (0.5, 1))
    assert "run `clustersim calibrate`" in moved.problems(0.01)[0]
    assert FittedValue("f", ("a",), 1.2, 1.2, (0.5, 1.0)).problems(0.01)


@pytest.fixture(scope="module")
def report():
    return training.training_report()


def test_committed_values_meet_the_bounds_on_fitted_and_held_out_rows_apart(report):
    roles = summary(report)
    print(report[["id", "role", "measured_step_s", "predicted_step_s", "error"]])
    assert set(roles.index) == {"fitted", "held-out", "conflicting"}
    for role in ("fitted", "held-out"):
        assert roles.loc[role, "median"] <= 0.08, roles
        assert roles.loc[role, "max"] <= 0.15, roles
