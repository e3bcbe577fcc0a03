"""Data parallelism in the step plan: which collectives keep the replicas of a stage's weights
in step (ZeRO 0-3, FSDP, hybrid sharding), in what buckets and pieces, as the framework
(:mod:`~clustersim.step.frameworks`) does it.

- ZeRO 0 (DDP): the gradients are all-reduced once per step; ZeRO 1 (Megatron's distributed
  optimizer): reduce-scattered (DeepSpeed: all-reduced, each rank keeping its slice) and the
  updated parameters all-gathered; both in the framework's buckets, launched as the last
  backward of a chunk produces them (``overlap.grad_reduce``), the parameter buckets from the
  step's start, which the first forward of each chunk waits for (``overlap.param_gather``).
- ZeRO 2: sharded gradients cannot be accumulated whole, so the reduction runs after every
  micro-batch's backward.
- ZeRO 3 (FSDP): every layer's parameters are all-gathered before its forward and again
  before its backward (FSDP keeps them from the forward when pipelining), one gather per block
  (FSDP, JAX) or per linear layer (DeepSpeed), each launched one piece ahead, and its
  gradients reduce-scattered after the backward (FSDP with pipelining: on the last
  micro-batch only).
- Hybrid sharding (``shard_group`` < dp, HSDP): the sharded collectives run within blocks of
  the data-parallel group (``inner``) and the gradient shards are summed ``across`` them.
- Tied embeddings split over pipeline stages: the first and last stage sum their gradients.

Dense weights are replicated over the ``dp`` family, expert weights over ``edp``
(:mod:`clustersim.workload.groups`); a family of one-rank groups has nothing to exchange.

>>> from clustersim.step.frameworks import FRAMEWORKS
>>> from clustersim.workload import ParallelPlan, get_model
>>> plan = ParallelPlan(dp=8, zero=1, stage_layers=(32,), seq_len=8192)
>>> g = stage_gradients(get_model("llama3-8b"), plan, 0, "bf16", FRAMEWORKS["megatron-core"])
>>> [(c.op, str(c.family), c.bytes / g.reduces[0].bytes) for c in g.reduces + g.gathers]
[('reduce_scatter', 'dp', 1.0), ('all_gather', 'dp', 0.5)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

from clustersim.step.frameworks import Framework
from clustersim.step.stepplan import Call, Dep, Family
from clustersim.workload.flops import layer_params_on_rank
from clustersim.workload.groups import block_size, group_size, sharded_block
from clustersim.workload.fp8 import FP8Options, layer_fp8_weights
from clustersim.workload.memory import stage_fp8_weights, stage_parameters
from clustersim.workload.models import ModelSpec
from clustersim.workload.plan import ParallelPlan

__all__ = ["MAX_PIECES", "StageGradients", "stage_gradients", "split_count", "across_blocks",
           "chunk_buckets"]

# A slot's compute is cut into at most this many pieces (gradient buckets, ZeRO-3 units):
# beyond it, neighbouring buckets or units are merged so a step stays a few thousand ops.
MAX_PIECES = 32


@dataclass(frozen=True)
class StageGradients:
    """The data-parallel collectives of one stage's weights, before they are placed: per
    step (``reduces``, ``gathers``), per micro-batch (ZeRO 2), the tied embeddings, ZeRO 3's
    per-layer gathers and reduce-scatters (``count``: calls per layer), hybrid sharding's
    sum of the ZeRO-3 gradient shards across blocks, and DualPipe's sum of the gradients of
    its two copies of each model stage (``mirror``). Each call's ``dep`` is set where it is
    placed."""

    reduces: tuple[Call, ...] = ()
    gathers: tuple[Call, ...] = ()
    per_microbatch: tuple[Call, ...] = ()
    tied: tuple[Call, ...] = ()
    layer_gathers: tuple[Call, ...] = ()
    layer_reduces: tuple[Call, ...] = ()
    zero3_across: Call | None = None
    mirror: tuple[Call, ...] = ()

    @property
    def sharded_layers(self) -> bool:
        """Whether ZeRO 3 gathers and reduce-scatters every layer."""
        return bool(self.layer_gathers or self.layer_reduces)


def _call(plan: ParallelPlan, name: str, op: str, axis: str, block: str, size: float,
          count: int = 1) -> tuple[Call, ...]:
    """The call on the ``axis``/``block`` family, or none where its groups have one rank."""
    if group_size(plan, axis, block) < 2 or size <= 0:
        return ()
    return (Call(name, op, Family(axis, block), size, Dep.SIDE, stream="dp", category="dp",
                 count=count),)


def _gathered_bytes(count: float, fp8_count: float, param_B: int,
                    fp8: FP8Options | None) -> float:
    """Bytes a parameter all-gather of ``count`` parameters moves, ``fp8_count`` of them FP8
    GEMM weights: 1-byte weights (with their scales) under ``fp8.param_gather``."""
    if fp8 is None or not fp8.param_gather:
        return count * param_B
    return (count - fp8_count) * param_B + fp8_count * fp8.wire_weight_B


@lru_cache(maxsize=4096)
def stage_gradients(model: ModelSpec, plan: ParallelPlan, stage: int, precision: str,
                    framework: Framework, fp8: FP8Options | None = None) -> StageGradients:
    """The data-parallel collectives of physical pipeline ``stage`` (one rank's share).
    ``fp8`` with ``param_gather``: the parameter all-gathers move fp8 GEMM weights;
    gradients are reduced as without fp8."""
    grad_B, param_B = framework.reduce_bytes(precision), 4 if precision == "fp32" else 2
    block = sharded_block(plan)
    params = stage_parameters(model, plan, stage)
    fp8_dense, fp8_expert = stage_fp8_weights(model, plan, stage)
    weights = (("", "dp", params.dense, fp8_dense),
               ("expert_", "edp", params.expert, fp8_expert))
    reduces, gathers, per_mb, tied = [], [], [], []
    if plan.zero == 0:
        for prefix, axis, count, _ in weights:
            reduces += _call(plan, f"{prefix}grad_all_reduce", "all_reduce", axis, block,
                             count * grad_B)
    elif plan.zero in (1, 2):
        op = framework.zero12_reduce
        for prefix, axis, count, fp8_count in weights:
            rs = _call(plan, f"{prefix}grad_{op}", op, axis, block, count * grad_B)
            (reduces if plan.zero == 1 else per_mb).extend(rs)
            gathers += _call(plan, f"{prefix}param_all_gather", "all_gather", axis, block,
                             _gathered_bytes(count, fp8_count, param_B, fp8))
    if plan.pp > 1:
        tied += _call(plan, "tied_embedding_grad_all_reduce", "all_reduce", "tied", "all",
                      params.tied_embedding * grad_B)
    layer_gathers, layer_reduces, across = [], [], None
    if plan.zero >= 3:
        k = framework.zero3_gathers_per_layer(model)
        dense, expert = layer_params_on_rank(model, plan.tp, plan.ep)
        fp8_layer = layer_fp8_weights(model, dense, expert)
        for prefix, axis, count, fp8_count in (("zero3", "dp", dense, fp8_layer[0]),
                                               ("zero3_expert", "edp", expert, fp8_layer[1])):
            layer_gathers += _call(plan, f"{prefix}_param_all_gather", "all_gather", axis,
                                   block, _gathered_bytes(count, fp8_count, param_B, fp8) / k,
                                   count=k)
            layer_reduces += _call(plan, f"{prefix}_grad_reduce_scatter", "reduce_scatter",
                                   axis, block, count * grad_B)
        shard = params.dense / block_size(plan, "dp") * grad_B
        found = _call(plan, "zero3_grad_all_reduce_across", "all_reduce", "dp", "across",
                      shard) if block == "inner" else ()
        across = found[0] if found else None
    return StageGradients(tuple(reduces), tuple(gathers), tuple(per_mb), tuple(tied),
                          tuple(layer_gathers), tuple(layer_reduces), across,
                          _mirror_sum(plan, params, grad_B))


def _mirror_sum(plan: ParallelPlan, params, grad_B: float) -> tuple[Call, ...]:
    """DualPipe keeps two copies of every model stage, on stages s and pp-1-s (DeepSeek-V3
    report Sec. 3.2.1; deepseek-ai/DualPipe's example adds each copy's gradient to the
    other's). The pair all-reduces what it holds after the data-parallel reduction: the whole
    gradient without ZeRO, the rank's shard with it (both copies shard alike), before the
    optimizer step."""
    if plan.schedule != "dualpipe":
        return ()
    if plan.zero == 0:
        size = (params.dense + params.expert) * grad_B
    else:
        block = sharded_block(plan)
        size = (params.dense / group_size(plan, "dp", block)
                + params.expert / group_size(plan, "edp", block)) * grad_B
    return _call(plan, "dualpipe_mirror_grad_all_reduce", "all_reduce", "mirror", "all", size)


def chunk_buckets(framework: Framework, plan: ParallelPlan, stage: int, chunk: int,
                  elements: float, overlapped: bool) -> int:
    """Gradient (and parameter) buckets of one chunk holding ``elements`` gradients: the
    framework's bucket size (one bucket where it does not bucket, or without overlap), at
    most :data:`MAX_PIECES`.

    >>> from clustersim.step.frameworks import FRAMEWORKS
    >>> from clustersim.workload import ParallelPlan
    >>> plan = ParallelPlan(dp=8, pp=2, stage_layers=(16, 16))
    >>> mc = FRAMEWORKS["megatron-core"]
    >>> chunk_buckets(mc, plan, 0, 0, 2e8, True), chunk_buckets(mc, plan, 1, 0, 2e8, True)
    (5, 1)
    """
    size = framework.bucket_params(plan.dp)
    if not overlapped or size is None:
        return 1
    if framework.bucket_first_chunk_only and (stage or chunk):
        return 1
    return max(1, min(MAX_PIECES, math.ceil(elements / size)))


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
    reduction within its block (of the shard it produced), or None."""
    if reduce.family.block != "inner":
        return None
    axis = reduce.family.axis
    shard = reduce.bytes / block_size(plan, axis) if reduce.op == "reduce_scatter" else \
        reduce.bytes
    found = _call(plan, reduce.name + "_across", "all_reduce", axis, "across", shard)
    return replace(found[0], dep=Dep.CHAINED, stream=reduce.stream) if found else None
