"""NCCL's double binary tree all-reduce (Sanders, Speck & Träff 2009; NCCL 2.4+).

Two binary trees each carry half of the data; each rank is an inner node of at most one of
them, so together they use every rank's send and receive bandwidth. Tree 1 is the in-order
binary tree over ranks 0..n-1 (a rank's parent clears its lowest set bit and sets the next
one); tree 2 mirrors it (``n-1-r``) when n is even and shifts it by one when n is odd, as in
NCCL's ``ncclGetDtree``. Reduction up the trees and broadcast down them are pipelined: one
phase whose transfers are every tree edge in both directions (``S/2`` each) over
``2 * depth`` steps. On a uniform switch each rank sends ``2S`` in all, so the time is
``2 depth alpha + 2 S / B``.

Across nodes (two-level groups) the trees join nodes, as NCCL does, on one channel per local
rank: channel k's two trees enter and leave every node at local rank k (so channels use
different NICs) and run down a chain of the node's ranks starting there; each of the 2L trees
carries ``S/(2L)``.

>>> btree_parents(8)
[-1, 2, 4, 2, 0, 6, 4, 6]
>>> tree_depth(btree_parents(8))
3
"""

from __future__ import annotations

from clustersim.collectives.phase import Phase, make_phase
from clustersim.errors import InputError

__all__ = ["btree_parents", "dtree_parents", "tree_depth", "expand_tree"]


def btree_parents(n: int) -> list[int]:
    """Parent of each rank in NCCL's in-order binary tree (root 0 has parent -1)."""
    parents = [-1] * n
    for r in range(1, n):
        low = r & -r
        up = (r ^ low) | (low << 1)
        parents[r] = up if up < n else r ^ low
    return parents


def dtree_parents(n: int) -> tuple[list[int], list[int]]:
    """The two trees of the double binary tree over ``n`` ranks."""
    t1 = btree_parents(n)
    if n % 2 == 0:
        perm = [n - 1 - r for r in range(n)]
    else:
        perm = [(r + 1) % n for r in range(n)]
    t2 = [-1] * n
    for r in range(n):
        if t1[r] >= 0:
            t2[perm[r]] = perm[t1[r]]
    return t1, t2


def tree_depth(parents: list[int]) -> int:
    """Edges on the longest path from a rank to the root."""
    best = 0
    for r in range(len(parents)):
        d, x = 0, r
        while parents[x] >= 0:
            x, d = parents[x], d + 1
        best = max(best, d)
    return best


def _group_trees(info) -> list[list[int]]:
    """Parent arrays over group positions for the two trees."""
    p = info.p
    if info.flat or not info.uniform:
        return [list(t) for t in dtree_parents(p)]
    L, trees = info.local_size, []
    for g, node_parents in ((g, t) for g in range(L) for t in dtree_parents(len(info.nodes))):
        heads = [node[g] for node in info.nodes]
        parents = [-1] * p
        for k, node in enumerate(info.nodes):
            chain = [node[(g + j) % L] for j in range(L)]
            for j in range(1, L):
                parents[chain[j]] = chain[j - 1]
            if node_parents[k] >= 0:
                parents[heads[k]] = heads[node_parents[k]]
        trees.append(parents)
    return trees


def expand_tree(cluster, info, op: str, size_bytes: float, root: int = 0, matrix=None
                ) -> list[Phase]:
    if op != "all_reduce":
        raise InputError(f"tree (NCCL's double binary tree) is defined for all_reduce only, "
                         f"not {op}")
    p = info.p
    if p == 1:
        return []
    trees = _group_trees(info)
    half = size_bytes / len(trees)
    pairs, children = [], [0] * p
    for parents in trees:
        for r, up in enumerate(parents):
            if up >= 0:
                pairs += [(r, up, half), (up, r, half)]
                children[up] += 1
    steps = 2 * max(tree_depth(t) for t in trees)
    return [make_phase(pairs, steps, max(children) * half, op)]
