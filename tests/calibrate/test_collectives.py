"""Refitting the collective calibration on the bundled nccl-tests sweeps."""

from __future__ import annotations

import pytest

from clustersim.calibrate import fit_calibration
from clustersim.collectives.calibration import default_calibration


def test_fit_reproduces_the_bundled_values():
    cal, report = fit_calibration()
    bundled = default_calibration()
    for tech in ("nvlink3", "nvlink4"):
        assert cal.tech(tech).efficiency == pytest.approx(bundled.tech(tech).efficiency,
                                                          rel=0.02)
    assert report["error"].abs().median() < 0.05
