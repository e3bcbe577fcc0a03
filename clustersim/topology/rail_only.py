"""Rail-only fabrics (Wang et al., "How to Build Low-cost Networks for Large Language Models
(without Sacrificing Performance)", arXiv:2307.12169, 2023): the NIC of local rank ``i`` of
every node joins rail ``i`` (one switch, or a fat-tree when a rail outgrows one switch's
radix) and there is no spine. Traffic between ranks of different rails crosses the scale-up
domain (NVLink) of the source or destination node to reach the right rail.

Routing is what ECMP over shortest paths inside the rails, the NICs, the accelerators and
their scale-up switches gives (:class:`~clustersim.topology.graph.RailOnlyFabric`, computed
from the structure): same-rail traffic takes NIC, rail, NIC, and cross-rail traffic forwards
over NVLink at either end, split by the bandwidth of the first hop.

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
from clustersim.topology.graph import RailOnlyFabric, add_fabric, attach

__all__ = ["add_rail_only"]


def add_rail_only(G: nx.DiGraph, endpoints: Sequence[Any], rail_of: Callable[[Any], int],
                  link: str, switch: str, radix: int | None = None,
                  fabric_id: str = "scaleout", level: str = "scaleout", prefix: str = "",
                  bw_Bps: float | None = None, latency_s: float | None = None,
                  up_paths: dict[Any, list[tuple]] | None = None) -> RailOnlyFabric:
    """One rail per ``rail_of(endpoint)`` over ``endpoints`` (NICs), registered as one fabric.

    ``up_paths[nic]`` lists the node paths by which devices reach the NIC (device ... gateway,
    NIC); each device is attached at its gateway, since cross-rail routes leave it over the
    scale-up links rather than through its own NIC.
    """
    rails: dict[int, list] = {}
    for e in endpoints:
        rails.setdefault(rail_of(e), []).append(e)
    before = set(G.nodes)
    index = {r: k for k, r in enumerate(sorted(rails))}
    trees = tuple(add_fat_tree(G, rails[r], link, switch, radix=radix,
                               fabric_id=f"{fabric_id}:rail{r}", level=level,
                               prefix=f"{prefix}rail{r}/", bw_Bps=bw_Bps,
                               latency_s=latency_s, register=False) for r in sorted(rails))
    members = set(G.nodes) - before | set(endpoints)
    paths = [p for e in endpoints for p in (up_paths or {}).get(e, [(e,)])]
    nic_of = {p[-2]: p[-1] for p in paths if len(p) > 1}
    local_of, peers = {}, {}
    for gw, nic in nic_of.items():  # the scale-up domain bridges the rails
        members.add(gw)
        members.update(n for n in G.successors(gw) if G.nodes[n]["kind"] == "switch"
                       and G.nodes[n].get("tier") == "scaleup")
        members.update(n for n in G.successors(gw) if n in nic_of)
        domain = next((a.fabric for a in G.nodes[gw]["attach"] if a.level == "scaleup"), None)
        local_of[gw] = domain
        peers.setdefault((domain, index[rail_of(nic)]), []).append(gw)
    fabric = add_fabric(G, RailOnlyFabric(
        fabric_id, level, members=frozenset(members), rails=trees,
        rail_of={gw: index[rail_of(nic)] for gw, nic in nic_of.items()}, nic_of=nic_of,
        local_of=local_of, peers={k: tuple(v) for k, v in peers.items()}))
    for nic in endpoints:  # so a device's injection counts its NIC link (a DirectFabric rule)
        attach(G, nic, fabric)
    for path in paths:
        entry = path[-2] if len(path) > 1 else path[0]
        attach(G, path[0], fabric, entry=entry, up=path[:-1] if len(path) > 1 else path)
    return fabric
