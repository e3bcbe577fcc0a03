"""The rank groups a training step's collectives run on, for both fidelities.

The step plan (:mod:`clustersim.step`) names each call's family of groups; the flow fidelity
posts it on these groups and the analytic fidelity prices it on them, so the two cannot
drift apart on who talks to whom.

A collective's axis (:func:`axis_of`) names the mesh axes its group spans
(:data:`MESH_AXES_OF`): dense weights are replicated over the data- *and* context-parallel
ranks (``dp`` spans ``cp, ep, dp``; ``ep`` is the inner part of dp in the mesh), expert
weights over the data-parallel ranks of the same expert (``edp`` spans ``cp, dp``); ``tied``
pairs each rank of the first pipeline stage with its peer on the last (tied embeddings), and
``mirror`` each rank of stage s < pp/2 with its peer on stage pp-1-s (DualPipe's two copies of
every model stage). These two *paired* axes span two stages; :func:`home_stage` says which
stage's groups a call on them is counted with.
Hybrid sharding (ZeRO with ``shard_group`` < dp) cuts each data-parallel group into blocks of
:func:`block_size` ranks: sharded collectives run ``inner`` (within a block), the gradient
sum ``across`` blocks (members at the same offset).

>>> from clustersim.workload.mesh import Mesh
>>> mesh = Mesh({"tp": 2, "cp": 1, "ep": 1, "dp": 4, "pp": 2})
>>> collective_families(mesh, "tp")[:3]
[[0, 1], [2, 3], [4, 5]]
>>> collective_families(mesh, "dp")
[[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]]
>>> collective_families(mesh, "dp", "inner", 2)[:2]     # hybrid sharding: blocks of 2 ...
[[0, 2], [4, 6]]
>>> collective_families(mesh, "dp", "across", 2)[:2]    # ... and the groups across them
[[0, 4], [2, 6]]
>>> collective_families(mesh, "tied")[:2]
[[0, 8], [1, 9]]
>>> collective_families(Mesh({"tp": 1, "cp": 1, "ep": 1, "dp": 1, "pp": 4}), "mirror")
[[0, 3], [1, 2]]
"""

from __future__ import annotations

import math
from functools import lru_cache
from types import MappingProxyType

import numpy as np

from clustersim.workload.mesh import Mesh, blocks, mesh_for_plan

__all__ = ["MESH_AXES_OF", "BLOCKS", "PAIRED_AXES", "axis_of", "hybrid_sharded",
           "sharded_block", "block_size", "group_size", "collective_families", "home_stage"]

# The mesh axes spanned by each collective axis: dense weights are replicated over data and
# context parallel ranks, expert weights over the data-parallel ranks of the same expert.
MESH_AXES_OF = MappingProxyType({"tp": ("tp",), "cp": ("cp",), "ep": ("ep",), "pp": ("pp",),
                                 "dp": ("cp", "ep", "dp"), "edp": ("cp", "dp")})
# Which part of a (data-parallel) group a collective runs on: all of it, or under hybrid
# sharding one block (``inner``) or the members at the same offset of every block (``across``).
BLOCKS = ("all", "inner", "across")
# Axes whose groups pair a rank with its peer on another pipeline stage.
PAIRED_AXES = ("tied", "mirror")


def home_stage(axis: str, stage: int, pp: int) -> int:
    """The stage whose groups a call of ``stage`` on ``axis`` runs on: the first stage for
    ``tied``, the lower of ``stage`` and its mirror ``pp - 1 - stage`` for ``mirror``, else
    ``stage`` itself.

    >>> [home_stage("mirror", s, 4) for s in range(4)], home_stage("tied", 3, 4)
    ([0, 1, 1, 0], 0)
    """
    if axis == "tied":
        return 0
    return min(stage, pp - 1 - stage) if axis == "mirror" else stage


def axis_of(comm) -> str:
    """The group axis of a :class:`~clustersim.workload.chunks.Comm`: its own axis, but
    ``edp`` for data-parallel collectives of expert weights and ``tied`` for the only
    pipeline-axis collective (the tied embeddings of the first and last stage).

    >>> from clustersim.workload.chunks import Comm
    >>> [axis_of(Comm(n, "all_reduce", a, 1.0)) for n, a in
    ...  (("grad", "dp"), ("expert_grad", "dp"), ("tied", "pp"), ("x", "tp"))]
    ['dp', 'edp', 'tied', 'tp']
    """
    if comm.axis == "pp":
        return "tied"   # the only pp-axis collective: tied embeddings, first and last stage
    return "edp" if comm.axis == "dp" and "expert" in comm.name else comm.axis


def hybrid_sharded(plan) -> bool:
    """Whether ZeRO shards within blocks of ``shard_group`` data-parallel ranks and
    replicates across them (hybrid sharding, HSDP) rather than over all of dp.

    >>> from clustersim.workload.plan import ParallelPlan
    >>> hybrid_sharded(ParallelPlan(dp=8, zero=3, shard_group=4)), hybrid_sharded(
    ...     ParallelPlan(dp=8, zero=3))
    (True, False)
    """
    return plan.zero >= 1 and plan.shard_group < plan.dp


