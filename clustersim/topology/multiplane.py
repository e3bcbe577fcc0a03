"""Multi-plane fabrics: several independent fat-trees ("planes") over the same NICs, each NIC
port in one plane, as when a multi-port NIC (or a NIC split into several ports) spreads its
traffic over parallel scale-out networks that share no switch.

Routing is ECMP over shortest paths (:class:`~clustersim.topology.graph.PlanesFabric`): a flow
leaves its NIC over every plane in proportion to the port bandwidths and follows each plane's
up/down paths, so a plane of ``k``-port NICs carries ``1/k`` of every flow (computed plane by
plane, never by searching the union).

>>> from clustersim.topology.graph import new_graph, add_node
>>> G = new_graph("mp")
>>> for i in range(4):
...     add_node(G, f"nic{i}", "nic")
>>> f = add_multiplane_fat_tree(G, [f"nic{i}" for i in range(4)], 2, "ib-ndr", "quantum2-ndr")
>>> sorted(n for n in G.successors("nic0"))
['p0/sw0', 'p1/sw0']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import networkx as nx

from clustersim.hardware.catalog import get_switch
from clustersim.topology.fattree import add_fat_tree
from clustersim.topology.graph import PlanesFabric, add_fabric, attach

__all__ = ["add_multiplane_fat_tree"]


def add_multiplane_fat_tree(G: nx.DiGraph, endpoints: Sequence[Any], planes: int, link: str,
                            switch: str, radix: int | None = None,
                            oversubscription: float = 1.0, levels: int | None = None,
                            rail_of: Callable[[Any], int] | None = None,
                            fabric_id: str = "scaleout", level: str = "scaleout",
                            prefix: str = "", bw_Bps: float | None = None,
                            latency_s: float | None = None,
                            up_paths: dict[Any, tuple] | None = None) -> PlanesFabric:
    """``planes`` fat-trees over ``endpoints`` (one port of each endpoint in each plane),
    registered and attached as one fabric (``up_paths`` as in
    :func:`~clustersim.topology.fattree.add_fat_tree`)."""
    if planes < 1:
        raise ValueError(f"a multi-plane fabric needs at least one plane, got {planes}")
    before = set(G.nodes)
    trees = tuple(add_fat_tree(G, endpoints, link, switch, radix=radix,
                               oversubscription=oversubscription, levels=levels,
                               rail_of=rail_of, fabric_id=f"{fabric_id}:p{k}", level=level,
                               prefix=f"{prefix}p{k}/", bw_Bps=bw_Bps, latency_s=latency_s,
                               register=False) for k in range(planes))
    members = frozenset(set(G.nodes) - before) | frozenset(endpoints)
    # Each plane is a whole fat-tree of `switch`: a reduction striped over the planes reduces
    # in each plane's switches, as a switch-reduced collective over several NICs does.
    reduction = get_switch(switch).in_network_reduction
    fabric = add_fabric(G, PlanesFabric(fabric_id, level, members=members,
                                        in_network_reduction=reduction, planes=trees))
    for e in endpoints:
        path = (up_paths or {}).get(e, (e,))
        attach(G, path[0], fabric, entry=e, up=path)
    return fabric
