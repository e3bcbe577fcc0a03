"""Topologies as networkx graphs: builders, fabric descriptors, presets and drawing.

The graph says what is wired to what; :mod:`clustersim.network` makes it a routable Cluster.

>>> from clustersim.topology import build_graph
>>> G, params = build_graph("dgx-h100", devices=8)
>>> len(G.graph["devices"]), params.scale_up.technology
(8, 'nvlink4')
"""

from clustersim.topology.dragonfly import DragonflyParams, add_dragonfly
from clustersim.topology.fattree import add_fat_tree
from clustersim.topology.graph import NODE_KINDS, add_link, add_node, new_graph
from clustersim.topology.graph_yaml import graph_as_yaml_params, graph_topology
from clustersim.topology.multiplane import add_multiplane_fat_tree
from clustersim.topology.presets import (build_graph, load_topology, resolve_params,
                                         topology_presets)
from clustersim.topology.rail_only import add_rail_only
from clustersim.topology.scaleup import add_direct_mesh, add_switch_domain
from clustersim.topology.torus import add_torus, slice_shape, torus

__all__ = ["NODE_KINDS", "add_link", "add_node", "new_graph", "add_fat_tree",
           "add_direct_mesh", "add_switch_domain", "add_torus", "torus", "slice_shape",
           "build_graph", "load_topology", "resolve_params", "topology_presets",
           "DragonflyParams", "add_dragonfly", "add_rail_only", "add_multiplane_fat_tree",
           "graph_topology", "graph_as_yaml_params"]
