"""Scale-up domains: accelerators joined through switch planes (NVSwitch, the NVL72 NVLink
switch trays, a PCIe or CXL switch) or by a direct full mesh (MI300X xGMI).

An H100 has 18 NVLink4 links spread over the 4 NVSwitch chips of a DGX H100 as 5+4+4+5
(NVIDIA DGX H100 user guide); a GB200 NVL72 GPU has one NVLink5 link to each of 18 switch
chips. :func:`spread_links` reproduces both.

>>> spread_links(18, 4), spread_links(18, 18)[:3], spread_links(12, 6)
([5, 4, 4, 5], [1, 1, 1], [2, 2, 2, 2, 2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx

from clustersim.hardware.catalog import get_switch
from clustersim.topology.graph import (DirectFabric, SwitchFabric, add_fabric, add_link,
                                       add_node, attach)

__all__ = ["spread_links", "add_switch_domain", "add_direct_mesh"]


def spread_links(links: int, planes: int) -> list[int]:
    """Split ``links`` over ``planes`` as evenly as possible, extras on the outer planes."""
    if planes < 1 or links < planes:
        raise ValueError(f"cannot spread {links} links over {planes} switch planes "
                         f"(each plane needs at least one link)")
    base, extra = divmod(links, planes)
    counts = [base] * planes
    order = [i for pair in zip(range(planes), reversed(range(planes))) for i in pair]
    seen: list[int] = []
    for i in order:
        if i not in seen:
            seen.append(i)
    for i in seen[:extra]:
        counts[i] += 1
    return counts


def add_switch_domain(G: nx.DiGraph, endpoints: Sequence[Any], link: str, links_each: int,
                      switch: str, planes: int = 1, fabric_id: str = "scaleup",
                      level: str = "scaleup", prefix: str = "", bw_Bps: float | None = None,
                      switch_label: str | None = None,
                      latency_s: float | None = None) -> SwitchFabric:
    """Join ``endpoints`` through ``planes`` switch chips, each endpoint spreading its
    ``links_each`` links over the planes; attach them to the new fabric."""
    spec = get_switch(switch)
    counts = spread_links(links_each, planes)
    names = []
    for p in range(planes):
        node = f"{prefix}sw{p}"
        add_node(G, node, "switch", tier="scaleup", model=switch,
                 label=switch_label or spec.name)
        names.append(node)
    for e in endpoints:
        for node, count in zip(names, counts):
            add_link(G, e, node, link, count=count, bw_Bps=bw_Bps, latency_s=latency_s,
                     switch_latency_s=spec.latency_s, bundle=fabric_id if planes > 1 else None)
    fabric = add_fabric(G, SwitchFabric(fabric_id, level, planes=tuple(names),
                                        in_network_reduction=spec.in_network_reduction))
    for e in endpoints:
        attach(G, e, fabric)
    return fabric


def add_direct_mesh(G: nx.DiGraph, endpoints: Sequence[Any], link: str, links_each_pair: int = 1,
                    fabric_id: str = "scaleup", level: str = "scaleup",
                    bw_Bps: float | None = None, latency_s: float | None = None
                    ) -> DirectFabric:
    """A full mesh: every pair of ``endpoints`` gets ``links_each_pair`` direct links."""
    for i, a in enumerate(endpoints):
        for b in endpoints[i + 1:]:
            add_link(G, a, b, link, count=links_each_pair, bw_Bps=bw_Bps, latency_s=latency_s)
    fabric = add_fabric(G, DirectFabric(fabric_id, level))
    for e in endpoints:
        attach(G, e, fabric)
    return fabric
