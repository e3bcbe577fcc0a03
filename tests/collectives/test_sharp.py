"""SHARP (in-network reduction on the InfiniBand switches) only where the cluster says the
fabric offers it (``network.sharp: true``)."""

from __future__ import annotations

import pytest

from clustersim.collectives import price, valid_algorithms
from clustersim.errors import InputError
from clustersim.network import build_cluster


def one_gpu_per_node(cluster):
    return cluster.devices[::8]


def test_sharp_off_by_default():
    c = build_cluster("dgx-h100", 64)
    group = one_gpu_per_node(c)
    assert "sharp" not in valid_algorithms(c, group, "all_reduce")
    _, algos = price(c, group, "all_reduce", [2.0**20, 2.0**30])
    assert not any(a.startswith("sharp") for a in algos)
    with pytest.raises(InputError, match="network.sharp"):
        price(c, group, "all_reduce", [2.0**20], "sharp")


def test_sharp_where_the_network_offers_it():
    c = build_cluster("dgx-h100", 64, {"network.sharp": True})
    group = one_gpu_per_node(c)
    assert "sharp" in valid_algorithms(c, group, "all_reduce")
    # SHARP moves S each way per rank instead of the ring's 2(p-1)/p S: faster when large
    t_sharp, _ = price(c, group, "all_reduce", [2.0**30], "sharp")
    t_ring, _ = price(c, group, "all_reduce", [2.0**30], "ring/simple")
    assert t_sharp[0] < t_ring[0]


def test_network_sharp_must_be_a_flag():
    with pytest.raises(InputError, match="network.sharp"):
        build_cluster("dgx-h100", 16, {"network.sharp": "maybe"})
