"""``builder: graph``: a topology wired by hand -- nodes and links listed in the YAML, or a
networkx graph read from node-link JSON or GraphML (``file:``), or handed over from Python
(:func:`graph_topology`). The result is the same kind of graph the builders make: typed nodes,
typed directed links, each accelerator's own memory, and the fabrics routing reads
(:mod:`~clustersim.topology.graph_fabrics`).

Nodes: ``id``, ``kind`` (accelerator, die, switch, nic, host, memory, cxl_memory,
optical_switch), ``device`` (a device preset, for accelerators and dies), ``model`` (a switch
preset, for switches: radix, latency, power, in-network reduction), ``capacity`` and
``technology`` (memory), ``power`` (host), ``coords`` (a position on a torus or die mesh),
``latency`` (a switch's port-to-port latency, overriding its model's).
Links: ``between: [a, b]``, ``technology`` (the link
catalog), ``count`` parallel links, and per-link ``bandwidth`` / ``latency`` /
``energy_per_bit`` overrides. Every problem (an unknown node, technology, device or switch, a
graph in pieces) is reported at its ``file:line`` with what to do.

>>> p = GraphParams.model_validate({"nodes": [
...     {"id": "g0", "kind": "accelerator", "device": "h100-sxm-80gb"},
...     {"id": "g1", "kind": "accelerator", "device": "h100-sxm-80gb"},
...     {"id": "sw", "kind": "switch", "model": "nvswitch3"}],
...     "links": [{"between": ["g0", "sw"], "technology": "nvlink4", "count": 18},
...               {"between": ["g1", "sw"], "technology": "nvlink4", "count": 18}]})
>>> G = build_graph_topology(p, devices=2)
>>> G.graph["devices"], G.edges["g0", "sw"]["bw_Bps"] / 1e9
(['g0', 'g1'], 450.0)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import networkx as nx
from pydantic import Field, field_validator

from clustersim.config.quantities import (Bandwidth, Count, EnergyPerBit, NonNegativePower,
                                          NonNegativeTime, Size)
from clustersim.config.validation import StrictModel, validate
from clustersim.errors import InputError, InputErrors, unknown_name
from clustersim.hardware.catalog import device_presets, get_switch, link_presets, switch_presets
from clustersim.topology.gpu_cluster import resolve_device
from clustersim.topology.graph import (COMPUTE_KINDS, NODE_KINDS, add_link, add_node,
                                       link_tech, new_graph)
from clustersim.topology.graph_fabrics import infer_fabrics
from clustersim.topology.memory_tiers import add_device_memory

__all__ = ["GraphNode", "GraphLink", "GraphParams", "build_graph_topology", "graph_topology",
           "check_graph", "graph_to_params", "graph_as_yaml_params"]

Where = Callable[[tuple], tuple]  # YAML location -> (file, line, col)


class GraphNode(StrictModel):
    id: str
    kind: Literal[NODE_KINDS]  # type: ignore[valid-type]
    device: str | None = Field(None, description="device preset (accelerator, die)")
    model: str | None = Field(None, description="switch preset (switch, optical_switch)")
    capacity: Size | None = Field(None, description="memory / cxl_memory capacity")
    technology: str | None = Field(None, description="memory technology, for the label")
    power: NonNegativePower = Field(0.0, description="host CPU and DRAM power")
    coords: list[int] | None = Field(None, description="position on a torus or die mesh")
    latency: NonNegativeTime | None = Field(None, description="switch port-to-port override")
    label: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value):
        return str(value) if isinstance(value, int) else value


class GraphLink(StrictModel):
    between: list[str] = Field(min_length=2, max_length=2, description="the two node ids")
    technology: str = Field(description="a link technology (`clustersim presets`)")
    count: Count = Field(1, description="parallel links")
    bandwidth: Bandwidth | None = Field(None, description="per-link override, per direction")
    latency: NonNegativeTime | None = Field(None, description="per-link latency override")
    energy_per_bit: EnergyPerBit | None = None

    @field_validator("between", mode="before")
    @classmethod
    def _ids_as_text(cls, value):
        return [str(v) if isinstance(v, int) else v for v in value] \
            if isinstance(value, list) else value


class GraphParams(StrictModel):
    file: str | None = Field(None, description="node-link JSON or GraphML, beside the YAML")
    nodes: list[GraphNode] = Field(default_factory=list)
    links: list[GraphLink] = Field(default_factory=list)
    device_overrides: dict[str, Any] = Field(default_factory=dict)

    @property
    def device(self) -> str:
        """The device preset of the accelerators (every accelerator runs the same one); read
        from ``file`` when the nodes are there."""
        found = [n.device for n in self.nodes if n.kind in COMPUTE_KINDS and n.device]
        if not found and self.file:
            return graph_to_params(_read_file(self.file), file=self.file).device
        return found[0] if found else ""


def _no_where(loc: tuple) -> tuple:
    return (None, None, None)


def _check_nodes(p: GraphParams, where: Where) -> list[InputError]:
    errors, seen = [], {}
    devices, switches = device_presets(), switch_presets()
    for i, n in enumerate(p.nodes):
        loc = ("nodes", i)
        if n.id in seen:
            errors.append(InputError(f"node {n.id!r} is listed twice (first at line "
                                     f"{where(('nodes', seen[n.id]))[1]}); ids must be "
                                     f"unique", *where(loc + ("id",))))
        seen.setdefault(n.id, i)
        if n.kind in COMPUTE_KINDS and n.device not in devices:
            msg = unknown_name("device preset", n.device, devices).message if n.device else \
                f"node {n.id!r} is an {n.kind} and needs `device:` (a device preset)"
            errors.append(InputError(f"nodes[{i}].device: {msg}", *where(loc + ("device",))))
        if n.kind in ("switch", "optical_switch") and n.model not in switches:
            msg = unknown_name("switch preset", n.model, switches).message if n.model else \
                f"node {n.id!r} is a {n.kind} and needs `model:` (a switch preset)"
            errors.append(InputError(f"nodes[{i}].model: {msg}", *where(loc + ("model",))))
    kinds = {n.device for n in p.nodes if n.kind in COMPUTE_KINDS and n.device in devices}
    if len(kinds) > 1:
        errors.append(InputError(f"accelerators run {len(kinds)} device presets "
                                 f"({', '.join(sorted(kinds))}); a cluster runs one: give "
                                 f"every accelerator the same `device:`", *where(("nodes",))))
    if not any(n.kind in COMPUTE_KINDS for n in p.nodes):
        errors.append(InputError("the graph has no accelerator (kind: accelerator or die)",
                                 *where(("nodes",))))
    return errors


def _check_links(p: GraphParams, where: Where) -> list[InputError]:
    errors, ids, links = [], {n.id for n in p.nodes}, link_presets()
    for i, link in enumerate(p.links):
        for j, end in enumerate(link.between):
            if end not in ids:
                errors.append(InputError(
                    f"links[{i}].between: {unknown_name('node', end, ids).message.split(' (')[0]}"
                    f"; list it under `nodes:` or fix the id", *where(("links", i, "between", j))))
        if link.technology not in links:
            msg = unknown_name("link technology", link.technology, links).message
            errors.append(InputError(f"links[{i}].technology: {msg}",
                                     *where(("links", i, "technology"))))
        if link.between[0] == link.between[1]:
            errors.append(InputError(f"links[{i}] joins {link.between[0]!r} to itself",
                                     *where(("links", i, "between"))))
    return errors


def _check_connected(p: GraphParams, where: Where) -> list[InputError]:
    H = nx.Graph()
    H.add_nodes_from(n.id for n in p.nodes)
    H.add_edges_from(tuple(link.between) for link in p.links)
    pieces = sorted(nx.connected_components(H), key=len, reverse=True)
    if len(pieces) <= 1:
        return []
    index = {n.id: i for i, n in enumerate(p.nodes)}
    stray = min(pieces[1], key=index.get)
    return [InputError(f"the graph is in {len(pieces)} pieces: node {stray!r} (and "
                       f"{len(pieces[1]) - 1} more) cannot reach {min(pieces[0], key=index.get)!r};"
                       f" add a link that joins them", *where(("nodes", index[stray], "id")))]


def check_graph(p: GraphParams, where: Where = _no_where) -> None:
    """Raise InputErrors for every unknown reference, and for a graph in pieces."""
    errors = _check_nodes(p, where) + _check_links(p, where)
    if not errors:
        errors = _check_connected(p, where)
    if errors:
        raise InputErrors(errors)


def _read_file(path: str) -> nx.Graph:
    """A networkx graph from node-link JSON (``.json``) or GraphML (anything else)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"no such graph file: {file}; give a node-link JSON or GraphML path "
                         f"(relative to the topology YAML)")
    try:
        if file.suffix == ".json":
            return nx.node_link_graph(json.loads(file.read_text()), edges="links")
        return nx.read_graphml(file)
    except (ValueError, KeyError, json.JSONDecodeError, nx.NetworkXError) as exc:
        raise InputError(f"cannot read graph file {file}: {exc}") from None


