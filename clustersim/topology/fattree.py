"""Folded-Clos fat-trees of one to three switch levels, optionally rail-optimised.

Every switch has ``radix`` ports. A leaf uses half of them downwards and ``d / r`` upwards for
an oversubscription ``r`` (fewer uplinks, as in practice); above the leaves the tree is
non-blocking. Two levels hold up to ``radix`` leaves (a spine has one port per leaf); three
levels group ``radix / 2`` leaves into a pod and hold up to ``radix`` pods, i.e. ``radix^3 / 4``
endpoints at ``r = 1`` (Al-Fares et al., SIGCOMM 2008).

Rail-optimised (NVIDIA DGX SuperPOD reference architecture): NIC ``i`` of every node joins the
leaves of rail ``i``, so same-rail traffic between nodes crosses a single leaf.

>>> from clustersim.topology.graph import new_graph, add_node
>>> G = new_graph("ft")
>>> for i in range(8):
...     add_node(G, f"nic{i}", "nic")
>>> ft = add_fat_tree(G, [f"nic{i}" for i in range(8)], "ib-ndr", "quantum2-ndr", radix=4)
>>> ft.levels, len(ft.aggs[0])
(2, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import networkx as nx

from clustersim.hardware.catalog import get_switch
from clustersim.topology.graph import (FatTreeFabric, SwitchFabric, add_fabric, add_link,
                                       add_node, attach)

__all__ = ["add_fat_tree", "fat_tree_capacity", "leaf_uplinks"]


def leaf_uplinks(radix: int, oversubscription: float) -> tuple[int, int]:
    """``(down, up)`` ports of a leaf: half the radix down, ``down / r`` up (at least one).

    >>> leaf_uplinks(64, 1), leaf_uplinks(64, 4)
    ((32, 32), (32, 8))
    """
    if radix < 2:
        raise ValueError(f"a switch radix must be at least 2, got {radix}")
    if oversubscription < 1:
        raise ValueError(f"oversubscription must be >= 1 (down:up), got {oversubscription}")
    down = radix // 2
    return down, max(1, round(down / oversubscription))


def fat_tree_capacity(radix: int, levels: int) -> int:
    """Most endpoints a fat-tree of ``levels`` levels can hold.

    >>> fat_tree_capacity(64, 2), fat_tree_capacity(64, 3)
    (2048, 65536)
    """
    down = radix // 2
    return {1: radix, 2: down * radix, 3: down * down * radix}[levels]


def _leaf_members(endpoints: Sequence[Any], rail_of: Callable[[Any], int] | None,
                  down: int) -> list[list]:
    """The endpoints of each leaf: per rail, consecutive endpoints fill ``down`` ports;
    ordered chunk-major so that a pod (consecutive leaves) holds every rail of the same
    group of nodes."""
    rails: dict[int, list] = {}
    for e in endpoints:
        rails.setdefault(rail_of(e) if rail_of else 0, []).append(e)
    chunks = max(math.ceil(len(members) / down) for members in rails.values())
    return [rails[r][c * down:(c + 1) * down] for c in range(chunks) for r in sorted(rails)
            if rails[r][c * down:(c + 1) * down]]


def _add_cores(aggs: dict, up: int, radix: int, switch_node: Callable,
               link: Callable) -> dict:
    """The core level of a 3-level tree: ``cores[j]``, joined to agg ``j`` of every pod."""
    if len(aggs) > radix:
        raise ValueError(f"{len(aggs)} pods exceed the {radix} ports of a core switch")
    # Each agg sends radix/2 links up; agg j of every pod meets the same core group j. A
    # core has a port per pod link, so with fewer than radix pods a group needs fewer
    # cores, each taking several parallel links from every agg (same bandwidth, fewer
    # switches drawing power).
    uplinks = radix // 2
    per_group = next(n for n in range(1, uplinks + 1)
                     if uplinks % n == 0 and n * radix >= uplinks * len(aggs))
    cores = {}
    for j in range(up):
        cores[j] = tuple(switch_node(f"core{j}.{c}", "core") for c in range(per_group))
        for p in aggs:
            for core in cores[j]:
                link(aggs[p][j], core, uplinks // per_group)
    return cores


def add_fat_tree(G: nx.DiGraph, endpoints: Sequence[Any], link: str, switch: str,
                 radix: int | None = None, oversubscription: float = 1.0,
                 levels: int | None = None, rail_of: Callable[[Any], int] | None = None,
                 fabric_id: str = "scaleout", level: str = "scaleout", prefix: str = "",
                 bw_Bps: float | None = None, latency_s: float | None = None,
                 up_paths: dict[Any, tuple] | None = None, register: bool = True
                 ) -> FatTreeFabric | SwitchFabric:
    """Connect ``endpoints`` (NICs) through a fat-tree of ``switch`` chips; attach them.

    ``rail_of(endpoint)`` makes the tree rail-optimised. ``up_paths[e]`` is the node path by
    which the devices behind NIC ``e`` reach it: each path's first node gets the attachment.
    Returns the registered fabric (a single-switch SwitchFabric when one switch suffices);
    with ``register=False`` only the switches and links are added and the fabric is returned
    unregistered, for a caller that routes over several trees as one (multi-plane, rails).
    """
    spec = get_switch(switch)
    radix = radix or spec.ports
    sw_lat = spec.latency_s
    down, up = leaf_uplinks(radix, oversubscription)
    n = len(endpoints)
    if levels is None:
        levels = 1 if n <= radix else 2 if n <= fat_tree_capacity(radix, 2) else 3
    if n > fat_tree_capacity(radix, levels):
        raise ValueError(f"{n} endpoints exceed a {levels}-level fat-tree of radix {radix} "
                         f"(at most {fat_tree_capacity(radix, levels)}); raise the radix or "
                         f"the number of levels")

    def switch_node(name: str, tier: str) -> str:
        node = f"{prefix}{name}"
        add_node(G, node, "switch", tier=tier, model=switch, label=f"{spec.name} {tier}")
        return node

    def finish(fabric):
        if register:
            add_fabric(G, fabric)
            for e in endpoints:
                path = (up_paths or {}).get(e, (e,))
                attach(G, path[0], fabric, entry=e, up=path)
        return fabric

    if levels == 1:
        sw = switch_node("sw0", "leaf")
        for e in endpoints:
            add_link(G, e, sw, link, bw_Bps=bw_Bps, latency_s=latency_s, switch_latency_s=sw_lat)
        return finish(SwitchFabric(fabric_id, level, planes=(sw,),
                                   in_network_reduction=spec.in_network_reduction))

    leaves, leaf_of = [], {}
    for members in _leaf_members(endpoints, rail_of, down):
        leaf = switch_node(f"leaf{len(leaves)}", "leaf")
        leaves.append(leaf)
        for e in members:
            add_link(G, e, leaf, link, bw_Bps=bw_Bps, latency_s=latency_s, switch_latency_s=sw_lat)
            leaf_of[e] = leaf

    pod_size = len(leaves) if levels == 2 else radix // 2
    if levels == 2 and len(leaves) > radix:
        raise ValueError(f"{len(leaves)} leaves exceed the {radix} ports of a spine")
    pods = [leaves[i:i + pod_size] for i in range(0, len(leaves), pod_size)]
    pod_of, aggs, cores = {}, {}, {}
    for p, pod_leaves in enumerate(pods):
        tier = "spine" if levels == 2 else "agg"
        aggs[p] = tuple(switch_node(f"{tier}{p}.{j}" if levels == 3 else f"spine{j}", tier)
                        for j in range(up))
        for leaf in pod_leaves:
            pod_of[leaf] = p
            for agg in aggs[p]:  # ECMP spreads every leaf's traffic evenly over its aggs
                add_link(G, leaf, agg, link, bw_Bps=bw_Bps, latency_s=latency_s,
                         switch_latency_s=sw_lat, bundle=fabric_id)
    if levels == 3:
        cores = _add_cores(aggs, up, radix, switch_node, lambda u, v, count: add_link(
            G, u, v, link, count=count, bw_Bps=bw_Bps, latency_s=latency_s,
            switch_latency_s=sw_lat, bundle=fabric_id))
    return finish(FatTreeFabric(fabric_id, level, levels=levels, leaf_of=leaf_of,
                                pod_of=pod_of, aggs=aggs, cores=cores,
                                in_network_reduction=spec.in_network_reduction))
