"""Structural routing: dimension order on tori and meshes, up/down ECMP on fat-trees, striping
over switch planes, direct links on meshes, and the walk from a device to the fabric it needs
(die -> package gateway -> NIC), minimal / Valiant / UGAL-style on dragonflies, and ECMP over
shortest paths on any other graph (one destination at a time). Never an all-pairs search.

A route is a list of ``(edge, weight)``: the weight is the fraction of the flow crossing that
edge, so a flow split evenly over 4 NVSwitch planes puts weight 1/4 on each plane's edges, and
ECMP over 32 spines puts 1/32 on each. Latency is the weighted sum of edge latencies (the
latency of one path, since parallel paths are equally long).

>>> from clustersim.topology.torus import torus
>>> G = torus((8,), link="ici-v4")
>>> r = Router(G)
>>> [e for e, w in r.edges("c0", "c3")]
[('c0', 'c1'), ('c1', 'c2'), ('c2', 'c3')]
>>> sorted(w for e, w in r.edges("c0", "c4"))  # half-way round: split both ways
[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import networkx as nx

from clustersim.topology.graph import (DirectFabric, DragonflyFabric, FatTreeFabric,
                                       GraphFabric, PlanesFabric, RailOnlyFabric,
                                       SwitchFabric, TorusFabric)

__all__ = ["Router", "NoRoute", "hops_to", "ugal_minimal_share", "ugal_local_share"]


class NoRoute(ValueError):
    """Two nodes share no fabric."""


def _add_path(out: dict, path: tuple, weight: float) -> None:
    for u, v in zip(path, path[1:]):
        out[(u, v)] += weight


def _switch_route(G: nx.DiGraph, f: SwitchFabric, a, b, w: float, out: dict) -> None:
    caps = [G.edges[a, s]["bw_Bps"] for s in f.planes]
    total = sum(caps)
    for s, cap in zip(f.planes, caps):
        share = w * cap / total
        out[(a, s)] += share
        out[(s, b)] += share


def _torus_route(f: TorusFabric, a, b, w: float, out: dict) -> None:
    here, target = list(f.coords[a]), f.coords[b]
    for d, size in enumerate(f.dims):
        delta = (target[d] - here[d]) % size
        if delta == 0:
            continue
        if not f.wrap[d]:
            plans = [(1 if target[d] > here[d] else -1, abs(target[d] - here[d]), 1.0)]
        elif delta * 2 < size:
            plans = [(1, delta, 1.0)]
        elif delta * 2 > size:
            plans = [(-1, size - delta, 1.0)]
        else:  # exactly half-way round: split over both directions
            plans = [(1, delta, 0.5), (-1, delta, 0.5)]
        for step, count, share in plans:
            pos = list(here)
            for _ in range(count):
                _add_path(out, f.hops[(f.at[tuple(pos)], d, step)], w * share)
                pos[d] = (pos[d] + step) % size
        here[d] = target[d]


def _fattree_route(G: nx.DiGraph, f: FatTreeFabric, a, b, w: float, out: dict) -> None:
    la, lb = f.leaf_of[a], f.leaf_of[b]
    out[(a, la)] += w
    out[(lb, b)] += w
    if la == lb:
        return
    pa, pb = f.pod_of[la], f.pod_of[lb]
    up = [G.edges[la, agg]["bw_Bps"] for agg in f.aggs[pa]]
    total = sum(up)
    for j, (agg_a, cap) in enumerate(zip(f.aggs[pa], up)):
        share = w * cap / total
        out[(la, agg_a)] += share
        if pa == pb:
            out[(agg_a, lb)] += share
            continue
        agg_b = f.aggs[pb][j]
        cores = f.cores[j]
        for core in cores:
            out[(agg_a, core)] += share / len(cores)
            out[(core, agg_b)] += share / len(cores)
        out[(agg_b, lb)] += share


def _split(G: nx.DiGraph, u, nexts: list, w: float) -> list[tuple]:
    """``(next hop, share)``: ``w`` spread over the edges ``u -> n`` by their bandwidth."""
    caps = [G.edges[u, n]["bw_Bps"] for n in nexts]
    total = sum(caps)
    return [(n, w * c / total) for n, c in zip(nexts, caps)]


def hops_to(G: nx.DiGraph, members: frozenset, b) -> dict:
    """Hops from every node of ``members`` to ``b`` over edges inside ``members`` (a BFS
    backwards from ``b``: one destination at a time, never all pairs)."""
    dist, frontier = {b: 0}, [b]
    while frontier:
        nxt = []
        for v in frontier:
            for u in G.predecessors(v):
                if u in members and u not in dist:
                    dist[u] = dist[v] + 1
                    nxt.append(u)
        frontier = nxt
    return dist


def _graph_route(G: nx.DiGraph, f: GraphFabric, dist: dict, a, b, w: float,
                 out: dict) -> None:
    """ECMP over every shortest path from ``a`` to ``b``, split by bandwidth at each node
    (walked level by level towards ``b``, so each edge is visited once)."""
    if a not in dist:
        raise NoRoute(f"no path from {a!r} to {b!r} inside fabric {f.id!r}")
    level = {a: w}
    while level:
        below: dict = defaultdict(float)
        for u, share in level.items():
            if u == b:
                continue
            nexts = [n for n in G.successors(u) if dist.get(n) == dist[u] - 1]
            for n, part in _split(G, u, nexts, share):
                out[(u, n)] += part
                below[n] += part
        level = below


def _dragonfly_minimal(G: nx.DiGraph, f: DragonflyFabric, sa, sb, w: float,
                       out: dict) -> None:
    """Local hop to a switch holding a global link to the destination group, the global
    link, local hop to the destination switch: at most 3 switch-to-switch hops. Several
    global links between the two groups share the flow by bandwidth."""
    if sa == sb:
        return
    ga, gb = f.pod_of[sa], f.pod_of[sb]
    if ga == gb:
        out[(sa, sb)] += w
        return
    def land(y, share):
        if y != sb:
            out[(y, sb)] += share

    _across(G, f, sa, ga, gb, w, out, land)


def _across(G: nx.DiGraph, f: DragonflyFabric, sa, ga, gb, w: float, out: dict, then) -> None:
    """``w`` from switch ``sa`` of group ``ga`` over the global links to group ``gb``, shared
    by their bandwidth (the local hop to each link's switch first); ``then(y, share)``
    carries each share on from the switch ``y`` the link lands on."""
    ends = f.globals_between[(ga, gb)]
    caps = [G.edges[x, y]["bw_Bps"] for x, y in ends]
    total = sum(caps)
    for (x, y), cap in zip(ends, caps):
        share = w * cap / total
        if sa != x:
            out[(sa, x)] += share
        out[(x, y)] += share
        then(y, share)


def _dragonfly_valiant(G: nx.DiGraph, f: DragonflyFabric, sa, sb, w: float,
                       out: dict) -> None:
    """Valiant at group level: minimally to an intermediate group, then minimally on; the
    flow spreads evenly over every other group (the expectation of a random choice), so
    each path crosses two global links. Same-group traffic detours through every other
    switch of the group; two-group fabrics have no intermediate group and stay minimal."""
    ga, gb = f.pod_of[sa], f.pod_of[sb]
    if ga == gb:
        _local_detours(f, sa, sb, w, out)
        return
    middle = [k for k in range(f.groups) if k not in (ga, gb)]
    if not middle:
        _dragonfly_minimal(G, f, sa, sb, w, out)
        return
    def onward(y, part):
        _dragonfly_minimal(G, f, y, sb, part, out)

    for k in middle:
        _across(G, f, sa, ga, k, w / len(middle), out, onward)


def _local_detours(f: DragonflyFabric, sa, sb, w: float, out: dict) -> None:
    """Valiant inside a group: through each other switch of the group in equal shares (two
    local hops); a group of two switches has none and goes direct."""
    if sa == sb:
        return
    middle = [s for s in f.switches_in[f.pod_of[sa]] if s not in (sa, sb)]
    if not middle:
        out[(sa, sb)] += w
        return
    for s in middle:
        out[(sa, s)] += w / len(middle)
        out[(s, sb)] += w / len(middle)


def ugal_local_share(G: nx.DiGraph, f: DragonflyFabric, sa, sb) -> float:
    """:func:`ugal_minimal_share` for two switches of one group: the direct local link
    against the detours through the other switches (each crossing two local links)."""
    direct = G.edges[sa, sb]["bw_Bps"]
    detour = sum(min(G.edges[sa, s]["bw_Bps"], G.edges[s, sb]["bw_Bps"])
                 for s in f.switches_in[f.pod_of[sa]] if s not in (sa, sb)) / 2
    return direct / (direct + detour)


def ugal_minimal_share(G: nx.DiGraph, f: DragonflyFabric, ga: int, gb: int) -> float:
    """The fraction of a group pair's traffic that ``ugal`` keeps on minimal paths: the
    direct global bandwidth against the detours' bandwidth per global link crossed
    (a detour crosses two). A static stand-in for UGAL's per-packet choice (Kim et al.
    2008, sec. 4.2), which a flow model without queue state cannot make: it is what an
    adaptive router converges to when every path is loaded, i.e. for traffic that fills
    the fabric (collectives), and it spreads group-to-group patterns as Valiant does."""
    def capacity(g, h):
        return sum(G.edges[x, y]["bw_Bps"] for x, y in f.globals_between[(g, h)])

    direct = capacity(ga, gb)
    detour = sum(min(capacity(ga, k), capacity(k, gb)) for k in range(f.groups)
                 if k not in (ga, gb)) / 2
    return direct / (direct + detour)


def _dragonfly_route(G: nx.DiGraph, f: DragonflyFabric, a, b, w: float, out: dict) -> None:
    sa, sb = f.leaf_of[a], f.leaf_of[b]
    out[(a, sa)] += w
    out[(sb, b)] += w
    ga, gb = f.pod_of[sa], f.pod_of[sb]
    if f.routing == "minimal" or sa == sb:
        _dragonfly_minimal(G, f, sa, sb, w, out)
    elif f.routing == "valiant":
        _dragonfly_valiant(G, f, sa, sb, w, out)
    else:
        m = ugal_local_share(G, f, sa, sb) if ga == gb else ugal_minimal_share(G, f, ga, gb)
        _dragonfly_minimal(G, f, sa, sb, w * m, out)
        _dragonfly_valiant(G, f, sa, sb, w * (1 - m), out)


def _entry_switch(plane, a):
    """The switch endpoint ``a`` enters a plane at (its leaf, or the one switch)."""
    return plane.leaf_of[a] if isinstance(plane, FatTreeFabric) else plane.planes[0]


class Router:
    """Routes between any two routable nodes of a topology graph, cached per pair."""

    def __init__(self, G: nx.DiGraph):
        self.G = G
        self.fabrics = G.graph["fabrics"]
        self._cache: dict[tuple, list] = {}
        self._hops: dict[tuple, dict] = {}  # (graph fabric, destination) -> hops to it

    def _shared(self, a, b):
        theirs = {att.fabric: att for att in self.G.nodes[b]["attach"]}
        for att in self.G.nodes[a]["attach"]:
            if att.fabric in theirs:
                return att, theirs[att.fabric]
        raise NoRoute(f"no fabric joins {a!r} and {b!r}")

    def segments(self, a: Any, b: Any):
        """How a route from ``a`` to ``b`` is made: ``None`` for the same node or a direct
        edge, else ``(up path of a, fabric, entry of a, entry of b, up path of b)``; the
        route is the up path, the fabric's route between the entries, the reversed up path.
        """
        if a == b or self.G.has_edge(a, b):
            return None
        att_a, att_b = self._shared(a, b)
        return att_a.up, self.fabrics[att_a.fabric], att_a.entry, att_b.entry, att_b.up

    def fabric_edges(self, fabric, a, b) -> list[tuple[tuple, float]]:
        """The weighted edges of the route between two entries of ``fabric``."""
        out: dict = defaultdict(float)
        self._fabric_route(fabric, a, b, out)
        return list(out.items())

    def edges(self, a: Any, b: Any) -> list[tuple[tuple, float]]:
        """The edges a flow from ``a`` to ``b`` crosses, with the fraction on each."""
        key = (a, b)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        out: dict = defaultdict(float)
        if a == b:
            pass
        elif self.G.has_edge(a, b):
            out[(a, b)] = 1.0
        else:
            att_a, att_b = self._shared(a, b)
            _add_path(out, att_a.up, 1.0)
            self._fabric_route(self.fabrics[att_a.fabric], att_a.entry, att_b.entry, out)
            _add_path(out, tuple(reversed(att_b.up)), 1.0)
        result = list(out.items())
        self._cache[key] = result
        return result

    def _fabric_route(self, f, a, b, out: dict, w: float = 1.0) -> None:
        if a == b:
            return
        if isinstance(f, TorusFabric):
            _torus_route(f, a, b, w, out)
        elif isinstance(f, DragonflyFabric):  # before its FatTreeFabric base
            _dragonfly_route(self.G, f, a, b, w, out)
        elif isinstance(f, FatTreeFabric):
            _fattree_route(self.G, f, a, b, w, out)
        elif isinstance(f, PlanesFabric):  # the structured GraphFabrics before their base
            self._planes_route(f, a, b, w, out)
        elif isinstance(f, RailOnlyFabric):
            self._rail_only_route(f, a, b, w, out)
        elif isinstance(f, GraphFabric):  # before its DirectFabric base
            dist = self._hops.get((f.id, b))
            if dist is None:
                dist = self._hops[(f.id, b)] = hops_to(self.G, f.members, b)
            _graph_route(self.G, f, dist, a, b, w, out)
        elif isinstance(f, SwitchFabric):
            _switch_route(self.G, f, a, b, w, out)
        elif isinstance(f, DirectFabric):
            out[(a, b)] += w
        else:
            raise TypeError(f"no router for fabric {type(f).__name__}")

    def _planes_route(self, f: PlanesFabric, a, b, w: float, out: dict) -> None:
        """Each plane's own route, the flow split over the planes by port bandwidth (what
        ECMP over the union does, without searching it)."""
        caps = [self.G.edges[a, _entry_switch(p, a)]["bw_Bps"] for p in f.planes]
        total = sum(caps)
        for plane, cap in zip(f.planes, caps):
            self._fabric_route(plane, a, b, out, w * cap / total)

    def _via_rail(self, f: RailOnlyFabric, a, b, w: float, out: dict) -> None:
        na, nb = f.nic_of[a], f.nic_of[b]
        out[(a, na)] += w
        self._fabric_route(f.rails[f.rail_of[a]], na, nb, out, w)
        out[(nb, b)] += w

    def _rail_only_route(self, f: RailOnlyFabric, a, b, w: float, out: dict) -> None:
        """Same rail: NIC, the rail, NIC. Across rails, ECMP's two shortest families: over
        the source node's scale-up domain to its GPU on the destination's rail, or along the
        source's rail to the destination node and over its scale-up domain; split as ECMP
        splits them at the source, by the bandwidth of the first hops."""
        ia, ib = f.rail_of[a], f.rail_of[b]
        if ia == ib:
            self._via_rail(f, a, b, w, out)
            return
        la, lb = f.local_of[a], f.local_of[b]
        up: dict = defaultdict(float)
        peers_a = f.peers[(la, ib)]
        for a2 in peers_a:
            self._fabric_route(self.fabrics[la], a, a2, up, 1.0 / len(peers_a))
        first = sum(self.G.edges[e]["bw_Bps"] for e in up if e[0] == a)
        s = first / (first + self.G.edges[a, f.nic_of[a]]["bw_Bps"])
        for e, x in up.items():
            out[e] += w * s * x
        for a2 in peers_a:
            self._via_rail(f, a2, b, w * s / len(peers_a), out)
        peers_b = f.peers[(lb, ia)]
        for b2 in peers_b:
            self._via_rail(f, a, b2, w * (1 - s) / len(peers_b), out)
            self._fabric_route(self.fabrics[lb], b2, b, out, w * (1 - s) / len(peers_b))

    def shared_fabric(self, a: Any, b: Any):
        """The innermost fabric joining ``a`` and ``b`` (None for the same node)."""
        if a == b:
            return None
        return self.fabrics[self._shared(a, b)[0].fabric]
