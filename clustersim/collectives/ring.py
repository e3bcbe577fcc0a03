"""Pipelined rings (NCCL's ring algorithm), multi-channel and topology-aware.

With ``c`` channels the data is split into ``c`` rings of ``S/c`` each, run concurrently, in
orders chosen so that they load different links:

- inside one switched fabric every order loads each rank's port the same: one channel;
- on a torus, bidirectional rings: the group order and its reverse (2 channels);
- on a full mesh (MI300X: 7 Infinity Fabric links per GPU), ``p-1`` rings that share no
  directed link (a Hamiltonian decomposition of the complete digraph, :func:`mesh_rings`;
  it exists for every p but 4 and 6, where the rings of strides coprime to p are used), so
  every link carries one ring, as RCCL's multi-ring does over xGMI;
- across nodes (two-level groups), one channel per local rank, kept on rails as NCCL keeps
  its rings (local rank i's NIC talks to local rank i's NIC on the next node, so a
  rail-optimised fabric carries every inter-node hop inside one rail): channel ``k`` enters
  even nodes at local rank ``k`` and walks up to ``k-1``, and odd nodes at ``k-1`` walking
  down to ``k``, so each hop between nodes joins equal local ranks (with an odd number of
  nodes the one hop that closes the ring changes rail). The channels start on different
  local ranks, so together they use every NIC of a node in both directions, which is how
  NCCL reaches a node's aggregate NIC bandwidth. On full-mesh nodes (MI300X) the walk inside
  a node is channel ``k``'s own Hamiltonian path from local rank ``k`` (:func:`mesh_paths`:
  the ``L`` paths share no directed link, and end on distinct ranks, so the NICs stay one
  channel each way), reversed on odd nodes; a walk by ``+1`` would send every channel over
  the same ``i -> i+1`` links.

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

import functools

from clustersim.collectives.phase import Phase, make_phase
from clustersim.errors import InputError
from clustersim.topology.graph import DirectFabric

__all__ = ["ring_orders", "expand_ring", "ring_phase", "mesh_rings", "mesh_paths"]

_SEARCH_BUDGET = 200_000  # ring extensions tried before falling back to coprime strides

RING_OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce")


def _link_disjoint(p: int, closed: bool) -> tuple[tuple[int, ...], ...] | None:
    """A depth-first search, within :data:`_SEARCH_BUDGET` extensions, for orders of ``p``
    fully connected ranks that share no directed link: ``p - 1`` Hamiltonian cycles from rank
    0 (``closed``), or ``p`` Hamiltonian paths, the k-th from rank k, ending on distinct
    ranks. None when the budget runs out (or no such set exists: cycles for p = 4, 6)."""
    used: set = set()
    ends: set = set()
    found: list = []
    budget = [_SEARCH_BUDGET]

    def extensions(path, seen):
        if len(path) == p:
            if (path[-1], path[0]) not in used if closed else path[-1] not in ends:
                yield list(path)
            return
        for v in range(p):
            budget[0] -= 1
            if budget[0] < 0:
                return
            if v not in seen and (path[-1], v) not in used:
                seen.add(v)
                path.append(v)
                yield from extensions(path, seen)
                path.pop()
                seen.discard(v)

    def solve(k):
        if k == (p - 1 if closed else p):
            return True
        first = 0 if closed else k
        for order in extensions([first], {first}):
            edges = [(order[i], order[(i + 1) % p]) for i in range(p if closed else p - 1)]
            used.update(edges)
            ends.add(order[-1])
            found.append(tuple(order))
            if solve(k + 1):
                return True
            used.difference_update(edges)
            ends.discard(order[-1])
            found.pop()
        return False

    return tuple(found) if solve(0) else None


@functools.lru_cache(maxsize=64)
def mesh_rings(p: int) -> tuple[tuple[int, ...], ...]:
    """Rings over ``p`` fully connected ranks that share no directed link: ``p-1`` of them
    when the search finds a Hamiltonian decomposition within its budget, else the rings of
    every stride coprime to ``p``.

    >>> rings = mesh_rings(8)
    >>> len(rings), len({(r[i], r[(i + 1) % 8]) for r in rings for i in range(8)})
    (7, 56)
    """
    found = _link_disjoint(p, closed=True) if p > 2 else None
    if found is not None:
        return found
    strides = [s for s in range(1, p) if _gcd(s, p) == 1]
    return tuple(tuple((i * s) % p for i in range(p)) for s in strides)


@functools.lru_cache(maxsize=64)
def mesh_paths(p: int) -> tuple[tuple[int, ...], ...] | None:
    """``p`` Hamiltonian paths over ``p`` fully connected ranks, the k-th from rank k, ending
    on distinct ranks and sharing no directed link (together every link once), or None.

    >>> paths = mesh_paths(8)
    >>> [q[0] for q in paths], len({(q[i], q[i + 1]) for q in paths for i in range(7)})
    ([0, 1, 2, 3, 4, 5, 6, 7], 56)
    """
    return _link_disjoint(p, closed=False) if p > 2 else None


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def ring_orders(info) -> list[list[int]]:
    """One position order per channel (see the module docstring)."""
    p = info.p
    if info.flat:
        order = list(range(p))
        if isinstance(info.fabric, DirectFabric) and p > 2:
            return [list(r) for r in mesh_rings(p)]
        return [order, order[::-1]] if info.torus is not None and p > 2 else [order]
    if not info.uniform:
        # uneven nodes: one channel in group order, node by node
        return [[i for node in info.nodes for i in node]]
    L = info.local_size
    paths = mesh_paths(L) if isinstance(info.inner, DirectFabric) else None

    def visit(i, node, k):  # even nodes walk up from k, odd nodes down from k-1
        if paths is not None:   # full-mesh nodes: channel k's own links (the reverse on odd)
            path = paths[k] if i % 2 == 0 else paths[k][::-1]
            return [node[j] for j in path]
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
