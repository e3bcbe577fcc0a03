"""Rail-only and multi-plane fabrics from first principles: a rail is one switch per local
rank with no spine, an all-reduce inside a rail runs at the NIC's bandwidth, traffic between
rails crosses NVLink in a node, and P planes give P ports' worth of bisection."""

from __future__ import annotations

import pytest

from clustersim.collectives import collective_time_s
from clustersim.hardware import get_link
from clustersim.network import build_cluster
from clustersim.network.metrics import bisection_bandwidth, flow_rates

NDR = get_link("ib-ndr").bw_Bps


@pytest.fixture(scope="module")
def rails():
    return build_cluster("rail-only-h100", 64)       # 8 nodes of 8 GPUs


def kind(c, n):
    return c.graph.nodes[n]["kind"]


def test_each_rail_switch_serves_one_local_rank_and_there_is_no_spine(rails):
    G = rails.graph
    scale_out = [n for n in G if kind(rails, n) == "switch" and str(n).startswith("net/")]
    assert len(scale_out) == 8                           # one switch per rail
    for sw in scale_out:
        peers = list(G.successors(sw))
        assert all(kind(rails, n) == "nic" for n in peers)       # no switch above
        assert len({G.nodes[n]["node"] for n in peers}) == 8     # one NIC of every node
        assert len({str(n).rsplit("nic", 1)[1] for n in peers}) == 1   # all of one rank


def test_all_reduce_within_a_rail_runs_at_the_nic_bandwidth(rails):
    rail = [d for d in rails.devices if d.endswith("/g3")]
    size = 2.0**30
    t = collective_time_s(rails, rail, "all_reduce", size)
    p = len(rail)
    busbw = 2 * (p - 1) / p * size / t                  # nccl-tests' bus bandwidth
    assert 0.85 * NDR < busbw <= NDR * (1 + 1e-9)


def test_cross_rail_traffic_forwards_over_nvlink_in_a_node(rails):
    a, b = "n0/g0", "n1/g5"
    route = rails.router.edges(a, b)
    G = rails.graph
    nvlink_up = sum(w for (u, v), w in route if G.edges[u, v]["tech"] == "nvlink4"
                    and kind(rails, u) == "accelerator")
    assert nvlink_up == pytest.approx(1.0)              # every byte crosses NVLink once
    ib = sum(w for (u, v), w in route if G.edges[u, v]["tech"] == "ib-ndr"
             and kind(rails, u) == "nic")
    assert ib == pytest.approx(1.0)                     # and exactly one rail
    for (u, v), _ in route:                             # never a rail switch to another
        assert not (kind(rails, u) == "switch" == kind(rails, v) and
                    G.edges[u, v]["tech"] == "ib-ndr")


def test_same_rail_traffic_never_touches_nvlink(rails):
    route = rails.router.edges("n0/g2", "n5/g2")
    assert {rails.graph.edges[e]["tech"] for e, _ in route} == {"pcie5", "ib-ndr"}


def test_rail_only_bisection_is_the_nics_for_a_same_rail_shift(rails):
    n = len(rails.devices)
    assert bisection_bandwidth(rails) == pytest.approx(n / 2 * NDR, rel=1e-9)
    # every node sending rank i -> rank i+1 of the next node: all of it crosses NVLink and
    # still gets the NIC's rate (NVLink is 9x faster than a NIC)
    pairs = [(f"n{k}/g{i}", f"n{(k + 1) % 8}/g{(i + 1) % 8}") for k in range(8) for i in range(8)]
    rates = flow_rates(rails, pairs)
    assert rates.min() == pytest.approx(NDR, rel=1e-9)


@pytest.mark.parametrize("planes", [1, 2, 4])
def test_planes_multiply_the_bisection_and_share_no_switch(planes):
    port = 12.5e9                                       # below PCIe, so ports are the limit
    c = build_cluster("multiplane-h100", 64, {"scale_out.planes": planes,
                                               "scale_out.bandwidth": port})
    assert bisection_bandwidth(c) == pytest.approx(32 * planes * port, rel=1e-9)
    route = c.router.edges("n0/g0", "n4/g0")
    leaf_links = [(u, v, w) for (u, v), w in route if u == "n0/nic0" and kind(c, v) == "switch"]
    assert len(leaf_links) == planes
    assert all(w == pytest.approx(1 / planes) for _, _, w in leaf_links)
    if planes > 1:
        assert {str(v).split("/")[1] for _, v, _ in leaf_links} == {f"p{k}" for k in
                                                                     range(planes)}


def generic_twin(cluster):
    """The same graph with its scale-out fabric replaced by plain ECMP over its members."""
    from clustersim.network.routing import Router
    from clustersim.topology.graph import GraphFabric

    f = cluster.router.fabrics["scaleout"]
    G = cluster.graph.copy()
    G.graph["fabrics"] = dict(G.graph["fabrics"])
    G.graph["fabrics"]["scaleout"] = GraphFabric(f.id, f.level, members=f.members)
    return Router(G)


@pytest.mark.parametrize("preset,overrides", [
    ("rail-only-h100", {}), ("rail-only-h100", {"scale_out.radix": 4}),
    ("rail-only-h100", {"scale_out.nics_per_node": 4}),
    ("multiplane-h100", {}), ("multiplane-h100", {"scale_out.planes": 3,
                                                  "scale_out.radix": 8})])
def test_structured_routes_equal_ecmp_over_the_same_links(preset, overrides):
    # the rail-only and multi-plane routers compute from the structure what ECMP over
    # shortest paths inside the fabric gives; hold them to it
    c = build_cluster(preset, 64, overrides)
    twin = generic_twin(c)
    for a in c.devices[::7]:
        for b in c.devices[::3]:
            want, got = dict(twin.edges(a, b)), dict(c.router.edges(a, b))
            assert want.keys() == got.keys(), (a, b)
            for e, w in want.items():
                assert got[e] == pytest.approx(w, rel=1e-9, abs=1e-12), (a, b, e)


def test_injection_names_each_level_by_the_link_that_enters_it():
    """`topology show`: a rail-only device enters scale-out over its NIC port, a Slingshot
    node's A100 its NVLink3 mesh and its Slingshot-11 port (not its memory or host link)."""
    from clustersim.network.metrics import injection_bandwidth  # noqa: only this test

    rails = {r["level"]: r["technology"] for r in
             injection_bandwidth(build_cluster("rail-only-h100", devices=64))}
    assert rails["scaleout"] == "ib-ndr" and rails["scaleup"] == "nvlink4"
    dragonfly = {r["level"]: r["technology"] for r in
                 injection_bandwidth(build_cluster("slingshot-dragonfly", devices=1024))}
    assert dragonfly == {"scaleup": "nvlink3", "host": "pcie4", "scaleout": "slingshot-11"}
