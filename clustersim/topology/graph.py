"""Graph conventions shared by every topology builder: typed nodes, typed directed links, and
the fabric records that routing reads.

A physical link is two directed edges, one per direction, each with the technology, the number
of parallel links bundled (``count``), the bandwidth of the bundle per direction, the latency of
one traversal (link plus the switch it enters) and the energy per bit.

>>> import networkx as nx
>>> G = new_graph("demo")
>>> add_node(G, "gpu0", "accelerator", device="h100-sxm-80gb")
>>> add_node(G, "sw0", "switch", label="NVSwitch")
>>> add_link(G, "gpu0", "sw0", "nvlink4", count=18)
>>> G.edges["gpu0", "sw0"]["bw_Bps"] == 18 * 25e9
True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from clustersim.hardware.catalog import get_link

__all__ = [
    "NODE_KINDS", "COMPUTE_KINDS", "Attachment", "Fabric", "SwitchFabric", "DirectFabric",
    "TorusFabric", "FatTreeFabric", "GraphFabric", "PlanesFabric", "RailOnlyFabric",
    "DragonflyFabric", "ROUTINGS", "new_graph", "add_node", "add_link", "add_fabric", "attach",
    "link_tech",
]

NODE_KINDS = ("accelerator", "die", "memory", "switch", "nic", "host", "cxl_memory",
              "optical_switch")
COMPUTE_KINDS = ("accelerator", "die")


@dataclass(frozen=True)
class Attachment:
    """How an endpoint joins one fabric: enter at ``entry`` after walking ``up`` (node path
    from the endpoint to the entry, both included; a single node when the endpoint is its own
    entry)."""

    level: str
    fabric: str
    entry: Any
    up: tuple


@dataclass(frozen=True)
class Fabric:
    """A routing domain; subclasses hold the structure their router needs."""

    id: str
    level: str


@dataclass(frozen=True)
class SwitchFabric(Fabric):
    """Endpoints joined through one or more parallel switch planes (NVSwitch, a host, a CXL
    switch). Traffic is striped over the planes in proportion to link capacity."""

    planes: tuple = ()
    in_network_reduction: str | None = None  # "nvls" / "sharp" when the switch reduces


@dataclass(frozen=True)
class DirectFabric(Fabric):
    """Every pair of endpoints has its own direct link (a full mesh, e.g. MI300X xGMI)."""


@dataclass(frozen=True)
class TorusFabric(Fabric):
    """A k-ary n-cube or mesh routed in dimension order.

    ``hops[(node, dim, +1|-1)]`` is the node path of one hop (two nodes, or three when the hop
    passes an optical circuit switch); ``coords[node]`` and ``at[coords]`` index positions.
    """

    dims: tuple = ()
    wrap: tuple = ()
    coords: dict = field(default_factory=dict, compare=False, hash=False)
    at: dict = field(default_factory=dict, compare=False, hash=False)
    hops: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class FatTreeFabric(Fabric):
    """A folded Clos of 1-3 switch levels, routed up/down with ECMP over all shortest paths.

    ``leaf_of[endpoint]``, ``pod_of[leaf]``; ``aggs[pod]`` lists a pod's upper switches (the
    spines of a 2-level tree, where the whole tree is pod 0); ``cores[j]`` lists the core
    switches joined to the j-th agg of every pod (3 levels only).
    """

    levels: int = 2
    leaf_of: dict = field(default_factory=dict, compare=False, hash=False)
    pod_of: dict = field(default_factory=dict, compare=False, hash=False)
    aggs: dict = field(default_factory=dict, compare=False, hash=False)
    cores: dict = field(default_factory=dict, compare=False, hash=False)
    in_network_reduction: str | None = None


@dataclass(frozen=True)
class GraphFabric(DirectFabric):
    """Any other wiring (a hand-written graph, rail-only rails bridged by NVLink, several
    fat-tree planes), routed by ECMP over the shortest paths inside ``members``: at every
    node a flow splits over the next hops towards its destination in proportion to their
    bandwidth (exact on a fat-tree, and per NIC port on multi-plane fabrics).

    A DirectFabric for the metrics: an endpoint injects over its own links into members.
    """

    members: frozenset = field(default=frozenset(), compare=False, hash=False)
    in_network_reduction: str | None = None


@dataclass(frozen=True)
class PlanesFabric(GraphFabric):
    """Independent planes (fat-trees or single switches) over the same endpoints, one port
    of each endpoint in each: routed plane by plane, the flow split by port bandwidth --
    ECMP over the union of the planes, without searching it."""

    planes: tuple = ()


@dataclass(frozen=True)
class RailOnlyFabric(GraphFabric):
    """Rails without a spine, bridged by the nodes' scale-up domains. Entries are the
    devices (gateways): ``rail_of`` and ``nic_of`` them, ``local_of`` their scale-up fabric
    id, ``peers[(scale-up fabric id, rail)]`` the devices of a node on a rail, ``rails[r]``
    the fabric of rail r (over its NICs). Routed as ECMP over ``members`` would be."""

    rails: tuple = ()
    rail_of: dict = field(default_factory=dict, compare=False, hash=False)
    nic_of: dict = field(default_factory=dict, compare=False, hash=False)
    local_of: dict = field(default_factory=dict, compare=False, hash=False)
    peers: dict = field(default_factory=dict, compare=False, hash=False)


ROUTINGS = ("minimal", "valiant", "ugal")


@dataclass(frozen=True)
class DragonflyFabric(FatTreeFabric):
    """A dragonfly (Kim et al., ISCA 2008): groups of switches joined all-to-all inside a
    group, and global links between groups; endpoints hang off one switch each.

    ``leaf_of[endpoint]`` is its switch and ``pod_of[switch]`` its group (the FatTreeFabric
    fields they share: a route between endpoints depends only on their switch pair, which
    the cluster's route cache and the injection metric rely on). ``globals_between[(g, h)]``
    lists the ``(switch of g, switch of h)`` ends of the global links from group g to h;
    ``switches_in[g]`` the switches of group g.
    ``routing``: ``minimal`` (local, global, local: at most 3 switch hops), ``valiant``
    (through an intermediate group, spread evenly over all of them: 2 global hops; inside a
    group through the other switches), ``ugal`` (split between the two in proportion to
    their capacity, see routing).
    """

    groups: int = 1
    routing: str = "minimal"
    globals_between: dict = field(default_factory=dict, compare=False, hash=False)
    switches_in: dict = field(default_factory=dict, compare=False, hash=False)


def new_graph(name: str, **attrs: Any) -> nx.DiGraph:
    """An empty topology graph with the bookkeeping every builder fills in."""
    G = nx.DiGraph(name=name, devices=[], fabrics={}, **attrs)
    return G


def add_node(G: nx.DiGraph, node_id: Any, kind: str, **attrs: Any) -> None:
    """Add a typed node; ``kind`` must be one of NODE_KINDS."""
    if kind not in NODE_KINDS:
        raise ValueError(f"unknown node kind {kind!r}; known: {', '.join(NODE_KINDS)}")
    G.add_node(node_id, kind=kind, attach=[], **attrs)
    if kind in COMPUTE_KINDS:
        G.graph["devices"].append(node_id)


@functools.lru_cache(maxsize=None)
def link_tech(name: str):
    """The catalog entry of a link technology (cached: builders ask once per edge)."""
    return get_link(name)


def add_link(G: nx.DiGraph, u: Any, v: Any, tech: str, count: int = 1,
             bw_Bps: float | None = None, latency_s: float | None = None,
             energy_J_per_bit: float | None = None, switch_latency_s: float = 0.0,
             both: bool = True, bundle: Any = None) -> None:
    """Add ``count`` parallel links of technology ``tech`` between ``u`` and ``v``.

    ``bw_Bps`` overrides the per-link bandwidth of the technology (a user override such as
    ``scale_out.bandwidth``); ``switch_latency_s`` is added to the direction that enters a
    switch, so a route's latency is the sum over its edges.

    ``bundle`` names a set of parallel links that routing always loads evenly (``u``'s links
    to every switch plane, or to every spine under ECMP): all ``u -> *`` edges with the same
    bundle form one link resource, and so do all ``* -> u`` edges. Exact under even spreading,
    and it keeps routes short: ECMP over 400 core paths is two resources, not 800.
    """
    spec = link_tech(tech)
    per_link = spec.bw_Bps if bw_Bps is None else bw_Bps
    if count < 1 or per_link <= 0:
        raise ValueError(f"link {u}-{v}: count and bandwidth must be positive")
    base = dict(tech=tech, count=count, bw_Bps=per_link * count, duplex=spec.duplex,
                energy_J_per_bit=spec.energy_J_per_bit if energy_J_per_bit is None
                else energy_J_per_bit)
    lat = spec.latency_s if latency_s is None else latency_s
    for a, b, side in ((u, v, "out"), (v, u, "in")) if both else ((u, v, "out"),):
        enters_switch = G.nodes[b]["kind"] in ("switch", "optical_switch")
        extra = {"bundle": (side, u, bundle)} if bundle is not None else {}
        G.add_edge(a, b, latency_s=lat + (switch_latency_s if enters_switch else 0.0),
                   **base, **extra)


def add_fabric(G: nx.DiGraph, fabric: Fabric) -> Fabric:
    """Register a fabric so the router can find it by id."""
    if fabric.id in G.graph["fabrics"]:
        raise ValueError(f"fabric {fabric.id!r} registered twice")
    G.graph["fabrics"][fabric.id] = fabric
    return fabric


def attach(G: nx.DiGraph, node: Any, fabric: Fabric, entry: Any = None,
           up: tuple | None = None) -> None:
    """Record that ``node`` reaches ``fabric`` at ``entry`` via the node path ``up``.

    Attachments are kept innermost first: builders attach the closest fabric first.
    """
    entry = node if entry is None else entry
    up = (node,) if up is None else tuple(up)
    if up[0] != node or up[-1] != entry:
        raise ValueError(f"up path of {node!r} must run from it to its entry {entry!r}")
    G.nodes[node]["attach"].append(Attachment(fabric.level, fabric.id, entry, up))