def sharded_block(plan) -> str:
    """The block the plan's sharded data-parallel collectives (ZeRO gathers and
    reduce-scatters) run on: ``inner`` under hybrid sharding, else ``all``.

    >>> from clustersim.workload.plan import ParallelPlan
    >>> sharded_block(ParallelPlan(dp=8, zero=1, shard_group=2))
    'inner'
    """
    return "inner" if hybrid_sharded(plan) else "all"


def block_size(plan, axis: str, mesh: Mesh | None = None) -> int:
    """Ranks in one hybrid-sharding block of an ``axis`` group: ``shard_group``
    data-parallel ranks times the context-parallel ranks they hold together (dp and edp
    groups span cp), at most the whole group. ``mesh`` defaults to the plan's.

    >>> from clustersim.workload.plan import ParallelPlan
    >>> plan = ParallelPlan(tp=2, dp=8, cp=2, zero=3, shard_group=2)
    >>> block_size(plan, "dp"), block_size(plan, "tp")
    (4, 2)
    """
    if axis not in MESH_AXES_OF:
        raise ValueError(f"unknown collective axis {axis!r}; allowed: "
                         f"{', '.join(MESH_AXES_OF)}")
    mesh = mesh_for_plan(plan) if mesh is None else mesh
    width = math.prod(mesh.sizes[a] for a in MESH_AXES_OF[axis])
    return min(width, plan.shard_group * (plan.cp if axis in ("dp", "edp") else 1))


def group_size(plan, axis: str, block: str = "all") -> int:
    """Ranks in each group of ``axis`` (``tied``: the first and the last stage) and
    ``block``, as :func:`collective_families` forms them for ``plan``.

    >>> from clustersim.workload.plan import ParallelPlan
    >>> plan = ParallelPlan(tp=2, pp=2, dp=8, cp=2, zero=3, shard_group=2)
    >>> [group_size(plan, a) for a in ("tp", "dp", "tied")], group_size(plan, "dp", "across")
    ([2, 16, 2], 4)
    """
    if axis in PAIRED_AXES:
        return 2 if plan.pp > 1 else 1
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; allowed: {', '.join(BLOCKS)}")
    mesh = mesh_for_plan(plan)
    width = math.prod(mesh.sizes[a] for a in MESH_AXES_OF[axis])
    if block == "all":
        return width
    inner = block_size(plan, axis, mesh)
    return inner if block == "inner" else width // inner


def collective_families(mesh: Mesh, axis: str, block: str = "all",
                        size: int = 0) -> list[list[int]]:
    """Every rank group of ``axis`` on ``mesh`` (a partition of the ranks, or of the first
    stage's and last stage's for ``tied``), each in mesh order, ordered by first rank as
    :meth:`Mesh.groups` orders them; with ``block`` ``inner``/``across``, the blocks of
    ``size`` ranks of each group (:func:`~clustersim.workload.mesh.blocks`) or the groups
    across them.

    >>> mesh = Mesh({"tp": 2, "cp": 1, "ep": 2, "dp": 1, "pp": 1})
    >>> collective_families(mesh, "ep"), collective_families(mesh, "edp")
    ([[0, 2], [1, 3]], [[0], [1], [2], [3]])
    """
    if axis not in PAIRED_AXES and axis not in MESH_AXES_OF:
        raise ValueError(f"unknown collective axis {axis!r}; allowed: tied, mirror, "
                         f"{', '.join(MESH_AXES_OF)}")
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; allowed: {', '.join(BLOCKS)}")
    return [list(g) for g in _partition(mesh.order, mesh.shape, axis, block,
                                        size if block != "all" else 0)]


@lru_cache(maxsize=1024)
def _partition(order: tuple, shape: tuple, axis: str, block: str, size: int) -> tuple:
    """The fast core of :func:`collective_families` (vectorised, cached; tuples, so the
    cache cannot be changed by a caller)."""
    n, pp = math.prod(shape), shape[order.index("pp")]
    stride = math.prod(shape[:order.index("pp")])
    if axis == "tied":
        groups = [[r, r + (pp - 1) * stride] for r in range(n) if (r // stride) % pp == 0]
    elif axis == "mirror":
        groups = [[r, r + (pp - 1 - 2 * s) * stride] for r in range(n)
                  if (s := (r // stride) % pp) < pp // 2]
    else:
        # rank r has coordinate (r // stride[a]) % size[a]: reversed, the shape is row-major;
        # moving the group's axes last (outermost first) makes each row one group in mesh
        # order, rows ordered by their first rank
        inside = sorted(len(order) - 1 - order.index(a) for a in MESH_AXES_OF[axis])
        rest = [d for d in range(len(order)) if d not in inside]
        grid = np.arange(n).reshape(shape[::-1]).transpose(rest + inside)
        groups = grid.reshape(-1, math.prod(grid.shape[len(rest):])).tolist()
    if block != "all":
        groups = [b for g in groups for b in blocks(g, size)[block == "across"]]
    return tuple(tuple(g) for g in groups)
