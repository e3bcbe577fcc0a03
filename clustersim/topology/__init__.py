"""Topologies as networkx graphs: builders, presets, the Cluster they become, and metrics.

>>> from clustersim.topology import build_cluster
>>> len(build_cluster("dgx-h100", devices=8).devices)
8
"""

from clustersim.topology.cluster import Cluster, LinkTable
from clustersim.topology.fattree import add_fat_tree
from clustersim.topology.graph import NODE_KINDS, add_link, add_node, new_graph
from clustersim.topology.presets import (build_cluster, build_graph, load_topology,
                                         topology_presets)
from clustersim.topology.scaleup import add_direct_mesh, add_switch_domain
from clustersim.topology.torus import add_torus, slice_shape, torus

__all__ = ["Cluster", "LinkTable", "NODE_KINDS", "add_link", "add_node", "new_graph",
           "add_fat_tree", "add_direct_mesh", "add_switch_domain", "add_torus", "torus",
           "slice_shape", "build_cluster", "build_graph", "load_topology", "topology_presets"]
