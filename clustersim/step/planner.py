"""``plan_step``: the step plan of a model trained under a parallel plan on a cluster.

Every scheduling decision is made here, once: the schedule's order of slots per stage
(:mod:`~clustersim.step.schedules`), where each collective goes and what it waits for
(:mod:`~clustersim.step.slots`, :mod:`~clustersim.step.dataparallel`), the epilogue
(:mod:`~clustersim.step.epilogue`), and the memory each stage holds with the micro-batches
its schedule keeps in flight.

>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.network import build_cluster
>>> from clustersim.workload import get_model, resolve_plan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> model = get_model("llama3-8b")
>>> training = TrainingConfig(global_batch=16, parallelism={"tp": 4, "pp": 2})
>>> step = plan_step(model, resolve_plan(training, model, 16), cluster, training)
>>> [(s.stage, s.ranks, len(s.order)) for s in step.stages]
[(0, 8, 16), (1, 8, 16)]
>>> print(step.stages[1].slots[0].receive, step.stages[1].slots[0].calls[0], sep="; ")
recv act from stage 0 16.0 MiB (compute); tp_all_reduce_0 x32 all_reduce 64.0 MiB on tp (blocking)
"""

from __future__ import annotations

from clustersim.errors import InputError
from clustersim.hardware.compute import compute_params
from clustersim.step.epilogue import stage_epilogue
from clustersim.step.schedules import held_microbatches, in_flight_microbatches
from clustersim.step.slots import StageContext, stage_slots
from clustersim.step.stepplan import StagePlan, StepPlan
from clustersim.topology.graph import COMPUTE_KINDS
from clustersim.workload.memory import InFlight, memory_footprint
from clustersim.workload.plan import ParallelPlan

__all__ = ["plan_step", "in_flight", "host_dram_share_Bps"]


def in_flight(plan: ParallelPlan, stage: int) -> InFlight:
    """The micro-batches whose activations ``stage`` holds at its peak, read off its
    schedule (the whole stage's, the first chunk's and the last chunk's)."""
    args = (plan.schedule, stage, plan.pp, plan.num_microbatches, plan.virtual_stages)
    held = held_microbatches(*args)
    return InFlight(in_flight_microbatches(*args), held[0], held[-1])


def host_dram_share_Bps(cluster, device) -> float:
    """DRAM bandwidth of the host ``device`` offloads to, shared by all its devices, at
    STREAM-class efficiency (~75% of peak on DDR4/DDR5 servers: an estimate).

    >>> from clustersim.network import build_cluster
    >>> cluster = build_cluster("cxl-memory-pool", devices=8)
    >>> round(host_dram_share_Bps(cluster, cluster.devices[0]) / 1e9, 1)   # 8 GPUs a host
    76.8
    """
    node, _ = cluster.offload_memory(device, "host")
    G = cluster.graph
    host = next(iter(G.predecessors(node)))
    sharing = sum(1 for n in G.predecessors(host) if G.nodes[n]["kind"] in COMPUTE_KINDS)
    return 0.75 * G.edges[host, node]["bw_Bps"] / max(1, sharing)


def _offload_memory(cluster, where: str) -> float | None:
    """Check the cluster has memory to offload to; the CPU step's DRAM share for ``host``."""
    if where == "none":
        return None
    if cluster.offload_memory(cluster.devices[0], where) is None:
        raise InputError(f"training.offload.optimizer: {where!r} needs a topology with "
                         f"{'a CXL memory pool' if where == 'cxl' else 'host memory'} (e.g. "
                         f"topology: cxl-memory-pool, or set cluster.overrides.memory_pool)")
    return host_dram_share_Bps(cluster, cluster.devices[0]) if where == "host" else None


def plan_step(model, plan: ParallelPlan, cluster, training) -> StepPlan:
    """The :class:`StepPlan` of one training step of ``model`` under ``plan`` on
    ``cluster`` (its device times the compute; ``training`` is the experiment's section).

    The cluster enters only through its device, its memory bandwidth and the offload
    memory, so the step plan is kept for those (a sweep over the network prices the same
    plan on several clusters): equal inputs give the same :class:`StepPlan` object. The
    device's compute parameters are part of the key by identity: a calibration trial
    replaces them (:func:`clustersim.calibrate.training.trial_values`)."""
    if len(cluster.devices) < plan.devices:
        raise ValueError(f"the plan needs {plan.devices} devices, the cluster has "
                         f"{len(cluster.devices)}")
    host_dram = _offload_memory(cluster, training.offload.optimizer)
    params = compute_params(cluster.device)
    key = (model, plan, training.model_dump_json(), cluster.device,
           cluster.memory_bw_Bps(cluster.devices[0]), host_dram, id(params))
    found = _STEPS.get(key)
    if found is None or found[0] is not params:
        if len(_STEPS) >= 64:   # a sweep revisits a plan soon or never: keep it bounded
            _STEPS.pop(next(iter(_STEPS)))
        found = _STEPS[key] = (params, _plan_step(model, plan, training, *key[3:6]))
    return found[1]


# (model, plan, training JSON, device, memory bandwidth, host DRAM, id of the device's compute
# parameters) -> (those parameters, the step plan)
_STEPS: dict = {}


def _plan_step(model, plan: ParallelPlan, training, device, mem_bw_Bps: float,
               host_dram: float | None) -> StepPlan:
    ctx = StageContext.of(model, plan, training, device, mem_bw_Bps)
    stages = []
    for s in range(plan.pp):
        slots, order, prologue = stage_slots(ctx, s)
        memory = memory_footprint(model, plan, precision=training.precision,
                                  recompute=training.recompute, stage=s,
                                  optimizer=training.optimizer,
                                  flash_attention=training.attention == "flash",
                                  in_flight=in_flight(plan, s), fp8=ctx.fp8)
        offloaded = memory.optimizer_states_B if training.offload.optimizer != "none" else 0.0
        stages.append(StagePlan(s, plan.devices // plan.pp, slots, order, prologue,
                                stage_epilogue(ctx, s, host_dram), memory, offloaded))
    return StepPlan(tuple(stages), plan, model, training)
