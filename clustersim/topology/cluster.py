"""A built cluster: the graph, its devices in rank order, flat link arrays and a router.

Downstream code never walks the networkx graph in a hot loop: it asks the router for a route
once and gets link indices into the LinkTable's flat arrays, which the numba kernels read.

>>> from clustersim.topology.torus import torus
>>> c = Cluster.from_graph(torus((4, 4), link="ici-v4"))
>>> links, weights, latency_s = c.route(c.devices[0], c.devices[5])
>>> len(links), float(weights.sum())
(2, 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import networkx as nx
import numpy as np

from clustersim.network.routing import Router

__all__ = ["LinkTable", "Cluster"]


@dataclass
class LinkTable:
    """One entry per link resource; a half-duplex edge pair shares one entry."""

    edges: list[tuple]                 # a representative directed edge per link
    edge_index: dict[tuple, int]       # every directed edge -> its link
    capacity_Bps: np.ndarray
    latency_s: np.ndarray
    energy_J_per_bit: np.ndarray
    tech_id: np.ndarray
    techs: tuple[str, ...]

    @classmethod
    def from_graph(cls, G: nx.DiGraph) -> LinkTable:
        """One link per directed edge, except: a half-duplex pair shares one link, and edges
        of one bundle (parallel links routing always loads evenly) form one link whose
        capacity is their sum."""
        edges, index, cap, lat, energy, tech = [], {}, [], [], [], []
        techs: dict[str, int] = {}
        bundles: dict = {}
        for u, v, data in G.edges(data=True):
            if (u, v) in index:
                continue
            bundle = data.get("bundle")
            if bundle is not None and bundle in bundles:
                i = bundles[bundle]
                index[(u, v)] = i
                cap[i] += data["bw_Bps"]
                continue
            i = len(edges)
            index[(u, v)] = i
            if bundle is not None:
                bundles[bundle] = i
            if data["duplex"] == "half":
                index[(v, u)] = i
            edges.append((u, v))
            cap.append(data["bw_Bps"])
            lat.append(data["latency_s"])
            energy.append(data["energy_J_per_bit"])
            tech.append(techs.setdefault(data["tech"], len(techs)))
        return cls(edges, index, np.array(cap, dtype=np.float64),
                   np.array(lat, dtype=np.float64), np.array(energy, dtype=np.float64),
                   np.array(tech, dtype=np.int64), tuple(techs))

    def __len__(self) -> int:
        return len(self.edges)


@dataclass
class Cluster:
    """What every downstream stage needs to know about the hardware."""

    name: str
    graph: nx.DiGraph
    devices: list
    links: LinkTable
    router: Router
    params: dict[str, Any] = field(default_factory=dict)
    _routes: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_graph(cls, G: nx.DiGraph, name: str | None = None,
                   params: dict[str, Any] | None = None) -> Cluster:
        return cls(name or G.graph.get("name", "cluster"), G, list(G.graph["devices"]),
                   LinkTable.from_graph(G), Router(G), dict(params or {}))

    @cached_property
    def rank_of(self) -> dict[Any, int]:
        return {d: i for i, d in enumerate(self.devices)}

    @property
    def device(self):
        """The accelerator (or die) spec every device of this cluster runs."""
        return self.graph.graph["device"]

    def route(self, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """``(link indices, weights, latency_s)`` of the route from node ``a`` to ``b``."""
        key = (a, b)
        found = self._routes.get(key)
        if found is None:
            pairs = self.router.edges(a, b)
            index = self.links.edge_index
            links = np.fromiter((index[e] for e, _ in pairs), dtype=np.int64, count=len(pairs))
            weights = np.fromiter((w for _, w in pairs), dtype=np.float64, count=len(pairs))
            latency = float(np.dot(weights, self.links.latency_s[links])) if len(pairs) else 0.0
            if len(np.unique(links)) < len(links):  # edges of one bundle are one link
                links, inverse = np.unique(links, return_inverse=True)
                weights = np.bincount(inverse, weights=weights)
            found = (links, weights, latency)
            self._routes[key] = found
        return found

    def memory_node(self, device: Any) -> Any:
        return self.graph.nodes[device]["memory"]

    def memory_bw_Bps(self, device: Any) -> float:
        """Bandwidth of the device's own memory edges (all stacks, one direction shared)."""
        return self.graph.edges[device, self.memory_node(device)]["bw_Bps"]

    def memory_capacity_B(self, device: Any) -> float:
        return self.graph.nodes[self.memory_node(device)]["capacity_B"]

    def nodes_of_kind(self, kind: str) -> list:
        return [n for n, k in self.graph.nodes(data="kind") if k == kind]
