"""Fabrics read off a hand-wired graph: what the builders record as they build, recovered from
the nodes and links alone, so a graph from a YAML list, node-link JSON or GraphML routes like
a built one.

Every link belongs to a level by its technology's catalog category (die-to-die: package;
scale-up and chip-to-chip: scaleup; torus; coherent: cxl; scale-out: scaleout), except that a
link touching a host CPU is the host level, one between a device (or host) and a NIC is how
devices reach the scale-out fabric, and memory buses join no fabric. Each connected piece of
one level is one fabric:

- a star (every link joins an endpoint to a centre -- a switch or a host -- and every endpoint
  reaches every centre) is a SwitchFabric, its centres the planes (an NVSwitch domain, a host);
- a full mesh of endpoints is a DirectFabric (MI300X xGMI);
- anything else is a GraphFabric routed by ECMP over shortest paths (fat-trees, dragonflies
  and tori drawn by hand; on fat-trees ECMP gives the builder's up/down routes exactly).

Devices attach innermost first (package, scaleup, torus, host, cxl, scaleout), as builders do.

>>> from clustersim.topology.graph import new_graph, add_node, add_link
>>> G = new_graph("pair")
>>> for g in ("g0", "g1"):
...     add_node(G, g, "accelerator")
>>> add_node(G, "sw", "switch", model="nvswitch3")
>>> for g in ("g0", "g1"):
...     add_link(G, g, "sw", "nvlink4", count=18)
>>> [type(f).__name__ for f in infer_fabrics(G)]
['SwitchFabric']
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import networkx as nx

from clustersim.hardware.catalog import get_switch
from clustersim.topology.graph import (COMPUTE_KINDS, DirectFabric, Fabric, GraphFabric,
                                       SwitchFabric, add_fabric, attach, link_tech)

__all__ = ["LEVELS", "link_level", "infer_fabrics"]

LEVELS = ("package", "scaleup", "torus", "host", "cxl", "scaleout")
_LEVEL_OF_CATEGORY = {"die-to-die": "package", "scale-up": "scaleup",
                      "chip-to-chip": "scaleup", "torus": "torus", "coherent": "cxl",
                      "scale-out": "scaleout", "host": "scaleup"}
_CENTRES = ("switch", "optical_switch", "host")


def link_level(G: nx.DiGraph, u: Any, v: Any) -> str | None:
    """The level of the link ``u``-``v`` (``nic`` for a device's or host's link to a NIC,
    None for a memory bus)."""
    kinds = {G.nodes[u]["kind"], G.nodes[v]["kind"]}
    category = link_tech(G.edges[u, v]["tech"]).category
    if category == "memory":
        return None
    if "nic" in kinds and not kinds & {"switch", "optical_switch"}:
        return "nic"
    if "host" in kinds:
        return "host"
    return _LEVEL_OF_CATEGORY[category]


def _links_by_level(G: nx.DiGraph) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = defaultdict(list)
    seen = set()
    for u, v in G.edges():
        if (v, u) in seen:
            continue
        seen.add((u, v))
        level = link_level(G, u, v)
        if level is not None:
            out[level].append((u, v))
    return out


def _common_reduction(G: nx.DiGraph, centres: list) -> str | None:
    """The in-network reduction (nvls, sharp) every centre offers, if they all are switches
    of one model that has one."""
    models = {G.nodes[c].get("model") for c in centres}
    if len(models) != 1 or any(G.nodes[c]["kind"] != "switch" for c in centres):
        return None
    return get_switch(models.pop()).in_network_reduction


def _classify(G: nx.DiGraph, nodes: list, links: list[tuple], level: str, fid: str) -> Fabric:
    """The fabric of one connected piece (see the module docstring)."""
    centres = [n for n in nodes if G.nodes[n]["kind"] in _CENTRES]
    ends = [n for n in nodes if G.nodes[n]["kind"] not in _CENTRES]
    pairs = {frozenset(e) for e in links}
    is_star = centres and all(len(p & set(centres)) == 1 for p in pairs) and \
        len(pairs) == len(centres) * len(ends)
    reduction = _common_reduction(G, centres)
    if is_star:
        if len(centres) > 1:  # ECMP over the planes loads them evenly: one resource each way
            for e in ends:
                for c in centres:
                    G.edges[e, c]["bundle"] = ("out", e, fid)
                    G.edges[c, e]["bundle"] = ("in", e, fid)
        return SwitchFabric(fid, level, planes=tuple(centres), in_network_reduction=reduction)
    if not centres and len(pairs) == len(ends) * (len(ends) - 1) // 2:
        return DirectFabric(fid, level)
    # Switches reduce in the network only where every route stays among them (no device
    # forwards): a tree of SHARP switches, not a torus of accelerators.
    forwarding = any(G.nodes[n]["kind"] in COMPUTE_KINDS for n in nodes)
    return GraphFabric(fid, level, members=frozenset(nodes),
                       in_network_reduction=None if forwarding else reduction)


def _nic_paths(G: nx.DiGraph, nic_links: list[tuple]) -> dict[Any, list[tuple]]:
    """``nic -> [up path of each device it serves]``: a device linked to the NIC, or the
    devices of a host linked to it (dealt round-robin over the host's NICs)."""
    paths: dict[Any, list[tuple]] = defaultdict(list)
    host_nics: dict[Any, list] = defaultdict(list)
    for u, v in nic_links:
        nic, other = (u, v) if G.nodes[u]["kind"] == "nic" else (v, u)
        if G.nodes[other]["kind"] in COMPUTE_KINDS:
            paths[nic].append((other, nic))
        elif G.nodes[other]["kind"] == "host":
            host_nics[other].append(nic)
    for host, nics in host_nics.items():
        chips = [n for n in G.predecessors(host) if G.nodes[n]["kind"] in COMPUTE_KINDS]
        for i, nic in enumerate(nics):
            paths[nic].extend((chip, host, nic) for chip in chips[i::len(nics)])
    return paths


def _endpoints(G: nx.DiGraph, fabric: Fabric, nodes: list) -> list:
    """The nodes of a piece that attach to it: compute nodes and NICs, plus the memory a
    host or CXL switch serves (what offloading reaches)."""
    ends = [n for n in nodes if G.nodes[n]["kind"] in COMPUTE_KINDS + ("nic", "cxl_memory")]
    if fabric.level == "host":
        ends += [m for c in nodes if G.nodes[c]["kind"] == "host"
                 for m in G.successors(c) if G.nodes[m]["kind"] == "memory"]
    return ends


def infer_fabrics(G: nx.DiGraph) -> list[Fabric]:
    """Register the fabrics of ``G`` and attach its devices to them; returns the fabrics."""
    by_level = _links_by_level(G)
    nic_paths = _nic_paths(G, by_level.get("nic", []))
    order = {n: i for i, n in enumerate(G.nodes)}
    fabrics = []
    for level in LEVELS:
        H = nx.Graph(by_level.get(level, []))
        pieces = sorted((sorted(c, key=order.get) for c in nx.connected_components(H)),
                        key=lambda c: order[c[0]])
        for k, nodes in enumerate(pieces):
            links = list(H.subgraph(nodes).edges())
            fabric = add_fabric(G, _classify(G, nodes, links, level, f"{level}:{k}"))
            fabrics.append(fabric)
            for e in _endpoints(G, fabric, nodes):
                if G.nodes[e]["kind"] != "nic":
                    attach(G, e, fabric)
                    continue
                for path in nic_paths.get(e, []):
                    attach(G, path[0], fabric, entry=e, up=path)
    return fabrics
