"""Pipelined rings (NCCL's ring algorithm), multi-channel and topology-aware.

With ``c`` channels the data is split into ``c`` rings of ``S/c`` each, run concurrently, in
orders chosen so that they load different links:

- inside one switched fabric every order loads each rank's port the same: one channel;
- on a torus, bidirectional rings: the group order and its reverse (2 channels);
- across nodes (two-level groups), one channel per local rank, kept on rails as NCCL keeps
  its rings (local rank i's NIC talks to local rank i's NIC on the next node, so a
  rail-optimised fabric carries every inter-node hop inside one rail): channel ``k`` enters
  even nodes at local rank ``k`` and walks up to ``k-1``, and odd nodes at ``k-1`` walking
  down to ``k``, so each hop between nodes joins equal local ranks (with an odd number of
  nodes the one hop that closes the ring changes rail). The channels start on different
  local ranks, so together they use every NIC of a node in both directions, which is how
  NCCL reaches a node's aggregate NIC bandwidth.

Per channel, all_reduce sends ``2(p-1)/p * S/c`` from each rank to its successor in
``2(p-1)`` steps; reduce_scatter and all_gather ``(p-1)/p * S/c`` in ``p-1`` steps;
broadcast/reduce pipeline ``S/c`` along the ring from/to the root in ``p-1`` steps.

>>> from clustersim.network import build_cluster
>>> from clustersim.collectives.group_structure import group_info
>>> c = build_cluster("dgx-h100", 16)
>>> orders = ring_orders(group_info(c, c.devices))
>>> len(orders), orders[1][:8], orders[1][7:10]
(8, [1, 2, 3, 4, 5, 6, 7, 0], [0, 8, 15])
"""

from __future__ import annotations

from clustersim.collectives.phase import Phase, make_phase
from clustersim.errors import InputError

__all__ = ["ring_orders", "expand_ring", "ring_phase"]

RING_OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce")


def ring_orders(info) -> list[list[int]]:
    """One position order per channel (see the module docstring)."""
    p = info.p
    if info.flat:
        order = list(range(p))
        return [order, order[::-1]] if info.torus is not None and p > 2 else [order]
    if not info.uniform:
        # uneven nodes: one channel in group order, node by node
        return [[i for node in info.nodes for i in node]]
    L = info.local_size

    def visit(i, node, k):  # even nodes walk up from k, odd nodes down from k-1
        return [node[(k + j) % L] if i % 2 == 0 else node[(k - 1 - j) % L] for j in range(L)]

    return [[r for i, node in enumerate(info.nodes) for r in visit(i, node, k)]
            for k in range(L)]


def ring_phase(p: int, op: str, size_bytes: float, orders: list[list[int]]) -> Phase:
    """The single pipelined phase of ``op`` by rings of ``p`` ranks over ``orders`` (one per
    channel; for broadcast/reduce each order starts at the root)."""
    c = len(orders)
    pairs = []
    if op in ("all_reduce", "reduce_scatter", "all_gather"):
        per_hop = (2.0 if op == "all_reduce" else 1.0) * (p - 1) / p * size_bytes / c
        steps = 2 * (p - 1) if op == "all_reduce" else p - 1
        for order in orders:
            pairs += [(order[i], order[(i + 1) % p], per_hop) for i in range(p)]
        reduce = (p - 1) / p * size_bytes if op != "all_gather" else 0.0
        return make_phase(pairs, steps, reduce, op)
    # broadcast / reduce: a pipelined chain through the ring starting at the root
    for chain in orders:  # each order starts at the root
        pairs += [(chain[i], chain[i + 1], size_bytes / c) for i in range(p - 1)]
    if op == "reduce":
        pairs = [(b, a, n) for a, b, n in pairs]
    return make_phase(pairs, p - 1, size_bytes if op == "reduce" else 0.0, op)


def expand_ring(cluster, info, op: str, size_bytes: float, root: int = 0, matrix=None
                ) -> list[Phase]:
    if op not in RING_OPS:
        raise InputError(f"ring is defined for {', '.join(RING_OPS)}, not {op}")
    if info.p == 1:
        return []
    if op in ("broadcast", "reduce"):
        orders = [o[o.index(root):] + o[:o.index(root)] for o in ring_orders(info)]
        return [ring_phase(info.p, op, size_bytes, orders)]
    return [ring_phase(info.p, op, size_bytes, ring_orders(info))]
