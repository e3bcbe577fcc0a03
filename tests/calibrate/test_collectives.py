"""Refitting the collective calibration on the bundled nccl-tests sweeps."""

from __future__ import annotations

import pytest

from clustersim.calibrate import fit_calibration
from clustersim.collectives.calibration import check_bounds, default_calibration


def test_fit_reproduces_the_bundled_values():
    cal, report = fit_calibration()
    bundled = default_calibration()
    for tech in ("nvlink3", "nvlink4"):
        assert cal.tech(tech).efficiency == pytest.approx(bundled.tech(tech).efficiency,
                                                          rel=0.02)
    # NCCL's mid-size channel ramp is not modelled: the fit leaves ~10% there
    fitted = report[~report["held_out"]]["error"].abs()
    held = report[report["held_out"]]["error"].abs()
    assert fitted.median() < 0.12 and held.median() < 0.12
    assert held.max() < 0.35
    assert check_bounds(cal) == []
