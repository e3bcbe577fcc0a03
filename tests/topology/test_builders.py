"""Topology builders checked against first principles computed here, not against output."""

from __future__ import annotations

import math

import pytest

from clustersim.hardware import get_device, get_link
from clustersim.network import Cluster, build_cluster
from clustersim.network.metrics import bisection_bandwidth, diameter, injection_bandwidth
from clustersim.topology import torus
from clustersim.topology.scaleup import spread_links
from clustersim.topology.torus import slice_shape


def tech_out_edges(G, node, tech):
    return [(node, v, d) for _, v, d in G.out_edges(node, data=True) if d["tech"] == tech]


def test_4x4x4_torus_has_64_devices_with_6_links_each():
    G = torus((4, 4, 4), link="ici-v4", cube=(4, 4, 4))
    assert len(G.graph["devices"]) == 64
    for chip in G.graph["devices"]:
        links = tech_out_edges(G, chip, "ici-v4")
        assert sum(d["count"] for _, _, d in links) == 6


@pytest.mark.parametrize("dims", [(4, 4, 4), (8, 4, 4), (4, 4, 8), (6, 6)])
def test_torus_bisection_is_twice_the_cross_section(dims):
    # Cutting a torus across its longest dimension L severs N/L rings, each twice
    # (the wrap-around closes it): 2 * N / L links per direction.
    c = Cluster.from_graph(torus(dims, link="ici-v4"))
    b = get_link("ici-v4").bw_Bps
    expected = 2 * math.prod(dims) / max(dims) * b
    assert bisection_bandwidth(c) == pytest.approx(expected, rel=1e-9)