def graph_to_params(graph: nx.Graph, file: str | None = None) -> GraphParams:
    """The node and link lists of a networkx graph whose nodes carry ``kind`` (and
    ``device`` / ``model`` ...) and whose edges carry ``technology`` (and ``count`` ...)."""
    nodes = [{"id": str(n), **{k: v for k, v in d.items() if k in GraphNode.model_fields}}
             for n, d in graph.nodes(data=True)]
    seen, links = set(), []
    for u, v, d in graph.edges(data=True):
        if (v, u) in seen:  # a directed graph lists each physical link both ways
            continue
        seen.add((u, v))
        links.append({"between": [str(u), str(v)],
                      **{k: v for k, v in d.items() if k in GraphLink.model_fields}})
    try:
        return validate(GraphParams, {"nodes": nodes, "links": links}, file=file)
    except InputErrors as exc:
        raise InputErrors(e.located(file) for e in exc.errors) from None


def _add_nodes(G: nx.DiGraph, p: GraphParams, device) -> None:
    for n in p.nodes:
        attrs: dict[str, Any] = {"label": n.label} if n.label else {}
        if n.coords is not None:
            attrs["coords"] = tuple(n.coords)
        if n.kind in COMPUTE_KINDS:
            attrs["device"] = device.name
        elif n.kind in ("switch", "optical_switch"):
            attrs.update(model=n.model, tier="graph")
            if n.latency is not None:
                attrs["latency_s"] = n.latency
            attrs.setdefault("label", get_switch(n.model).name)
        elif n.kind in ("memory", "cxl_memory"):
            attrs.update(capacity_B=n.capacity or 0.0, technology=n.technology)
        elif n.kind == "host":
            attrs["power_W"] = n.power
        add_node(G, n.id, n.kind, **attrs)
        if n.kind in COMPUTE_KINDS:
            add_device_memory(G, n.id, device)


