"""PXN (PCI x NVLink, NCCL 2.12+): a rank's message to a peer on another node and another rail
first crosses its own node's scale-up fabric to the local rank on the destination's rail,
which sends it over that rail's NIC. On a rail-optimized fabric the bytes between nodes then
stay on one rail (leaf switches only, never the spine), and each rank's NIC carries its node's
traffic to the peers of its own rail (NVIDIA, "Doubling all2all Performance with NVIDIA
Collective Communication Library 2.12", 2022; NCCL's ``NCCL_PXN_DISABLE``, on by default).

One phase, as NCCL pipelines the two legs through the proxy: for every pair on different
nodes, ``src -> proxy`` over the scale-up links and ``proxy -> dst`` over the rail, the proxy
being the rank of the source's node at the destination's local index (same-rail pairs and
pairs inside a node go direct). It pays two per-step latencies, one per leg.

>>> from clustersim.network import build_cluster
>>> from clustersim.collectives.group_structure import group_info
>>> c = build_cluster("dgx-h100", 16)
>>> [ph] = expand_pxn(c, group_info(c, c.devices), "all_to_all", 1600.0)
>>> float(ph.bytes.sum()) > 15 * 100.0, ph.steps      # forwarded bytes cross two links
(True, 2)
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from clustersim.collectives.phase import Phase, make_phase
from clustersim.errors import InputError

__all__ = ["expand_pxn"]


def expand_pxn(cluster, info, op: str, size_bytes: float, root: int = 0, matrix=None
               ) -> list[Phase]:
    """The PXN all_to_all of ``size_bytes`` (each rank's send buffer) on a two-level group
    whose nodes list the same local ranks in the same order (the index in a node is the
    rail)."""
    if op != "all_to_all":
        raise InputError(f"pxn routes all_to_all only, not {op}")
    if info.flat or info.local_size < 2 or not info.uniform:
        raise InputError("pxn needs a group over several nodes with the same number (> 1) "
                         "of local ranks in each")
    p = info.p
    if p == 1:
        return []
    node_of, index_of = {}, {}
    for n, members in enumerate(info.nodes):
        for k, pos in enumerate(members):
            node_of[pos], index_of[pos] = n, k
    sizes = np.full((p, p), size_bytes / p) if matrix is None else np.asarray(matrix)
    flows: dict = defaultdict(float)
    for i in range(p):
        for j in range(p):
            if i == j:
                continue
            proxy = info.nodes[node_of[i]][index_of[j]]
            if node_of[i] == node_of[j] or proxy == i:
                flows[(i, j)] += sizes[i, j]
            else:
                flows[(i, proxy)] += sizes[i, j]
                flows[(proxy, j)] += sizes[i, j]
    return [make_phase([(s, d, b) for (s, d), b in flows.items()], 2, 0.0, op)]
