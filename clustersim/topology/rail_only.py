"""Rail-only fabrics (Wang et al., "How to Build Low-cost Networks for Large Language Models
(without Sacrificing Performance)", arXiv:2307.12169, 2023): the NIC of local rank ``i`` of
every node joins rail ``i`` (one switch, or a fat-tree when a rail outgrows one switch's
radix) and there is no spine. Traffic between ranks of different rails crosses the scale-up
domain (NVLink) of the source or destination node to reach the right rail.

Routing is ECMP over shortest paths inside the rails, the NICs, the accelerators and their
scale-up switches (:class:`~clustersim.topology.graph.GraphFabric`), so same-rail traffic takes
NIC, rail switch, NIC, and cross-rail traffic forwards over NVLink at either end, split by
the bandwidth of the first hop.

>>> from clustersim.topology import build_graph
>>> G, _ = build_graph("rail-only-h100", 16)
>>> sorted(G.successors("net/rail0/sw0"))        # rank 0 of each node, and nothing above
['n0/nic0', 'n1/nic0']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import networkx as nx

from clustersim.topology.fattree import add_fat_tree
from clustersim.topology.graph import GraphFabric, add_fabric, attach

__all__ = ["add_rail_only"]


def add_rail_only(G: nx.DiGraph, endpoints: Sequence[Any], rail_of: Callable[[Any], int],
                  link: str, switch: str, radix: int | None = None,
                  fabric_id: str = "scaleout", level: str = "scaleout", prefix: str = "",
                  bw_Bps: float | None = None, latency_s: float | None = None,
                  up_paths: dict[Any, list[tuple]] | None = None) -> GraphFabric:
    """One rail per ``rail_of(endpoint)`` over ``endpoints`` (NICs), registered as one fabric.

    ``up_paths[nic]`` lists the node paths by which devices reach the NIC (device ... gateway,
    NIC); each device is attached at its gateway, since cross-rail routes leave it over the
    scale-up links rather than through its own NIC.
    """
    rails: dict[int, list] = {}
    for e in endpoints:
        rails.setdefault(rail_of(e), []).append(e)
    before = set(G.nodes)
    for r, members in sorted(rails.items()):
        add_fat_tree(G, members, link, switch, radix=radix, fabric_id=f"{fabric_id}:rail{r}",
                     level=level, prefix=f"{prefix}rail{r}/", bw_Bps=bw_Bps,
                     latency_s=latency_s, register=False)
    members = set(G.nodes) - before | set(endpoints)
    paths = [p for e in endpoints for p in (up_paths or {}).get(e, [(e,)])]
    gateways = {p[-2] if len(p) > 1 else p[0] for p in paths}
    for gw in gateways:  # the scale-up domain bridges the rails
        members.add(gw)
        members.update(n for n in G.successors(gw) if G.nodes[n]["kind"] in ("switch",)
                       and G.nodes[n].get("tier") == "scaleup")
        members.update(n for n in G.successors(gw) if n in gateways)
    fabric = add_fabric(G, GraphFabric(fabric_id, level, members=frozenset(members)))
    for nic in endpoints:  # so a device's injection counts its NIC link (a DirectFabric rule)
        attach(G, nic, fabric)
    for path in paths:
        entry = path[-2] if len(path) > 1 else path[0]
        attach(G, path[0], fabric, entry=entry, up=path[:-1] if len(path) > 1 else path)
    return fabric
