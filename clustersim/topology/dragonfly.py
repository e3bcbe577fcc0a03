"""Dragonflies (Kim, Dally, Scott and Abts, "Technology-Driven, Highly-Scalable Dragonfly
Topology", ISCA 2008), as HPE Slingshot builds them: groups of ``a`` switches joined
all-to-all, ``p`` endpoints on each switch, ``h`` global ports per switch spread evenly over
the other groups.

Slingshot's Rosetta switch has 64 ports of 200 Gb/s; its largest dragonfly uses groups of 32
switches with 16 endpoint, 31 local and 17 global ports each (16 + 31 + 17 = 64), i.e. at
most 32 x 17 + 1 = 545 groups (De Sensi et al., "An In-Depth Analysis of the Slingshot
Interconnect", SC20, arXiv:2008.08886, sec. II).

With ``g`` groups each pair of groups gets ``k = floor(a h / (g - 1))`` global links, so the
textbook bisection (half of the groups against the other half) is ``(g/2)^2 k b``; a minimal
route crosses at most one local, one global and one local link (3 switch hops).

>>> from clustersim.topology.graph import new_graph, add_node
>>> G = new_graph("df")
>>> for i in range(16):
...     add_node(G, f"e{i}", "accelerator")
>>> f = add_dragonfly(G, [f"e{i}" for i in range(16)], DragonflyParams(
...     endpoints_per_switch=2, switches_per_group=2, global_links_per_switch=2),
...     "eth-400g", "eth-51t")
>>> f.groups, len(f.globals_between[(0, 1)])
(4, 1)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import networkx as nx
from pydantic import Field

from clustersim.config.quantities import Bandwidth, Count, NonNegativeTime
from clustersim.config.validation import StrictModel
from clustersim.hardware.catalog import get_switch
from clustersim.topology.graph import DragonflyFabric, add_fabric, add_link, add_node, attach

__all__ = ["DragonflyParams", "add_dragonfly", "dragonfly_groups", "global_links_per_pair"]


class DragonflyParams(StrictModel):
    """Shape of a dragonfly; the defaults are Slingshot's largest (De Sensi et al. SC20)."""

    endpoints_per_switch: Count = Field(16, description="p: NIC ports per switch")
    switches_per_group: Count = Field(32, description="a: switches per group")
    global_links_per_switch: Count = Field(17, description="h: global ports per switch")
    local_links: Count = Field(1, description="links between two switches of a group")
    global_technology: str | None = Field(None, description="default: the local technology")
    routing: Literal["minimal", "valiant", "ugal"] = "minimal"
    switch_latency: NonNegativeTime | None = Field(None, description="port to port override")
    global_bandwidth: Bandwidth | None = Field(None, description="per global link override")


def dragonfly_groups(endpoints: int, p: DragonflyParams) -> int:
    """Groups needed for ``endpoints`` (whole groups of ``a`` switches).

    >>> dragonfly_groups(4096, DragonflyParams())
    8
    """
    return max(1, math.ceil(endpoints / (p.endpoints_per_switch * p.switches_per_group)))


def global_links_per_pair(groups: int, p: DragonflyParams) -> int:
    """``floor(a h / (g - 1))``: global links between each pair of groups.

    >>> global_links_per_pair(8, DragonflyParams())   # 32 x 17 = 544 ports over 7 peers
    77
    """
    if groups < 2:
        return 0
    return (p.switches_per_group * p.global_links_per_switch) // (groups - 1)


def _check(p: DragonflyParams, groups: int, ports: int) -> None:
    used = p.endpoints_per_switch + (p.switches_per_group - 1) * p.local_links + \
        p.global_links_per_switch
    if used > ports:
        raise ValueError(f"a dragonfly switch needs {used} ports (p + (a-1) x local_links + h)"
                         f" but the switch has {ports}; lower endpoints_per_switch, "
                         f"switches_per_group or global_links_per_switch")
    most = p.switches_per_group * p.global_links_per_switch + 1
    if groups > most:
        raise ValueError(f"{groups} groups exceed the {most} a dragonfly of a = "
                         f"{p.switches_per_group}, h = {p.global_links_per_switch} can join "
                         f"(a h + 1); raise global_links_per_switch or switches_per_group")


