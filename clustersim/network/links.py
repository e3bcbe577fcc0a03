"""The flat link arrays of a built cluster: one entry per link resource, which the routes index
and the numba kernels read.

>>> from clustersim.topology.torus import torus
>>> links = LinkTable.from_graph(torus((4,), link="ici-v4"))
>>> len(links), links.techs
(8, ('ici-v4',))
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

__all__ = ["LinkTable"]


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
