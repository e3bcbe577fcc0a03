"""Dragonflies against the formulas of Kim et al. (ISCA 2008): global links per group pair,
bisection under minimal and Valiant routing, at most 3 switch hops with minimal routing, and
Valiant's second global hop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.errors import InputError
from clustersim.network import Cluster, build_cluster
from clustersim.network.metrics import bisection_bandwidth, diameter
from clustersim.network.routing import ugal_minimal_share
from clustersim.topology.dragonfly import DragonflyParams, add_dragonfly, global_links_per_pair
from clustersim.topology.graph import new_graph, add_node

B = 25e9  # one 200 Gb/s Slingshot port


def dragonfly(routing="minimal", groups=8, p=2, a=7, h=2, local_links=4):
    """A bare dragonfly of ``groups`` whole groups, an accelerator on every endpoint port."""
    G = new_graph("df")
    ends = [f"e{i}" for i in range(groups * a * p)]
    for e in ends:
        add_node(G, e, "accelerator")
    params = DragonflyParams(endpoints_per_switch=p, switches_per_group=a,
                             global_links_per_switch=h, local_links=local_links,
                             routing=routing)
    fabric = add_dragonfly(G, ends, params, "eth-400g", "eth-51t", bw_Bps=B)
    return Cluster.from_graph(G), fabric, params


def global_weight(c, fabric, a, b):
    return sum(w for (u, v), w in c.router.edges(a, b)
               if u in fabric.pod_of and v in fabric.pod_of
               and fabric.pod_of[u] != fabric.pod_of[v])


def switch_hops(c, fabric, a, b):
    return sum(w for (u, v), w in c.router.edges(a, b)
               if u in fabric.pod_of and v in fabric.pod_of)


def test_every_group_pair_gets_floor_ah_over_g_minus_1_global_links():
    c, f, p = dragonfly()
    k = global_links_per_pair(8, p)
    assert k == (7 * 2) // 7 == 2
    for (g, h), ends in f.globals_between.items():
        assert sum(c.graph.edges[x, y]["count"] for x, y in ends) == k
    for sw in f.pod_of:   # every switch carries h global ports
        out = sum(d["count"] for _, v, d in c.graph.out_edges(sw, data=True)
                  if v in f.pod_of and f.pod_of[v] != f.pod_of[sw])
        assert out == p.global_links_per_switch


def test_minimal_routing_is_at_most_local_global_local():
    c, f, _ = dragonfly()
    hops = [switch_hops(c, f, c.devices[0], b) for b in c.devices]
    assert max(hops) == pytest.approx(3.0)
    assert all(h <= 3 + 1e-9 for h in hops)
    assert diameter(c) == 3 + 2                 # plus the two endpoint links
    other_group = c.devices[-1]
    assert global_weight(c, f, c.devices[0], other_group) == pytest.approx(1.0)


def test_valiant_doubles_the_global_hops():
    c, f, _ = dragonfly("valiant")
    for b in c.devices[14::14]:                  # one endpoint in each other group
        assert global_weight(c, f, c.devices[0], b) == pytest.approx(2.0)
    assert global_weight(c, f, c.devices[0], c.devices[1]) == 0.0   # same switch


@pytest.mark.parametrize("groups", [4, 8])
def test_minimal_bisection_is_one_group_pair_per_group(groups):
    # The half-shift sends all of group g to group g + G/2: minimal routing has only the
    # k direct global links, so the fabric moves G/2 x k x b.
    h = {4: 3, 8: 2}[groups]
    c, f, p = dragonfly(groups=groups, h=h, a=7 if groups == 8 else 4)
    k = global_links_per_pair(groups, p)
    assert bisection_bandwidth(c) == pytest.approx(groups / 2 * k * B, rel=1e-9)


def test_valiant_bisection_spreads_over_every_other_group():
    # Each channel g -> m carries first-hop and second-hop traffic of one source group each
    # (2 T / (G - 2) on k links), so a group moves T = k b (G - 2) / 2 and the fabric
    # G/2 x T = G (G - 2) / 4 x k x b: close to the min cut (G/2)^2 k b.
    groups = 8
    c, f, p = dragonfly("valiant", groups=groups)
    k = global_links_per_pair(groups, p)
    assert bisection_bandwidth(c) == pytest.approx(groups * (groups - 2) / 4 * k * B,
                                                   rel=1e-9)


def test_ugal_keeps_the_capacity_share_on_minimal_paths_and_beats_minimal():
    c, f, _ = dragonfly("ugal")
    # direct k b against (G - 2) detours of k b, each crossing two global links
    assert ugal_minimal_share(c.graph, f, 0, 1) == pytest.approx(1 / (1 + 6 / 2))
    minimal = bisection_bandwidth(dragonfly()[0])
    assert bisection_bandwidth(c) > minimal


def test_slingshot_preset_uses_rosetta_ports_and_sizes_groups():
    c = build_cluster("slingshot-dragonfly", 4096)
    f = c.router.fabrics["scaleout"]
    assert f.groups == 8 and f.routing == "ugal"
    switches = [n for n in f.pod_of]
    assert len(switches) == 8 * 32
    ports = [sum(d["count"] for _, _, d in c.graph.out_edges(sw, data=True)) for sw in switches]
    assert max(ports) <= 64                        # a Rosetta switch has 64 ports
    nic = next(n for n in c.graph if c.graph.nodes[n]["kind"] == "nic")
    assert c.graph.edges[nic, f.leaf_of[nic]]["bw_Bps"] == B


def test_too_many_groups_for_the_global_ports_is_refused():
    with pytest.raises(InputError, match="groups exceed"):
        build_cluster("slingshot-dragonfly", 16,
                      {"scale_out.dragonfly.endpoints_per_switch": 1,
                       "scale_out.dragonfly.switches_per_group": 1,
                       "scale_out.dragonfly.global_links_per_switch": 1})


def test_inside_a_group_valiant_detours_through_every_other_switch():
    c, f, _ = dragonfly("valiant", groups=1, a=4, p=2)
    a, b = c.devices[0], c.devices[2]          # switches 0 and 1 of the one group
    assert switch_hops(c, f, a, b) == pytest.approx(2.0)
    assert c.router.edges(a, b) and ("g0/sw0", "g0/sw1") not in dict(c.router.edges(a, b))
    # ugal: direct link against two detours of two links each -> half stays minimal
    u, fu, _ = dragonfly("ugal", groups=1, a=4, p=2)
    assert switch_hops(u, fu, a, b) == pytest.approx(0.5 * 1 + 0.5 * 2)


@settings(max_examples=25, deadline=None)
@given(p=st.integers(1, 3), a=st.integers(2, 5), h=st.integers(1, 3),
       groups=st.integers(1, 6), routing=st.sampled_from(["minimal", "valiant", "ugal"]),
       data=st.data())
def test_every_route_is_a_unit_flow_with_the_hops_its_routing_allows(p, a, h, groups, routing,
                                                                     data):
    # whatever the shape: one unit leaves the source and reaches the destination, nothing
    # is lost or made at a switch, and the global hops are 1 (minimal) or 1-2 (valiant, ugal)
    groups = min(groups, a * h + 1)
    c, f, _ = dragonfly(routing, groups=groups, p=p, a=a, h=h, local_links=1)
    src = data.draw(st.sampled_from(c.devices))
    dst = data.draw(st.sampled_from(c.devices))
    route = c.router.edges(src, dst)
    if src == dst:
        assert route == []
        return
    net = {}
    for (u, v), w in route:
        assert w > 0 and c.graph.has_edge(u, v)
        net[u] = net.get(u, 0.0) + w
        net[v] = net.get(v, 0.0) - w
    assert net.pop(src) == pytest.approx(1.0)
    assert net.pop(dst) == pytest.approx(-1.0)
    assert all(abs(x) < 1e-9 for x in net.values())
    g = global_weight(c, f, src, dst)
    cross = f.pod_of[f.leaf_of[src]] != f.pod_of[f.leaf_of[dst]]
    if routing == "minimal" or not cross:
        assert g == pytest.approx(1.0 if cross else 0.0)
    else:
        assert 1.0 - 1e-9 <= g <= 2.0 + 1e-9
