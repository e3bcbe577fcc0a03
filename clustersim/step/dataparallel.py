"""Data parallelism in the step plan: which collectives keep the replicas of a stage's weights
in step (ZeRO 0-3, FSDP, hybrid sharding), and in what pieces.

- ZeRO 0 (Megatron DDP): the gradients are all-reduced once per step; ZeRO 1 (Megatron's
  distributed optimizer): reduce-scattered, and the updated parameters all-gathered; both in
  :data:`BUCKETS` buckets per chunk, launched as the last backward of the chunk produces
  them (``overlap.grad_reduce``), the parameter buckets from the step's start, which the
  first forward of each chunk waits for (``overlap.param_gather``).
- ZeRO 2: sharded gradients cannot be accumulated whole, so the reduce-scatter runs after
  every micro-batch's backward.
- ZeRO 3 (FSDP): every layer's parameters are all-gathered before its forward and again
  before its backward, its gradients reduce-scattered after the backward; a chunk runs in
  up to :data:`ZERO3_PIECES` pieces of layers, each piece's gathers launched one piece ahead.
- Hybrid sharding (``shard_group`` < dp, HSDP): the sharded collectives run within blocks of
  the data-parallel group (``inner``) and the gradient shards are summed ``across`` them.
- Tied embeddings split over pipeline stages: the first and last stage sum their gradients.

Dense weights are replicated over the ``dp`` family, expert weights over ``edp``
(:mod:`clustersim.workload.groups`); a family of one-rank groups has nothing to exchange.

>>> from clustersim.workload import ParallelPlan, get_model
>>> plan = ParallelPlan(dp=8, zero=1, stage_layers=(32,), seq_len=8192)
>>> g = stage_gradients(get_model("llama3-8b"), plan, 0, "bf16")
>>> [(c.op, str(c.family)) for c in g.reduces + g.gathers]
[('reduce_scatter', 'dp'), ('all_gather', 'dp')]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from clustersim.step.stepplan import Call, Dep, Family
from clustersim.workload.flops import layer_params_on_rank
from clustersim.workload.groups import block_size, group_size, sharded_block
from clustersim.workload.memory import stage_parameters
from clustersim.workload.models import ModelSpec
from clustersim.workload.ops import element_bytes
from clustersim.workload.plan import ParallelPlan

__all__ = ["BUCKETS", "ZERO3_PIECES", "StageGradients", "stage_gradients", "split_count",
           "across_blocks"]

# Gradient / parameter buckets per chunk: Megatron-Core launches a bucket every ~40M
# parameters (megatron/core/distributed: bucket_size = max(40M, 1M x dp)); a handful per chunk
# already leaves only the last bucket exposed.
BUCKETS = 4
# FSDP prefetches one unit (a layer) ahead; pieces of up to this many per chunk approximate
# it while keeping the number of ops small.
ZERO3_PIECES = 8


@dataclass(frozen=True)
class StageGradients:
    """The data-parallel collectives of one stage's weights, before they are placed: per
    step (``reduces``, ``gathers``), per micro-batch (ZeRO 2), the tied embeddings, ZeRO 3's
    per-layer gathers and reduce-scatters (``count`` 1), and hybrid sharding's sum of the
    ZeRO-3 gradient shards across blocks. Each call's ``dep`` is set where it is placed."""

    reduces: tuple[Call, ...] = ()
    gathers: tuple[Call, ...] = ()
    per_microbatch: tuple[Call, ...] = ()
    tied: tuple[Call, ...] = ()
    layer_gathers: tuple[Call, ...] = ()
    layer_reduces: tuple[Call, ...] = ()
    zero3_across: Call | None = None

    @property
    def sharded_layers(self) -> bool:
        """Whether ZeRO 3 gathers and reduce-scatters every layer."""
        return bool(self.layer_gathers or self.layer_reduces)


def _call(plan: ParallelPlan, name: str, op: str, axis: str, block: str, size: float
          ) -> tuple[Call, ...]:
    """The call on the ``axis``/``block`` family, or none where its groups have one rank."""
    if group_size(plan, axis, block) < 2 or size <= 0:
        return ()
    return (Call(name, op, Family(axis, block), size, Dep.SIDE, stream="dp", category="dp"),)


@lru_cache(maxsize=4096)
def stage_gradients(model: ModelSpec, plan: ParallelPlan, stage: int, precision: str
                    ) -> StageGradients:
    """The data-parallel collectives of physical pipeline ``stage`` (one rank's share)."""
    grad_B = 4 if precision == "fp32" else 2
    block = sharded_block(plan)
    params = stage_parameters(model, plan, stage)
    weights = (("", "dp", params.dense), ("expert_", "edp", params.expert))
    reduces, gathers, per_mb, tied = [], [], [], []
    if plan.zero == 0:
        for prefix, axis, count in weights:
            reduces += _call(plan, f"{prefix}grad_all_reduce", "all_reduce", axis, block,
                             count * grad_B)
    elif plan.zero in (1, 2):
        for prefix, axis, count in weights:
            rs = _call(plan, f"{prefix}grad_reduce_scatter", "reduce_scatter", axis, block,
                       count * grad_B)
            (reduces if plan.zero == 1 else per_mb).extend(rs)
            gathers += _call(plan, f"{prefix}param_all_gather", "all_gather", axis, block,
                             count * grad_B)
    if plan.pp > 1:
        tied += _call(plan, "tied_embedding_grad_all_reduce", "all_reduce", "tied", "all",
                      params.tied_embedding * grad_B)
    layer_gathers, layer_reduces, across = [], [], None
    if plan.zero >= 3:
        dense, expert = layer_params_on_rank(model, plan.tp, plan.ep)
        for prefix, axis, count in (("zero3", "dp", dense), ("zero3_expert", "edp", expert)):
            layer_gathers += _call(plan, f"{prefix}_param_all_gather", "all_gather", axis,
                                   block, count * grad_B)
            layer_reduces += _call(plan, f"{prefix}_grad_reduce_scatter", "reduce_scatter",
                                   axis, block, count * grad_B)
        shard = params.dense / block_size(plan, "dp") * element_bytes(precision)[0]
        found = _call(plan, "zero3_grad_all_reduce_across", "all_reduce", "dp", "across",
                      shard) if block == "inner" else ()
        across = found[0] if found else None
    return StageGradients(tuple(reduces), tuple(gathers), tuple(per_mb), tuple(tied),
                          tuple(layer_gathers), tuple(layer_reduces), across)


def split_count(call: Call, pieces: int, i: int) -> Call | None:
    """Piece ``i`` of ``pieces``' share of ``call.count`` back-to-back calls (None if it
    gets none): ZeRO 3's per-layer calls spread over a chunk's pieces.

    >>> c = Call("g", "all_gather", Family("dp"), 1.0, Dep.PREFETCHED, count=10)
    >>> [split_count(c, 4, i).count for i in range(4)]
    [2, 3, 2, 3]
    """
    count = call.count * (i + 1) // pieces - call.count * i // pieces
    return replace(call, count=count) if count else None


def across_blocks(plan: ParallelPlan, reduce: Call) -> Call | None:
    """Hybrid sharding: the all-reduce across blocks that follows a gradient bucket's
    reduce-scatter within its block (of the shard it produced), or None."""
    if reduce.family.block != "inner":
        return None
    axis = reduce.family.axis
    found = _call(plan, reduce.name + "_across", "all_reduce", axis, "across",
                  reduce.bytes / block_size(plan, axis))
    return replace(found[0], dep=Dep.CHAINED, stream=reduce.stream) if found else None
