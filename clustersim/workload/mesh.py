"""The device mesh: how ranks of a parallel plan land on devices, and the groups they form.

Axes, innermost (closest devices) first by default: ``tp, cp, ep, dp, pp``, where ``ep`` is
the inner part of data parallelism (Megatron-Core carves expert parallelism out of dp) and
``dp`` the rest (dp / ep). Rank ``r`` runs on ``cluster.devices[r]``; clusters list devices
nearest-first (x-fastest on a torus, node by node on GPU clusters), so the innermost axis lands
on the closest devices: TP inside an NVLink domain, PP and DP across the fabric. On a TPU torus
this *is* the named-axis device mesh: with ``placement: [tp, dp]`` on a 12x16x16 slice, the
12-way model axis runs along x and the 256-way data axis over y and z (PaLM's layout).

>>> mesh = Mesh({"tp": 2, "cp": 1, "ep": 1, "dp": 2, "pp": 2})
>>> mesh.rank(tp=1, dp=1, pp=0), mesh.group(3, ("tp",)), mesh.group(3, ("dp",))
(3, [2, 3], [1, 3])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import cached_property, lru_cache

__all__ = ["Mesh", "mesh_for_plan", "blocks"]


class Mesh:
    """A named-axis mesh over ``prod(sizes)`` ranks laid out in ``order`` (innermost first)."""

    def __init__(self, sizes: dict[str, int], order: Sequence[str] | None = None):
        self.order = tuple(order or sizes)
        if sorted(self.order) != sorted(sizes):
            raise ValueError(f"placement {list(self.order)} must name every axis of "
                             f"{sorted(sizes)} once")
        self.sizes = {a: int(sizes[a]) for a in self.order}
        self.stride = {}
        stride = 1
        for axis in self.order:
            self.stride[axis] = stride
            stride *= self.sizes[axis]
        self.size = stride

    def rank(self, **coords: int) -> int:
        """The rank at the given coordinates (missing axes are 0)."""
        return sum(coords.get(a, 0) * self.stride[a] for a in self.order)

    def coords(self, rank: int) -> dict[str, int]:
        return {a: (rank // self.stride[a]) % self.sizes[a] for a in self.order}

    def group(self, rank: int, axes: Sequence[str]) -> list[int]:
        """The ranks that differ from ``rank`` only along ``axes``, in mesh order."""
        c = self.coords(rank)
        base = rank - sum(c[a] * self.stride[a] for a in axes)
        ranges = [range(self.sizes[a]) for a in self.order if a in axes]
        strides = [self.stride[a] for a in self.order if a in axes]
        # itertools.product varies the last element fastest: reverse for innermost-first
        members = [base + sum(i * s for i, s in zip(idx, strides))
                   for idx in (tuple(reversed(p)) for p in
                               itertools.product(*reversed(ranges)))]
        return members

    def groups(self, axes: Sequence[str]) -> list[list[int]]:
        """Every group along ``axes``, each in mesh order, ordered by their first rank."""
        seen, out = set(), []
        for r in range(self.size):
            if r in seen:
                continue
            g = self.group(r, axes)
            seen.update(g)
            out.append(g)
        return out

    @cached_property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.sizes[a] for a in self.order)


@lru_cache(maxsize=4096)
def mesh_for_plan(plan) -> Mesh:
    """The mesh of a ParallelPlan: ep is the inner part of dp, so the axes are
    ``tp, cp, ep, dp (= dp / ep), pp`` in the plan's placement order (cached: a plan is a
    frozen value and a Mesh is never changed)."""
    sizes = {"tp": plan.tp, "cp": plan.cp, "ep": plan.ep, "dp": plan.dp // plan.ep,
             "pp": plan.pp}
    if math.prod(sizes.values()) != plan.devices:
        raise ValueError("the mesh does not cover the plan's devices")
    return Mesh(sizes, plan.placement)


def blocks(group: Sequence[int], size: int) -> tuple[list[list[int]], list[list[int]]]:
    """Split a group into consecutive blocks of ``size`` and the cross-block groups of members
    at the same offset: hybrid sharding shards within blocks and replicates across them.

    >>> blocks([0, 1, 2, 3, 4, 5], 3)
    ([[0, 1, 2], [3, 4, 5]], [[0, 3], [1, 4], [2, 5]])
    """
    if size < 1 or len(group) % size:
        raise ValueError(f"a group of {len(group)} does not split into blocks of {size}")
    inner = [list(group[i:i + size]) for i in range(0, len(group), size)]
    across = [[b[i] for b in inner] for i in range(size)]
    return inner, across
