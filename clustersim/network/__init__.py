"""The network: a topology graph made routable (a Cluster with its links and router), the
flow-level model where concurrent transfers share links max-min fairly, and what a built
topology offers (injection and bisection bandwidth, diameter).

>>> from clustersim.network import build_cluster
>>> len(build_cluster("dgx-h100", devices=8).devices)
8
"""

from clustersim.network.cluster import Cluster, build_cluster
from clustersim.network.links import LinkTable
from clustersim.network.routing import NoRoute, Router

__all__ = ["Cluster", "LinkTable", "Router", "NoRoute", "build_cluster"]
