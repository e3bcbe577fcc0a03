"""Where the step plan's calls land on the cluster: rank groups and pairs as devices.

Rank ``r`` of the plan's mesh runs on ``cluster.devices[r]``. A call on a :class:`Family`
within a stage runs on every group of that family whose ranks belong to the stage (the tied
embeddings: every pair of the first and last stage, counted as the first stage's; DualPipe's
mirrored copies: every pair of stages s and pp-1-s, counted as the lower's); a pipeline
transfer between two stages runs on every pair of ranks at the same position of the two;
an optimizer offload between each device and the memory its states live in. Both fidelities
place calls through these functions.

>>> from clustersim.network import build_cluster
>>> from clustersim.step.stepplan import Family
>>> from clustersim.workload import ParallelPlan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> plan = ParallelPlan(tp=4, pp=2, dp=2, stage_layers=(16, 16))
>>> groups = stage_groups(plan, cluster, Family("tp"), 1)
>>> len(groups), groups[0]
(2, ('n1/g0', 'n1/g1', 'n1/g2', 'n1/g3'))
>>> stage_pairs(plan, cluster, 0, 1)[0]
('n0/g0', 'n1/g0')
"""

from __future__ import annotations

from functools import lru_cache

from clustersim.errors import InputError
from clustersim.workload.groups import block_size, collective_families, home_stage
from clustersim.workload.mesh import Mesh, mesh_for_plan
from clustersim.workload.plan import ParallelPlan

__all__ = ["stage_rank_groups", "stage_groups", "stage_pairs", "stage_ranks", "offload_pairs"]


@lru_cache(maxsize=4096)
def _families(order: tuple, shape: tuple, axis: str, block: str, size: int) -> dict:
    """Stage -> the rank groups of one family, in ``Mesh.groups`` order (cached per mesh)."""
    mesh = Mesh(dict(zip(order, shape)), order)
    stride, pp = mesh.stride["pp"], mesh.sizes["pp"]
    out: dict[int, tuple] = {}
    for g in collective_families(mesh, axis, block, size):
        stage = (g[0] // stride) % pp
        out[stage] = out.get(stage, ()) + (tuple(g),)
    return out


def stage_rank_groups(plan: ParallelPlan, family, stage: int) -> tuple[tuple[int, ...], ...]:
    """The rank groups of ``family`` on ``stage`` (a paired family's on its home stage)."""
    mesh = mesh_for_plan(plan)
    size = 0 if family.block == "all" else block_size(plan, family.axis, mesh)
    found = _families(mesh.order, mesh.shape, family.axis, family.block, size)
    return found.get(home_stage(family.axis, stage, plan.pp), ())


def stage_groups(plan: ParallelPlan, cluster, family, stage: int) -> tuple[tuple, ...]:
    """The device groups of ``family`` on ``stage``."""
    devices = cluster.devices
    return tuple(tuple(devices[r] for r in g) for g in stage_rank_groups(plan, family, stage))


def stage_ranks(plan: ParallelPlan, stage: int) -> list[int]:
    """The ranks of pipeline ``stage``, in order."""
    mesh = mesh_for_plan(plan)
    stride = mesh.stride["pp"]
    return [r for r in range(plan.devices) if (r // stride) % plan.pp == stage]


def stage_pairs(plan: ParallelPlan, cluster, src: int, dst: int) -> tuple[tuple, ...]:
    """``(sender, receiver)`` devices of every rank of stage ``src`` and its peer on ``dst``."""
    stride = mesh_for_plan(plan).stride["pp"]
    devices = cluster.devices
    return tuple((devices[r], devices[r + (dst - src) * stride]) for r in stage_ranks(plan, src))


def offload_pairs(cluster, devices, where: str, to_device: bool) -> list[tuple]:
    """(source, destination) flows between each of ``devices`` and the memory its optimizer
    states live in (``where``: ``host`` or ``cxl``); an InputError names the topology needed
    when the cluster has no such memory.

    >>> from clustersim.network import build_cluster
    >>> cluster = build_cluster("cxl-memory-pool", devices=8)
    >>> offload_pairs(cluster, cluster.devices[:2], "cxl", to_device=True)
    [('cxl0/mem0', 'n0/g0'), ('cxl0/mem1', 'n0/g1')]
    """
    pairs = []
    for device in devices:
        found = cluster.offload_memory(device, where)
        if found is None:
            raise InputError(f"training.offload.optimizer: {where!r} needs a topology with "
                             f"{'a CXL memory pool' if where == 'cxl' else 'host memory'} "
                             f"(e.g. topology: cxl-memory-pool, or set "
                             f"cluster.overrides.memory_pool)")
        pairs.append((found[0], device) if to_device else (device, found[0]))
    return pairs
