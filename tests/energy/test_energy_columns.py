"""Energy columns are never silently zero: every scenario of every bundled experiment that
runs (``ok``, or ``oom`` with its times) reports positive energy, per token and power; its
parts add up to the total and its per-technology link energies to the network energy; a
scenario that cannot run has no energy at all rather than a zero."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from clustersim.config.yamlio import load_yaml_file
from clustersim.experiment.scenario import run_scenario
from clustersim.experiment.sweep import expand

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml"))
PARTS = ("energy_compute_j", "energy_memory_j", "energy_network_j", "energy_static_j")
STATIC = ("energy_devices_idle_j", "energy_switches_j", "energy_hosts_j")


@pytest.fixture(scope="module")
def rows():
    """Every scenario of every experiment at the experiment's own fidelity (~30 s)."""
    out = []
    for path in EXPERIMENTS:
        for scenario in expand(load_yaml_file(path)).scenarios:
            out.append((path.stem, run_scenario(scenario)))
    return out


def test_the_bundled_experiments_are_all_there(rows):
    assert {name for name, _ in rows} >= {"energy-per-token-fabrics", "memory-hbm-vs-lpddr",
                                          "ucie-chiplets", "cxl-offload-vs-hbm"}


def _ran(rows):
    return [(name, row) for name, row in rows if row["status"] in ("ok", "oom")]


def test_energy_per_token_and_power_are_positive_and_consistent(rows):
    ran = _ran(rows)
    assert len(ran) > 30
    for name, row in ran:
        where = f"{name}: {row['scenario']}"
        for key in ("energy_j", "energy_per_token_j", "avg_power_w", *PARTS, *STATIC):
            assert row[key] is not None and row[key] > 0, f"{where}: {key} = {row[key]}"
        tokens = row["tokens_per_s"] * row["step_time_s"]
        assert row["energy_per_token_j"] == pytest.approx(row["energy_j"] / tokens, rel=1e-9)
        assert row["avg_power_w"] == pytest.approx(row["energy_j"] / row["step_time_s"],
                                                   rel=1e-9), where


def test_static_and_dynamic_parts_add_up_to_the_total(rows):
    for name, row in _ran(rows):
        where = f"{name}: {row['scenario']}"
        assert sum(row[k] for k in PARTS) == pytest.approx(row["energy_j"], rel=1e-9), where
        assert sum(row[k] for k in STATIC) == pytest.approx(row["energy_static_j"],
                                                            rel=1e-9), where


def test_per_technology_link_energies_sum_to_the_network_energy(rows):
    for name, row in _ran(rows):
        links = {k: v for k, v in row.items()
                 if k.startswith("energy_link_") and v is not None}
        assert links, f"{name}: {row['scenario']} reports no link energy"
        assert all(v > 0 for v in links.values())
        assert sum(links.values()) == pytest.approx(row["energy_network_j"], rel=1e-9)
        # a technology that carried bytes was busy, and one that was busy carried bytes
        used = {k[len("energy_link_"):-2] for k in links}
        busy = {k[len("link_util_"):] for k, v in row.items()
                if k.startswith("link_util_") and v}
        assert used == busy, f"{name}: {row['scenario']}"


def test_a_scenario_that_cannot_run_has_no_energy_rather_than_zero(rows):
    for name, row in rows:
        if row["status"] in ("infeasible", "error"):
            assert row["error"], f"{name}: {row['scenario']} failed without a reason"
            for key in ("energy_j", "energy_per_token_j", "avg_power_w"):
                value = row.get(key)
                assert value is None or (isinstance(value, float) and math.isnan(value))
