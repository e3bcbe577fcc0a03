"""Predictions against the bundled nccl-tests measurements (8x A100 and 8x H100 sweeps)."""

from __future__ import annotations

import pytest
import yaml

from clustersim.calibrate.collectives import held_out_ids
from clustersim.collectives.calibration import (CALIBRATION_FILE, check_bounds,
                                                default_calibration)
from clustersim.validate.collectives import collective_validation, load_measurements


@pytest.fixture(scope="module")
def table():
    return collective_validation()


@pytest.mark.parametrize("sweep", ["AZ-A100-AR-", "AZ-H100-AR-"])
def test_large_sizes_within_10_percent(table, sweep):
    rows = table[table["id"].str.startswith(sweep) & (table["size_bytes"] >= 2**26)]
    assert len(rows) == 8
    assert rows["error"].abs().max() < 0.10


@pytest.mark.parametrize("sweep", ["AZ-A100-AR-", "AZ-H100-AR-"])
def test_small_sizes_within_30_percent(table, sweep):
    rows = table[table["id"].str.startswith(sweep) & (table["size_bytes"] <= 2**16)]
    assert len(rows) == 7
    assert rows["error"].abs().max() < 0.30


def test_every_row_is_predicted(table):
    assert len(table) == len(load_measurements())
    assert table["predicted_busbw_GBps"].gt(0).all()


def test_calibration_records_the_rows_it_was_fitted_on():
    data = yaml.safe_load(CALIBRATION_FILE.read_text())
    ids = set(load_measurements()["id"])
    held = set(held_out_ids())
    for tech in ("nvlink3", "nvlink4"):
        fitted = data["technologies"][tech]["fitted_on"]
        assert len(fitted) >= 15 and set(fitted) <= ids
        assert not set(fitted) & held   # the held-out fifth never enters the fit


def test_calibration_is_physical():
    assert check_bounds(default_calibration()) == []