def _global_ends(groups: int, p: DragonflyParams) -> Counter:
    """``{(switch of g, switch of h): links}``: group g's ``a h`` global ports, taken in
    switch order, go to the other groups in turn (k links to each pair), so every switch
    carries ``h`` of them and every pair of groups gets the same share."""
    k = global_links_per_pair(groups, p)
    next_port = [0] * groups
    ends: Counter = Counter()
    for g in range(groups):
        for h in range(g + 1, groups):
            for _ in range(k):
                x = next_port[g] // p.global_links_per_switch
                y = next_port[h] // p.global_links_per_switch
                next_port[g] += 1
                next_port[h] += 1
                ends[((g, x), (h, y))] += 1
    return ends


def add_dragonfly(G: nx.DiGraph, endpoints: Sequence[Any], p: DragonflyParams, link: str,
                  switch: str, fabric_id: str = "scaleout", level: str = "scaleout",
                  prefix: str = "", bw_Bps: float | None = None,
                  latency_s: float | None = None,
                  up_paths: dict[Any, tuple] | None = None) -> DragonflyFabric:
    """Connect ``endpoints`` (NICs) through a dragonfly of ``switch`` chips and attach them
    (``up_paths`` as in :func:`~clustersim.topology.fattree.add_fat_tree`)."""
    spec = get_switch(switch)
    groups = dragonfly_groups(len(endpoints), p)
    _check(p, groups, spec.ports)
    sw_lat = spec.latency_s if p.switch_latency is None else p.switch_latency
    # One group needs only the switches its endpoints fill (a partial group, as small
    # Slingshot systems are built); from two groups on, every group is whole.
    a = p.switches_per_group if groups > 1 else math.ceil(len(endpoints) /
                                                          p.endpoints_per_switch)

    def name(g: int, s: int) -> str:
        return f"{prefix}g{g}/sw{s}"

    pod_of = {}
    for g in range(groups):
        for s in range(a):
            add_node(G, name(g, s), "switch", tier="dragonfly", model=switch, group=g,
                     label=f"{spec.name} group {g}")
            pod_of[name(g, s)] = g
        for s in range(a):
            for t in range(s + 1, a):
                add_link(G, name(g, s), name(g, t), link, count=p.local_links, bw_Bps=bw_Bps,
                         latency_s=latency_s, switch_latency_s=sw_lat)
    leaf_of = {}
    for i, e in enumerate(endpoints):
        sw = name(i // (p.endpoints_per_switch * a), (i // p.endpoints_per_switch) % a)
        add_link(G, e, sw, link, bw_Bps=bw_Bps, latency_s=latency_s, switch_latency_s=sw_lat)
        leaf_of[e] = sw
    between: dict[tuple, list] = {}
    global_tech = p.global_technology or link
    global_bw = p.global_bandwidth if p.global_bandwidth is not None else (
        bw_Bps if global_tech == link else None)
    for ((g, x), (h, y)), count in sorted(_global_ends(groups, p).items()):
        add_link(G, name(g, x), name(h, y), global_tech, count=count, bw_Bps=global_bw,
                 switch_latency_s=sw_lat)
        between.setdefault((g, h), []).append((name(g, x), name(h, y)))
        between.setdefault((h, g), []).append((name(h, y), name(g, x)))
    fabric = add_fabric(G, DragonflyFabric(fabric_id, level, levels=2, leaf_of=leaf_of,
                                           pod_of=pod_of, groups=groups, routing=p.routing,
                                           globals_between=between, switches_in={
                                               g: tuple(name(g, s) for s in range(a))
                                               for g in range(groups)}))
    for e in endpoints:
        path = (up_paths or {}).get(e, (e,))
        attach(G, path[0], fabric, entry=e, up=path)
    return fabric
