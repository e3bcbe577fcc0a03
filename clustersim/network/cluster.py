"""A built cluster: the graph, its devices in rank order, flat link arrays and a router.

Downstream code never walks the networkx graph in a hot loop: it asks the router for a route
once and gets link indices into the LinkTable's flat arrays, which the numba kernels read.
The topology layer describes the graph; this module makes it routable (:class:`Router`,
:class:`~clustersim.network.links.LinkTable`) and hands both to the :class:`Cluster`.

>>> from clustersim.topology.torus import torus
>>> c = Cluster.from_graph(torus((4, 4), link="ici-v4"))
>>> links, weights, latency_s = c.route(c.devices[0], c.devices[5])
>>> len(links), float(weights.sum())
(2, 2.0)
>>> c = build_cluster("dgx-h100", devices=16, overrides={"scale_out.bandwidth": "25 GB/s"})
>>> len(c.devices), c.params["scale_out"]["bandwidth"]
(16, 25000000000.0)
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import networkx as nx
import numpy as np

from clustersim.errors import InputError
from clustersim.network.links import LinkTable
from clustersim.network.route_table import RouteTable
from clustersim.network.routing import Router
from clustersim.topology.graph import FatTreeFabric
from clustersim.topology.presets import build_graph

__all__ = ["Cluster", "build_cluster"]


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
    _segments: dict = field(default_factory=dict, repr=False)
    _offload_targets: dict = field(default_factory=dict, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    def memo(self, key: str, compute):
        """A per-cluster cache for derived facts (static power, ...): ``compute()`` once."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @classmethod
    def from_graph(cls, G: nx.DiGraph, name: str | None = None,
                   params: dict[str, Any] | None = None) -> Cluster:
        return cls(name or G.graph.get("name", "cluster"), G, list(G.graph["devices"]),
                   LinkTable.from_graph(G), Router(G), dict(params or {}))

    def on_devices(self, devices: list) -> Cluster:
        """The same hardware with only ``devices`` as its ranks (a job that holds part of the
        cluster): graph, links, router and the route caches are shared, the per-cluster memo
        (static power counts the devices) is not.

        >>> c = build_cluster("dgx-h100", devices=16)
        >>> half = c.on_devices(c.devices[8:])
        >>> half.devices[0], half.rank_of["n1/g3"], half.links is c.links
        ('n1/g0', 3, True)
        """
        return replace(self, devices=list(devices), _memo={})

    @cached_property
    def rank_of(self) -> dict[Any, int]:
        return {d: i for i, d in enumerate(self.devices)}

    @property
    def device(self):
        """The accelerator (or die) spec every device of this cluster runs."""
        return self.graph.graph["device"]

    def route(self, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """``(link indices, weights, latency_s)`` of the route from node ``a`` to ``b``.

        Routes are assembled from cached segments: each endpoint's path to its fabric, and
        the fabric's route between entries (on a fat-tree, between leaves: thousands of NIC
        pairs share a few leaf pairs)."""
        key = (a, b)
        found = self._routes.get(key)
        if found is not None:
            return found
        seg = self.router.segments(a, b)
        if seg is None:
            parts = [self._edge_links((((a, b), 1.0),))] if a != b else []
        else:
            up_a, fabric, entry_a, entry_b, up_b = seg
            parts = [self._path_links(up_a), self._middle_links(fabric, entry_a, entry_b),
                     self._path_links(tuple(reversed(up_b)))]
        parts = [p for p in parts if len(p[0])]
        if len(parts) == 1:
            links, weights = parts[0][0], parts[0][1]
        elif parts:  # segments never share a link: a plain concatenation
            links = np.concatenate([p[0] for p in parts])
            weights = np.concatenate([p[1] for p in parts])
        else:
            links, weights = np.zeros(0, np.int64), np.zeros(0)
        latency = sum(p[2] for p in parts)
        found = (links, weights, latency)
        self._routes[key] = found
        return found

    def routes(self, src, dst, classes: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """CSR ``(ptr, links, weights, latency_s)`` of the routes ``src[k] -> dst[k]`` (nodes):
        what :meth:`route` gives for each pair, assembled in arrays between distinct devices
        (:meth:`device_routes`, where ``classes`` is read), one pair at a time otherwise."""
        rank_of = self.rank_of
        ia = np.fromiter((rank_of.get(a, -1) for a in src), dtype=np.int64, count=len(src))
        ib = np.fromiter((rank_of.get(b, -1) for b in dst), dtype=np.int64, count=len(dst))
        if len(ia) and (ia >= 0).all() and (ib >= 0).all():
            return self.device_routes(ia, ib, classes)
        return self._routes_one_by_one(src, dst)

    @property
    def route_table(self) -> RouteTable:
        """The routes' segments and link classes (built once per cluster)."""
        return self.memo("route_table", lambda: RouteTable(self))

    def device_routes(self, ia, ib, classes: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`routes` between device *ranks* ``ia[k] -> ib[k]``: cut into cached segments
        and gathered in arrays (:class:`~clustersim.network.route_table.RouteTable`) where the
        fabric allows, else one by one. ``classes``: through the table's link classes
        (indices past the links, see ``RouteTable.class_capacity``) where it has them."""
        ia = np.asarray(ia, dtype=np.int64)
        ib = np.asarray(ib, dtype=np.int64)
        found = None
        if len(ia):
            found = self.route_table.device_routes(ia, ib, classes)
        if found is not None:
            return found
        if classes and self.route_table.ok and self.route_table.class_members:
            raise RuntimeError("these routes cannot go through link classes (the fabric is "
                               "not regular after all); use simulation.network: exact")
        devices = self.devices
        return self._routes_one_by_one([devices[i] for i in ia.tolist()],
                                       [devices[i] for i in ib.tolist()])

    def _routes_one_by_one(self, src, dst):
        ptr, links, weights, latency = [0], [], [], []
        for a, b in zip(src, dst):
            lk, w, lat = self.route(a, b)
            links.append(lk)
            weights.append(w)
            latency.append(lat)
            ptr.append(ptr[-1] + len(lk))
        return (np.array(ptr, np.int64),
                np.concatenate(links).astype(np.int64) if links else np.zeros(0, np.int64),
                np.concatenate(weights) if weights else np.zeros(0),
                np.array(latency, dtype=np.float64))

    def _edge_links(self, pairs) -> tuple[np.ndarray, np.ndarray, float]:
        """Weighted edges -> (links, weights, latency); edges of one bundle become one link."""
        index = self.links.edge_index
        links = np.fromiter((index[e] for e, _ in pairs), dtype=np.int64, count=len(pairs))
        weights = np.fromiter((w for _, w in pairs), dtype=np.float64, count=len(pairs))
        latency = float(np.dot(weights, self.links.latency_s[links])) if len(pairs) else 0.0
        if len(links) > 1 and len(set(links.tolist())) < len(links):  # (a set: short arrays)
            links, inverse = np.unique(links, return_inverse=True)
            weights = np.bincount(inverse, weights=weights)
        return links, weights, latency

    def _path_links(self, path: tuple):
        found = self._segments.get(path)
        if found is None:
            found = self._edge_links(tuple(((u, v), 1.0) for u, v in zip(path, path[1:])))
            self._segments[path] = found
        return found

    def _middle_links(self, fabric, a, b):
        """The fabric's route between two entries; on a fat-tree cached per leaf pair."""
        if isinstance(fabric, FatTreeFabric):
            la, lb = fabric.leaf_of[a], fabric.leaf_of[b]
            if la == lb:
                return self._path_links((a, la, b))
            key = (fabric.id, la, lb)
            inner = self._segments.get(key)
            if inner is None:
                pairs = [(e, w) for e, w in self.router.fabric_edges(fabric, a, b)
                         if e != (a, la) and e != (lb, b)]
                inner = self._edge_links(pairs)
                self._segments[key] = inner
            ends = self._segments.get((fabric.id, a, b))
            if ends is None:
                parts = (self._path_links((a, la)), inner, self._path_links((lb, b)))
                ends = (np.concatenate([x[0] for x in parts]),
                        np.concatenate([x[1] for x in parts]), sum(x[2] for x in parts))
                self._segments[(fabric.id, a, b)] = ends
            return ends
        key = (fabric.id, a, b)
        found = self._segments.get(key)
        if found is None:
            found = self._edge_links(self.router.fabric_edges(fabric, a, b))
            self._segments[key] = found
        return found

    def memory_node(self, device: Any) -> Any:
        return self.graph.nodes[device]["memory"]

    def memory_bw_Bps(self, device: Any) -> float:
        """Bandwidth of the device's own memory edges (all stacks, one direction shared)."""
        return self.graph.edges[device, self.memory_node(device)]["bw_Bps"]

    def memory_capacity_B(self, device: Any) -> float:
        return self.graph.nodes[self.memory_node(device)]["capacity_B"]

    def offload_memory(self, device: Any, where: str) -> tuple[Any, float] | None:
        """``(memory node, its capacity)`` a device offloads to: ``host`` DRAM of its node, or
        one expander of its ``cxl`` memory pool (spread round-robin by rank); None if the
        topology has none."""
        G = self.graph
        level = {"host": "host", "cxl": "cxl"}[where]
        for att in G.nodes[device]["attach"]:
            if att.level != level:
                continue
            fabric = self.router.fabrics[att.fabric]
            targets = self._offload_targets.get(fabric.id)
            if targets is None:
                kind = "memory" if where == "host" else "cxl_memory"
                targets = sorted(n for n in G.predecessors(fabric.planes[0])
                                 if G.nodes[n]["kind"] == kind)
                self._offload_targets[fabric.id] = targets
            if targets:
                node = targets[self.rank_of[device] % len(targets)]
                return node, G.nodes[node]["capacity_B"]
        return None


# Keys of the ``network`` section: what the fabric offers beyond its graph, read by the
# collectives (``network.sharp``: the InfiniBand switches run SHARP aggregation for this job;
# off unless said, as on most clusters, where it needs the SHARP daemon and NCCL's CollNet
# plug-in).
NETWORK_KEYS = {"network.sharp": False}


@functools.lru_cache(maxsize=32)
def _cached_cluster(topology: str, devices: int | None, overrides_json: str) -> Cluster:
    overrides = json.loads(overrides_json)
    network = {k.split(".", 1)[1]: _flag(k, overrides.pop(k, default))
               for k, default in NETWORK_KEYS.items()}
    G, params = build_graph(topology, devices, overrides)
    return Cluster.from_graph(G, params={**params.model_dump(), "network": network})


def _flag(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise InputError(f"{key}: expected true or false, got {value!r}")


def build_cluster(topology: str, devices: int | None = None,
                  overrides: dict[str, Any] | None = None) -> Cluster:
    """A ready-to-simulate Cluster of a topology preset (or file) sized to ``devices``, with
    dotted ``overrides`` of its parameters (and of :data:`NETWORK_KEYS`, e.g.
    ``network.sharp: true``); cached by (topology, devices, overrides) so a sweep builds each
    distinct cluster once per process."""
    key = json.dumps(overrides or {}, sort_keys=True, default=str)
    return _cached_cluster(topology, devices, key)
