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
- endpoints each on one leaf switch, every leaf linked to every spine, is a two-level
  FatTreeFabric (up/down ECMP);
- endpoints with ``coords`` whose links (direct, or through optical circuit switches) join
  coordinate neighbours form a TorusFabric, routed in dimension order (a TPU pod, a die mesh);
- anything else is a GraphFabric routed by ECMP over shortest paths (three-level fat-trees,
  dragonflies, tori without coords; on fat-trees ECMP gives the builder's routes exactly).

Devices attach innermost first (package, scaleup, torus, host, cxl, scaleout), as builders do;
dies without their own off-package links reach those fabrics through their package's gateway
die (the one at the mesh origin).

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

import math
from collections import defaultdict
from typing import Any

import networkx as nx

from clustersim.hardware.catalog import get_switch
from clustersim.topology.graph import (COMPUTE_KINDS, DirectFabric, Fabric, FatTreeFabric,
                                       GraphFabric, SwitchFabric, TorusFabric, add_fabric,
                                       attach, link_tech)
from clustersim.topology.torus import mesh_path

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


def _hop(G: nx.DiGraph, node: Any, other: Any) -> tuple | None:
    """The node path of one torus hop: a direct link, or through a shared optical switch."""
    if G.has_edge(node, other):
        return (node, other)
    for ocs in G.successors(node):
        if G.nodes[ocs]["kind"] == "optical_switch" and G.has_edge(ocs, other):
            return (node, ocs, other)
    return None


def _torus(G: nx.DiGraph, ends: list, centres: list, pairs: set, level: str,
           fid: str) -> TorusFabric | None:
    """A TorusFabric when every endpoint has ``coords``, the centres are optical switches
    and the hops between coordinate neighbours account for every link; else None."""
    if not ends or any(G.nodes[n]["kind"] != "optical_switch" for n in centres) or \
            any(G.nodes[e].get("coords") is None for e in ends):
        return None
    coords = {e: tuple(G.nodes[e]["coords"]) for e in ends}
    at = {c: e for e, c in coords.items()}
    dims = tuple(max(c[d] for c in at) + 1 for d in range(len(next(iter(at)))))
    if len(at) != len(ends) or len(at) != math.prod(dims):
        return None
    hops, used = {}, set()
    for e, c in coords.items():
        for d, size in enumerate(dims):
            for step in ((1, -1) if size > 1 else ()):
                n = list(c)
                n[d] = (c[d] + step) % size
                path = _hop(G, e, at[tuple(n)])
                if path is not None:
                    hops[(e, d, step)] = path
                    used.update(frozenset(p) for p in zip(path, path[1:]))
    if used != pairs:
        return None
    origin = at[(0,) * len(dims)]
    wrap = tuple(size > 2 and (origin, d, -1) in hops for d, size in enumerate(dims))
    return TorusFabric(fid, level, dims=dims, wrap=wrap, coords=coords, at=at, hops=hops)


def _two_level_tree(G: nx.DiGraph, ends: list, centres: list, pairs: set, level: str,
                    fid: str, reduction: str | None) -> FatTreeFabric | None:
    """A FatTreeFabric when every endpoint hangs off one leaf switch and every leaf links
    to every spine (and nothing else joins switches): a two-level folded Clos."""
    if not ends or any(G.nodes[c]["kind"] != "switch" for c in centres):
        return None
    leaf_of = {}
    for e in ends:
        up = [c for c in G.successors(e) if frozenset((e, c)) in pairs]
        if len(up) != 1:
            return None
        leaf_of[e] = up[0]
    leaves = list(dict.fromkeys(leaf_of.values()))
    spines = [c for c in centres if c not in set(leaves)]
    if not spines or len(pairs) != len(ends) + len(leaves) * len(spines) or any(
            frozenset((leaf, s)) not in pairs for leaf in leaves for s in spines):
        return None
    for leaf in leaves:  # ECMP loads a leaf's uplinks evenly: one resource each way
        for s in spines:
            G.edges[leaf, s]["bundle"] = ("out", leaf, fid)
            G.edges[s, leaf]["bundle"] = ("in", leaf, fid)
    return FatTreeFabric(fid, level, levels=2, leaf_of=leaf_of,
                         pod_of={leaf: 0 for leaf in leaves}, aggs={0: tuple(spines)},
                         in_network_reduction=reduction)


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
    structured = _torus(G, ends, centres, pairs, level, fid) or \
        _two_level_tree(G, ends, centres, pairs, level, fid, reduction)
    if structured is not None:
        return structured
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


def _through_gateways(G: nx.DiGraph, fabrics: list[Fabric]) -> None:
    """Dies of a package without their own off-package links reach the host, CXL and
    scale-out fabrics through the package's gateway die (the one at the mesh origin), along
    the mesh in dimension order, as the GPU-cluster builder wires chiplets."""
    outside = ("host", "cxl", "scaleout")
    for f in fabrics:
        if f.level != "package" or not isinstance(f, TorusFabric):
            continue
        gateway = f.at[(0,) * len(f.dims)]
        for die in f.coords:
            if die == gateway or any(a.level in outside for a in G.nodes[die]["attach"]):
                continue
            path = mesh_path(f, die, gateway)
            for att in G.nodes[gateway]["attach"]:
                if att.level in outside and att.up[0] == gateway:
                    attach(G, die, G.graph["fabrics"][att.fabric], entry=att.entry,
                           up=path + att.up[1:])


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
    _through_gateways(G, fabrics)
    return fabrics
