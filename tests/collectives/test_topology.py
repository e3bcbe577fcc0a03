"""The answer follows the links the algorithm crosses, not one global bandwidth."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.collectives import (collective_time_s, effective_capacity_Bps, expand,
                                    phase_latency_s, phase_time_s, price)
from clustersim.network import Cluster, build_cluster
from clustersim.topology import torus

BIG = 2.0**33


def busbw(cluster, group, size, algorithm="auto", op="all_reduce"):
    p = len(group)
    return 2 * (p - 1) / p * size / collective_time_s(cluster, group, op, size, algorithm)


@pytest.mark.parametrize("topology,per_link", [("dgx-a100", "12.5 GB/s"),
                                               ("dgx-h100", "12.5 GB/s")])
def test_halving_nvlink_halves_large_all_reduce(topology, per_link):
    full = build_cluster(topology, 8)
    half = build_cluster(topology, 8, {"scale_up.bandwidth": per_link})
    ratio = busbw(half, half.devices, BIG) / busbw(full, full.devices, BIG)
    assert 0.45 < ratio < 0.55


def test_torus_ring_of_16_is_slower_than_ring_of_4():
    for size in (2.0**10, 2.0**20, 2.0**30):
        t16 = Cluster.from_graph(torus((16, 4)))
        t4 = Cluster.from_graph(torus((4, 16)))
        line16 = t16.devices[:16]            # first dimension, x-fastest
        line4 = t4.devices[:4]
        a = collective_time_s(t16, line16, "all_reduce", size, "ring")
        b = collective_time_s(t4, line4, "all_reduce", size, "ring")
        assert a > b


def test_multidim_beats_flat_ring_on_a_2d_torus_for_small_messages():
    c = Cluster.from_graph(torus((8, 8)))
    small = 2.0**12
    assert collective_time_s(c, c.devices, "all_reduce", small, "multidim") < \
        collective_time_s(c, c.devices, "all_reduce", small, "ring")


def test_fewer_nics_lower_multi_node_busbw():
    # a ring across two nodes is NIC-bound: half the NICs, about half the bus bandwidth
    eight = build_cluster("dgx-a100", 16)
    four = build_cluster("dgx-a100", 16, {"scale_out.nics_per_node": 4})
    ratio = busbw(four, four.devices, BIG, "ring/simple") / busbw(eight, eight.devices, BIG,
                                                                   "ring/simple")
    assert 0.4 < ratio < 0.6


def test_cross_node_ring_channels_use_every_nic():
    c = build_cluster("dgx-h100", 16)
    [ph] = expand(c, c.devices, "all_reduce", 1.0, "ring")
    nics = set()
    for s, d in zip(ph.src, ph.dst):
        links, _, _ = c.route(c.devices[s], c.devices[d])
        nics |= {c.links.edges[i][1] for i in links if "nic" in str(c.links.edges[i][1])}
    assert len(nics) == 16


def test_nvls_only_where_the_switch_reduces():
    h100, a100 = build_cluster("dgx-h100", 8), build_cluster("dgx-a100", 8)
    _, algos = price(h100, h100.devices, "all_reduce", [BIG])
    assert algos[0].startswith("nvls")
    _, algos = price(a100, a100.devices, "all_reduce", [BIG])
    assert not algos[0].startswith("nvls")


def test_concurrent_family_shares_the_links():
    c = build_cluster("dgx-h100", 16)
    dp_groups = [[c.devices[i], c.devices[i + 8]] for i in range(8)]
    alone = collective_time_s(c, dp_groups[0], "all_reduce", BIG, "ring")
    # the 8 groups each own a rail: no slower together
    together = collective_time_s(c, dp_groups[0], "all_reduce", BIG, "ring", groups=dp_groups)
    assert together == pytest.approx(alone, rel=1e-9)
    four = build_cluster("dgx-h100", 16, {"scale_out.nics_per_node": 4})
    pairs = [[four.devices[i], four.devices[i + 8]] for i in range(8)]
    alone = collective_time_s(four, pairs[0], "all_reduce", BIG, "ring")
    shared = collective_time_s(four, pairs[0], "all_reduce", BIG, "ring", groups=pairs)
    assert shared > 1.8 * alone - 1e-3   # two groups per NIC


def test_phase_prices_add_up_to_the_collective():
    # what the flow engine reproduces: per-phase latency + max-min transfer time
    c = build_cluster("dgx-a100", 16)
    for algo in ("ring/simple", "hierarchical/simple", "rhd/ll", "tree/simple"):
        phases = expand(c, c.devices, "all_reduce", BIG, algo)
        total = sum(phase_time_s(c, c.devices, ph) for ph in phases)
        assert total == pytest.approx(collective_time_s(c, c.devices, "all_reduce", BIG, algo),
                                      rel=1e-9)
        assert all(phase_latency_s(c, c.devices, ph) > 0 for ph in phases)
    assert np.all(effective_capacity_Bps(c) > 0)