def _switch_latency(G: nx.DiGraph, node: Any) -> float:
    """What entering ``node`` adds to a link's latency: its ``latency`` override, else its
    switch model's port-to-port latency (0 for anything but a switch)."""
    data = G.nodes[node]
    if data["kind"] not in ("switch", "optical_switch"):
        return 0.0
    return data.get("latency_s", get_switch(data["model"]).latency_s)


def _applied_switch_latency(G: nx.DiGraph, node: Any) -> float:
    """The switch latency a built graph charges on the way into ``node``: the difference
    between the two directions of a link to a non-switch neighbour."""
    if G.nodes[node]["kind"] not in ("switch", "optical_switch"):
        return 0.0
    for other in G.successors(node):
        if G.nodes[other]["kind"] not in ("switch", "optical_switch"):
            return G.edges[other, node]["latency_s"] - G.edges[node, other]["latency_s"]
    return get_switch(G.nodes[node].get("model", "ocs")).latency_s


def build_graph_topology(p: GraphParams, devices: int | None = None,
                         name: str = "graph") -> nx.DiGraph:
    """The topology graph of ``p`` (its ``file`` read first when given); ``devices`` must be
    the number of accelerators when given (a drawn graph has the size it is drawn at)."""
    source = p.file
    if source:
        drawn = graph_to_params(_read_file(source), file=source)
        p = p.model_copy(update={"nodes": drawn.nodes + p.nodes, "links": drawn.links + p.links,
                                 "file": None})
    check_graph(p, (lambda loc: (source, None, None)) if source else _no_where)
    count = sum(n.kind in COMPUTE_KINDS for n in p.nodes)
    if devices is not None and devices != count:
        raise ValueError(f"the graph has {count} accelerators, not {devices}; a graph "
                         f"topology has the size it is drawn at (drop --devices / "
                         f"cluster.devices, or set it to {count})")
    device = resolve_device(p.device, p.device_overrides)
    G = new_graph(name, device=device)
    G.graph["device_specs"] = {device.name: device}
    _add_nodes(G, p, device)
    for link in p.links:
        u, v = link.between
        for a, b in ((u, v), (v, u)):
            add_link(G, a, b, link.technology, count=link.count, bw_Bps=link.bandwidth,
                     latency_s=link.latency, energy_J_per_bit=link.energy_per_bit,
                     switch_latency_s=_switch_latency(G, b), both=False)
    infer_fabrics(G)
    return G


