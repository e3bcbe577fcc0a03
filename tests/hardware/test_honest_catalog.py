"""Figures the catalog's own notes call assumptions, readings or picks are listed as estimated."""

from __future__ import annotations

import pytest

from clustersim.hardware import get_device, get_link, get_switch

FLAGGED = [
    (get_device, "b200", "idle_power"),          # one user's measurement
    (get_device, "gb200", "idle_power"),
    (get_device, "gb200", "nic"),                # ib-ndr assumed
    (get_device, "gb200", "host_link"),          # one full C2C interface per GPU assumed
    (get_device, "mi300x", "nic"),               # eth-400g assumed
    (get_device, "a100-sxm-40gb", "memory.technology"),  # NVIDIA says HBM2
    (get_link, "nvlink-c2c", "latency"),         # secondary source only
    (get_switch, "quantum2-ndr", "latency"),     # picked among conflicting secondary sources
    (get_switch, "nvlink-switch5", "ports"),     # inferred from tray figures
    (get_device, "h800", "scale_up.links"),      # NVIDIA gives the aggregate only
]


@pytest.mark.parametrize("get, name, field", FLAGGED)
def test_assumed_figures_are_flagged(get, name, field):
    assert field in get(name).estimated


def test_xgmi_stand_in_is_declared_as_no_product():
    xgmi = get_switch("xgmi-direct")
    assert xgmi.description.startswith("Not a chip")
    assert xgmi.power_W == 0 and xgmi.latency_s == 0 and xgmi.in_network_reduction is None