def test_torus_diameter_is_sum_of_half_rings():
    dims = (4, 6, 8)
    c = Cluster.from_graph(torus(dims, link="ici-v4"))
    assert diameter(c) == sum(d // 2 for d in dims)


def test_mesh_has_no_wraparound():
    c = Cluster.from_graph(torus((4, 4), link="ucie-advanced", wrap=False, device=None))
    assert diameter(c) == 3 + 3


def test_tpu_v4_pod_bisection_and_ocs():
    c = build_cluster("tpu-v4-pod", devices=4096)
    G = c.graph
    ocs = [n for n, k in G.nodes(data="kind") if k == "optical_switch"]
    assert len(ocs) == 48  # 3 dims x 16 face positions (Jouppi et al. 2023)
    b = get_link("ici-v4").bw_Bps
    assert bisection_bandwidth(c) == pytest.approx(2 * 4096 / 16 * b, rel=1e-9)


def test_dgx_h100_gpu_has_18_nvlink4_links_and_450_GBps():
    c = build_cluster("dgx-h100", devices=8)
    G = c.graph
    for gpu in c.devices:
        links = tech_out_edges(G, gpu, "nvlink4")
        assert sum(d["count"] for _, _, d in links) == 18
        assert sum(d["bw_Bps"] for _, _, d in links) == pytest.approx(450e9)
        assert sorted(d["count"] for _, _, d in links) == [4, 4, 5, 5]
    scaleup = [r for r in injection_bandwidth(c) if r["level"] == "scaleup"][0]
    assert scaleup["bw_Bps"] == pytest.approx(18 * get_link("nvlink4").bw_Bps)
    # a switch: any half talks to the other half at full injection rate
    assert bisection_bandwidth(c) == pytest.approx(4 * 450e9)


def test_spread_links_keeps_every_link():
    for links in range(4, 40):
        for planes in range(1, min(links, 18) + 1):
            counts = spread_links(links, planes)
            assert sum(counts) == links and max(counts) - min(counts) <= 1


@pytest.mark.parametrize("r", [2, 4])
@pytest.mark.parametrize("n,rails", [(512, True), (256, False)])
def test_fat_tree_oversubscription_divides_bisection(r, n, rails):
    # 2-level fat-trees of 64-port switches. A rail-optimised leaf holds one rail of 32 nodes,
    # so the halves of 64 nodes meet only through the spines; without rails a leaf holds 4.
    base = {"scale_out.rail_optimized": rails}
    full = build_cluster("dgx-h100", devices=n, overrides=base)
    over = build_cluster("dgx-h100", devices=n,
                         overrides={**base, "scale_out.oversubscription": r})
    assert full.graph.graph["fabrics"]["scaleout"].levels == 2
    nic = get_link("ib-ndr").bw_Bps
    assert bisection_bandwidth(full) == pytest.approx(n / 2 * nic, rel=1e-9)
    assert bisection_bandwidth(over) == pytest.approx(n / 2 * nic / r, rel=1e-9)


def test_scale_out_bandwidth_override_changes_the_links():
    c = build_cluster("dgx-h100", devices=16, overrides={"scale_out.bandwidth": "25 GB/s"})
    nic_links = [d for _, _, d in c.graph.edges(data=True) if d["tech"] == "ib-ndr"]
    assert nic_links and all(d["bw_Bps"] == 25e9 for d in nic_links)


def test_three_level_fat_tree_is_non_blocking():
    c = build_cluster("dgx-h100", devices=4096)  # 4096 NICs > 2048: three levels
    assert c.graph.graph["fabrics"]["scaleout"].levels == 3
    assert bisection_bandwidth(c) == pytest.approx(2048 * get_link("ib-ndr").bw_Bps, rel=1e-9)


def test_nvl72_is_one_domain_of_72_with_18_switch_planes():
    c = build_cluster("gb200-nvl72", devices=144)
    G = c.graph
    fabric = G.graph["fabrics"]["scaleup:0"]
    assert len(fabric.planes) == 18
    gpu = c.devices[0]
    links = tech_out_edges(G, gpu, "nvlink5")
    assert len(links) == 18 and all(d["count"] == 1 for _, _, d in links)
    # two racks: GPU 0 and GPU 71 share NVLink, GPU 0 and GPU 72 do not
    assert c.router.shared_fabric(c.devices[0], c.devices[71]).level == "scaleup"
    assert c.router.shared_fabric(c.devices[0], c.devices[72]).level == "scaleout"


def test_chiplet_package_dies_meet_over_ucie():
    c = build_cluster("chiplet-ucie", devices=16)
    a, b = c.devices[0], c.devices[3]  # opposite corners of a 2x2 die mesh
    techs = {c.graph.edges[e]["tech"] for e, _ in c.router.edges(a, b)}
    assert techs == {"ucie-advanced"}
    other_package = c.devices[4]
    techs = {c.graph.edges[e]["tech"] for e, _ in c.router.edges(a, other_package)}
    assert "ucie-advanced" not in techs


def test_cxl_pool_is_reached_over_cxl_links():
    c = build_cluster("cxl-memory-pool", devices=8)
    pool = [n for n, k in c.graph.nodes(data="kind") if k == "cxl_memory"]
    assert len(pool) == 4
    techs = {c.graph.edges[e]["tech"] for e, _ in c.router.edges(c.devices[0], pool[0])}
    assert techs == {"cxl2"}


def test_device_memory_edges_carry_the_device_bandwidth():
    c = build_cluster("dgx-h100", devices=8)
    assert c.memory_bw_Bps(c.devices[0]) == pytest.approx(get_device("h100-sxm-80gb").memory.bw_Bps)


def test_memory_technology_override_brings_its_bandwidth():
    c = build_cluster("dgx-h100", devices=8,
                      overrides={"device_overrides.memory.technology": "lpddr5x"})
    stacks = get_device("h100-sxm-80gb").memory.stacks
    assert c.memory_bw_Bps(c.devices[0]) == pytest.approx(stacks * get_link("lpddr5x").bw_Bps)


def test_slice_shapes():
    assert slice_shape(4096) == (16, 16, 16)
    assert slice_shape(3072) == (12, 16, 16)
    assert slice_shape(64) == (4, 4, 4)
    with pytest.raises(ValueError):
        slice_shape(100)


@pytest.mark.parametrize("preset,devices", [
    ("dgx-a100", 64), ("dgx-h100", 32), ("gb200-nvl72", 144), ("tpu-v4-pod", 128),
    ("tpu-v4-pod", 8192), ("chiplet-ucie", 32), ("cxl-memory-pool", 16), ("mi300x-node", 16),
    ("tpu-v5p-pod", 256),
])
def test_every_route_conserves_flow(preset, devices):
    """Property: a route is a unit flow from a to b: at every node, weight in minus weight
    out is -1 at the source, +1 at the destination and 0 elsewhere."""
    import random

    c = build_cluster(preset, devices=devices)
    rng = random.Random(0)
    for _ in range(40):
        a, b = rng.sample(c.devices, 2)
        balance: dict = {}
        for (u, v), w in c.router.edges(a, b):
            assert c.graph.has_edge(u, v)
            assert 0 < w <= 1 + 1e-12
            balance[u] = balance.get(u, 0.0) - w
            balance[v] = balance.get(v, 0.0) + w
        for node, value in balance.items():
            expected = -1.0 if node == a else 1.0 if node == b else 0.0
            assert value == pytest.approx(expected, abs=1e-9), (preset, a, b, node)