def graph_topology(graph: nx.Graph, name: str = "graph") -> nx.DiGraph:
    """A topology graph from a networkx graph drawn in Python (see :func:`graph_to_params`
    for the attributes it reads).

    >>> g = nx.Graph()
    >>> g.add_node("a", kind="accelerator", device="mi300x")
    >>> g.add_node("b", kind="accelerator", device="mi300x")
    >>> g.add_edge("a", "b", technology="infinity-fabric", count=7)
    >>> G = graph_topology(g)
    >>> type(G.graph["fabrics"]["scaleup:0"]).__name__, G.edges["a", "b"]["count"]
    ('DirectFabric', 7)
    """
    return build_graph_topology(graph_to_params(graph), name=name)


def _node_entry(G: nx.DiGraph, node: Any) -> dict[str, Any]:
    d = G.nodes[node]
    entry: dict[str, Any] = {"id": str(node), "kind": d["kind"]}
    if d.get("coords") is not None:
        entry["coords"] = list(d["coords"])
    if d["kind"] in COMPUTE_KINDS:
        entry["device"] = d["device"]
    elif d["kind"] in ("switch", "optical_switch"):
        entry["model"] = d.get("model", "ocs")
        applied = _applied_switch_latency(G, node)
        if abs(applied - get_switch(entry["model"]).latency_s) > 1e-15:
            entry["latency"] = applied
    elif d["kind"] in ("memory", "cxl_memory"):
        entry.update(capacity=d["capacity_B"], technology=d.get("technology"))
    elif d["kind"] == "host" and d.get("power_W"):
        entry["power"] = d["power_W"]
    return {k: v for k, v in entry.items() if v is not None}


def _link_entry(G: nx.DiGraph, u: Any, v: Any) -> dict[str, Any]:
    """One physical link, with overrides only where the edge differs from its catalog entry
    (the latency without the switch it enters)."""
    d = G.edges[u, v]
    spec = link_tech(d["tech"])
    entry: dict[str, Any] = {"between": [str(u), str(v)], "technology": d["tech"]}
    if d["count"] != 1:
        entry["count"] = d["count"]
    per_link = d["bw_Bps"] / d["count"]
    if per_link != spec.bw_Bps:
        entry["bandwidth"] = per_link
    latency = d["latency_s"] - _applied_switch_latency(G, v)
    if abs(latency - spec.latency_s) > 1e-15:
        entry["latency"] = latency
    if d["energy_J_per_bit"] != spec.energy_J_per_bit:
        entry["energy_per_bit"] = d["energy_J_per_bit"]
    return entry


def graph_as_yaml_params(G: nx.DiGraph) -> dict[str, Any]:
    """``params:`` of a ``builder: graph`` file that describes ``G`` (a built preset, say)
    node for node and link for link; each accelerator's own memory is left out, since the
    graph builder adds it from the device preset. A starting point for a hand-edited graph.

    >>> from clustersim.topology import build_graph
    >>> params = graph_as_yaml_params(build_graph("dgx-h100", 8)[0])
    >>> params["links"][0]
    {'between': ['n0/g0', 'd0/sw0'], 'technology': 'nvlink4', 'count': 5}
    """
    own_memory = {G.nodes[n]["memory"] for n in G.graph["devices"]}
    nodes = [_node_entry(G, n) for n in G.nodes if n not in own_memory]
    links, seen = [], set()
    for u, v in G.edges():
        if (v, u) in seen or u in own_memory or v in own_memory:
            continue
        seen.add((u, v))
        links.append(_link_entry(G, u, v))
    return {"nodes": nodes, "links": links}
