"""What a topology offers: links by technology, injection bandwidth per device, bisection
bandwidth and diameter, all measured on the built graph under its own routing.

Bisection bandwidth is the *effective* bisection (as HPC benchmarks measure it): the first half
of the devices each send to their partner in the second half, the flows share links max-min
fairly under the cluster's routing, and the aggregate rate is the answer. For the topologies
here it equals the textbook min cut: ``2 * N / L * b`` for an N-chip torus whose longest
dimension is L, ``N/2 * b / r`` for a fat-tree with oversubscription r.

>>> from clustersim.topology.torus import torus
>>> c = Cluster.from_graph(torus((8,), link="ici-v4"))
>>> round(bisection_bandwidth(c) / float(c.links.capacity_Bps[0]), 6)   # a ring: 2 cross
2.0
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from clustersim.network.cluster import Cluster
from clustersim.network.maxmin import max_min_rates
from clustersim.topology.graph import (DirectFabric, FatTreeFabric, RailOnlyFabric, SwitchFabric,
                                      TorusFabric)

__all__ = ["links_by_technology", "nodes_by_kind", "injection_bandwidth",
           "bisection_bandwidth", "diameter", "flow_rates"]


def nodes_by_kind(cluster: Cluster) -> dict[str, int]:
    """How many nodes of each kind the graph has."""
    return dict(Counter(kind for _, kind in cluster.graph.nodes(data="kind")))


def links_by_technology(cluster: Cluster) -> list[dict[str, Any]]:
    """One row per technology: physical links (both directions counted once), bandwidth per
    link per direction, and the total of all links per direction."""
    rows: dict[str, dict[str, Any]] = {}
    for u, v, d in cluster.graph.edges(data=True):
        row = rows.setdefault(d["tech"], {"technology": d["tech"], "links": 0,
                                          "bw_per_link_Bps": d["bw_Bps"] / d["count"],
                                          "total_bw_Bps": 0.0})
        # each physical link appears as two directed edges: count half of each
        row["links"] += d["count"] / 2
        row["total_bw_Bps"] += d["bw_Bps"] / 2
    for row in rows.values():
        row["links"] = int(round(row["links"]))
    return sorted(rows.values(), key=lambda r: -r["total_bw_Bps"])


def _fabric_injection(cluster: Cluster, fabric, entry) -> float:
    G = cluster.graph
    if isinstance(fabric, SwitchFabric):
        return sum(G.edges[entry, s]["bw_Bps"] for s in fabric.planes)
    if isinstance(fabric, FatTreeFabric):
        return G.edges[entry, fabric.leaf_of[entry]]["bw_Bps"]
    if isinstance(fabric, TorusFabric):
        firsts = {fabric.hops[(entry, d, s)][1] for d in range(len(fabric.dims)) for s in (1, -1)
                  if (entry, d, s) in fabric.hops}
        return sum(G.edges[entry, n]["bw_Bps"] for n in firsts)
    if isinstance(fabric, DirectFabric):
        peers = [n for n in G.successors(entry)
                 if any(a.fabric == fabric.id for a in G.nodes[n]["attach"])]
        return sum(G.edges[entry, n]["bw_Bps"] for n in peers)
    raise TypeError(type(fabric).__name__)


def injection_bandwidth(cluster: Cluster, device: Any = None) -> list[dict[str, Any]]:
    """Per fabric level a device joins: how fast it can inject (per direction), i.e. the
    smaller of its path to the fabric and the fabric's ports at its entry."""
    G = cluster.graph
    device = cluster.devices[0] if device is None else device
    rows = []
    for att in G.nodes[device]["attach"]:
        fabric = cluster.router.fabrics[att.fabric]
        bw = _fabric_injection(cluster, fabric, att.entry)
        techs = {G.edges[u, v]["tech"] for u, v in zip(att.up, att.up[1:])}
        for u, v in zip(att.up, att.up[1:]):
            bw = min(bw, G.edges[u, v]["bw_Bps"])
        entry_tech = _entry_tech(G, fabric, att.entry)
        rows.append({"level": att.level, "technology": entry_tech,
                     "via": ",".join(sorted(techs)) or "-", "bw_Bps": bw})
    return rows


def _entry_tech(G, fabric, entry) -> str:
    if isinstance(fabric, SwitchFabric):
        return G.edges[entry, fabric.planes[0]]["tech"]
    if isinstance(fabric, FatTreeFabric):
        return G.edges[entry, fabric.leaf_of[entry]]["tech"]
    for (node, _, _), hop in getattr(fabric, "hops", {}).items():
        if node == entry:
            return G.edges[hop[0], hop[1]]["tech"]
    if isinstance(fabric, RailOnlyFabric):   # the device's NIC port onto its rail switch
        nic = fabric.nic_of[entry]
        ports = [n for n in G.successors(nic) if G.nodes[n]["kind"] == "switch"]
        return G.edges[nic, ports[0]]["tech"] if ports else "-"
    # a mesh or a drawn graph: the entry's link into the fabric, not to its own memory or host
    members = getattr(fabric, "members", None) or ()
    inside = [n for n in G.successors(entry) if n in members] or \
        [n for n in G.successors(entry) if G.nodes[n]["kind"] not in ("memory", "host")]
    return G.edges[entry, inside[0]]["tech"] if inside else "-"


def flow_rates(cluster: Cluster, pairs: list[tuple[Any, Any]]) -> np.ndarray:
    """Max-min fair rates of concurrent flows between the given node pairs."""
    ptr, links, weights = [0], [], []
    for a, b in pairs:
        lk, w, _ = cluster.route(a, b)
        links.append(lk)
        weights.append(w)
        ptr.append(ptr[-1] + len(lk))
    return max_min_rates(np.array(ptr), np.concatenate(links) if links else np.zeros(0, int),
                         np.concatenate(weights) if weights else np.zeros(0),
                         cluster.links.capacity_Bps)


def _half_shifts(cluster: Cluster):
    """Candidate bisections: device i -> i + N/2 in rank order and, on a single torus, the
    shift by half a ring along each dimension (the cut across the longest is the minimum)."""
    devices = cluster.devices
    half = len(devices) // 2
    yield [(devices[i], devices[i + half]) for i in range(half)]
    tori = [f for f in cluster.router.fabrics.values() if isinstance(f, TorusFabric)]
    if len(tori) == 1 and len(tori[0].coords) == len(devices):
        f = tori[0]
        for d, size in enumerate(f.dims):
            if size < 2 or size % 2:
                continue
            shift = [0] * len(f.dims)
            shift[d] = size // 2
            yield [(node, f.at[tuple(x + s for x, s in zip(c, shift))])
                   for node, c in f.coords.items() if c[d] < size // 2]


def bisection_bandwidth(cluster: Cluster) -> float:
    """Aggregate rate (bytes/s, one direction) of the worst half-shift permutation: each
    device of one half sends to its partner in the other (see module docstring)."""
    if len(cluster.devices) < 2:
        return 0.0
    return min(float(np.sum(flow_rates(cluster, pairs))) for pairs in _half_shifts(cluster))


def diameter(cluster: Cluster) -> int:
    """Most links a routed path between two devices crosses (from the first and the last
    device to every other; exact for the vertex-transitive fabrics built here)."""
    devices = cluster.devices
    best = 0
    for src in {devices[0], devices[-1]}:
        for dst in devices:
            _, weights, _ = cluster.route(src, dst)
            best = max(best, int(round(float(weights.sum()))))
    return best
