"""The work of one model chunk on one rank: compute time and the collectives its sharding
implies for one micro-batch, the optimizer step, and the activations sent between stages.

The step plan (:mod:`clustersim.step`) places these in a schedule; both fidelities price the
same work. Kernels are timed by ``clustersim.hardware.compute`` on the cluster's device with
the bandwidth of its memory edges; identical back-to-back collectives of a chunk's layers are
merged into one with a repeat count (``Comm.count``).

>>> from clustersim.workload import get_model, ParallelPlan
>>> from clustersim.hardware import get_device
>>> plan = ParallelPlan(tp=8, pp=2, dp=1, sp=True, stage_layers=(48, 48), seq_len=2048)
>>> w = chunk_work(get_model("gpt3-175b"), plan, 0, get_device("h100-sxm-80gb"), "bf16", "none")
>>> w.layers, [(c.op, c.count) for c in w.fwd_comms]
(48, [('all_gather', 96), ('reduce_scatter', 97)])
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from clustersim.hardware.compute import calibrated_cache, op_time_s
from clustersim.workload.attention import attention_core
from clustersim.workload.comms import (embedding_comms, layer_comms, logits_comms,
                                       ring_attention_steps)
from clustersim.workload.flops import embedding_ops, layer_ops, logits_ops, optimizer_ops
from clustersim.workload.fp8 import FP8Options, quantize_op
from clustersim.workload.memory import stage_fp8_weights, stage_parameters
from clustersim.workload.models import ModelSpec
from clustersim.workload.ops import OpCost, Work, element_bytes
from clustersim.workload.plan import ParallelPlan

__all__ = ["Comm", "ChunkWork", "RingAttention", "chunk_work", "optimizer_work",
           "optimizer_state", "OptimizerState", "activation_bytes", "p2p_gather_bytes",
           "fp8_weight_casts"]


@dataclass(frozen=True)
class Comm:
    """``count`` back-to-back collectives of ``bytes`` each on the ``axis`` group."""

    name: str
    op: str
    axis: str
    bytes: float
    count: int = 1


@dataclass(frozen=True)
class RingAttention:
    """Ring attention (``cp_comm: p2p``) in a chunk: each of its layers runs ``steps`` =
    cp - 1 ring steps each way, every step under one of cp equal attention blocks (causal
    load balancing: each rank holds sequence chunks i and 2cp-1-i, so every block is 1/cp of
    its causal work). ``fwd_step`` and ``bwd_step`` are one step of every layer
    (``count`` = layers); ``fwd_core`` and ``bwd_core`` the attention-core kernels of all
    the layers (inside ``ChunkWork.fwd`` and ``.bwd``; the backward's include a replayed
    forward under recomputation, and leave out the ``_wgrad`` GEMMs of materialized
    attention, which a zero-bubble schedule defers to ``W``)."""

    steps: int
    fwd_step: Comm
    bwd_step: Comm
    fwd_core: Work
    bwd_core: Work


@dataclass(frozen=True)
class ChunkWork:
    """One micro-batch through one virtual stage (a model chunk) on one rank."""

    layers: int
    fwd: Work
    bwd: Work
    fwd_comms: tuple[Comm, ...]
    bwd_comms: tuple[Comm, ...]
    layer_fwd: Work      # one transformer layer, for splitting into buckets
    layer_bwd: Work
    wgrad: Work = Work()   # the weight-gradient GEMMs of ``bwd`` (a zero-bubble ``W``)
    ring: RingAttention | None = None   # cp_comm p2p with cp > 1

    @property
    def dgrad(self) -> Work:
        """The rest of ``bwd``: activation-gradient GEMMs, attention and elementwise
        backwards, recomputed forwards (a zero-bubble ``B``: what the previous stage waits
        for)."""
        return self.bwd + self.wgrad * -1.0


def _time(ops, device, precision: str, mem_bw_Bps: float | None) -> Work:
    total = Work()
    for op in ops:
        dtype = op.dtype or precision
        total = total + Work(op_time_s(op, device, dtype, mem_bw_Bps), op.flops, op.bytes)
    return total


def _wgrad_time(ops, device, precision: str, mem_bw_Bps: float | None) -> Work:
    """The weight-gradient GEMMs among backward ``ops`` (names ending ``_wgrad``; each as
    many FLOPs as its ``_dgrad`` twin, Qi et al. 2024 Sec. 2)."""
    return _time([op for op in ops if op.name.endswith("_wgrad")], device, precision,
                 mem_bw_Bps)


def _merge(comms, times: int = 1, merged: OrderedDict | None = None) -> OrderedDict:
    """Identical collectives (same op, group and size) as one with a repeat count, ``times``
    each, added to ``merged`` (a new table by default), in order of first appearance."""
    merged = OrderedDict() if merged is None else merged
    for c in comms:
        key = (c.op, c.axis, c.bytes)
        name = merged[key].name if key in merged else c.name
        count = merged[key].count + times if key in merged else times
        merged[key] = Comm(name, c.op, c.axis, c.bytes, count)
    return merged


def _bf16_layers_in_chunk(plan: ParallelPlan, virtual_stage: int,
                          fp8: FP8Options | None) -> int:
    """Layers of ``virtual_stage`` an fp8 run keeps in bf16: those among the model's first
    and last ``fp8.bf16_layers`` (chunks hold consecutive layers in pipeline order).

    >>> from clustersim.hardware import get_device
    >>> fp8 = FP8Options.of("delayed", get_device("h100-sxm-80gb"), bf16_layers=(1, 2))
    >>> plan = ParallelPlan(pp=2, stage_layers=(16, 16))
    >>> _bf16_layers_in_chunk(plan, 0, fp8), _bf16_layers_in_chunk(plan, 1, fp8)
    (1, 2)
    """
    if fp8 is None or fp8.bf16_layers == (0, 0):
        return 0
    first = sum(plan.stage_layers[:virtual_stage])
    last = first + plan.stage_layers[virtual_stage]
    start, end = fp8.bf16_layers
    head = max(0, min(last, start) - first)
    tail = max(0, last - max(first, sum(plan.stage_layers) - end))
    return min(plan.stage_layers[virtual_stage], head + tail)


@calibrated_cache(maxsize=4096)
def chunk_work(model: ModelSpec, plan: ParallelPlan, virtual_stage: int, device,
               precision: str, recompute: str, mem_bw_Bps: float | None = None, *,
               attention: str = "flash", fp8: FP8Options | None = None) -> ChunkWork:
    """Compute and collectives of one micro-batch through ``virtual_stage`` (pipeline order):
    its layers, plus the embedding on the first and the output layer and loss on the last.
    ``attention`` is the experiment's ``training.attention`` (``flash`` or ``materialized``,
    see :func:`~clustersim.workload.flops.layer_ops`); a device without flash-attention
    kernels refuses ``flash`` with an InputError. ``fp8``: the run's FP8 recipe
    (:mod:`~clustersim.workload.fp8`), with ``precision="fp8"``."""
    shard, b, s = plan.shard, plan.micro_batch, plan.seq_len
    layers = plan.stage_layers[virtual_stage]
    # the chunk's own mix of dense and MoE layers (chunks run in layer order)
    share = model.moe_share(sum(plan.stage_layers[:virtual_stage]), layers) if model.moe \
        else None
    kept = _bf16_layers_in_chunk(plan, virtual_stage, fp8)
    fwd = bwd = wgrad = Work()
    fwd_comms, bwd_comms = OrderedDict(), OrderedDict()
    for i, (dtype, opts, count) in enumerate(((precision, fp8, layers - kept),
                                              ("bf16", None, kept))):
        if i and not count:
            continue
        ops = layer_ops(model, shard, b, s, dtype, recompute, attention=attention,
                        moe_share=share, fp8=opts)
        comms = layer_comms(model, shard, b, s, dtype, recompute, moe_share=share,
                            cp_comm=plan.cp_comm, fp8=opts)
        one_fwd = _time(ops["fwd"], device, dtype, mem_bw_Bps)
        one_bwd = _time(ops["bwd"], device, dtype, mem_bw_Bps)
        if i == 0:   # one layer of the run's precision, for splitting into buckets
            layer_fwd, layer_bwd, main_ops = one_fwd, one_bwd, ops
        fwd, bwd = fwd + one_fwd * count, bwd + one_bwd * count
        wgrad = wgrad + _wgrad_time(ops["bwd"], device, dtype, mem_bw_Bps) * count
        if count or not layers:
            _merge(comms["fwd"], count, fwd_comms)
            _merge(comms["bwd"], count, bwd_comms)
    ends = []
    if virtual_stage == 0:
        ends.append((embedding_ops, embedding_comms))
    if virtual_stage == len(plan.stage_layers) - 1:
        ends.append((logits_ops, logits_comms))
    for ops_of, comms_of in ends:
        extra, extra_comms = ops_of(model, shard, b, s, precision), comms_of(model, shard, b, s,
                                                                            precision)
        fwd = fwd + _time(extra["fwd"], device, precision, mem_bw_Bps)
        bwd = bwd + _time(extra["bwd"], device, precision, mem_bw_Bps)
        wgrad = wgrad + _wgrad_time(extra["bwd"], device, precision, mem_bw_Bps)
        _merge(extra_comms["fwd"], merged=fwd_comms)
        _merge(extra_comms["bwd"], merged=bwd_comms)
    ring = _ring(model, plan, main_ops, layers, device, precision, recompute, mem_bw_Bps)
    return ChunkWork(layers, fwd, bwd, tuple(fwd_comms.values()), tuple(bwd_comms.values()),
                     layer_fwd, layer_bwd, wgrad, ring)


def _ring(model: ModelSpec, plan: ParallelPlan, ops, layers: int, device, precision: str,
          recompute: str, mem_bw_Bps: float | None) -> RingAttention | None:
    """The ring attention of a chunk of ``layers`` layers whose layer kernels are ``ops``;
    None unless the plan rotates K/V (``cp_comm: p2p``, cp > 1)."""
    if plan.cp < 2 or plan.cp_comm != "p2p":
        return None
    steps = ring_attention_steps(model, plan.shard, plan.micro_batch, plan.seq_len,
                                 precision, recompute)
    fwd_step, bwd_step = (Comm(c.name, c.op, c.axis, c.bytes, layers)
                          for c in (steps["fwd"], steps["bwd"]))
    return RingAttention(plan.cp - 1, fwd_step, bwd_step,
                         _time(attention_core(ops["fwd"]), device, precision, mem_bw_Bps)
                         * layers,
                         _time([op for op in attention_core(ops["bwd"])
                                if not op.name.endswith("_wgrad")], device, precision,
                               mem_bw_Bps) * layers)


def _updated_params(model: ModelSpec, plan: ParallelPlan, stage: int) -> float:
    """Parameters whose optimizer state this rank updates (after ZeRO sharding)."""
    p = stage_parameters(model, plan, stage)
    if plan.zero == 0:
        return p.dense + p.expert
    dense_shards = max(1, plan.shard_group) * plan.cp
    expert_shards = max(1, min(plan.shard_group, plan.expert_dp))
    return p.dense / dense_shards + p.expert / expert_shards


@dataclass(frozen=True)
class OptimizerState:
    """What one rank's optimizer step touches: the parameters it updates and the bytes per
    parameter of its state (fp32 master copy and moments), gradient and parameter."""

    params: float
    state_B: float
    grad_B: float
    param_B: float

    @property
    def total_state_B(self) -> float:
        return self.params * self.state_B


def optimizer_state(model: ModelSpec, plan: ParallelPlan, stage: int, precision: str,
                    optimizer: str = "adam") -> OptimizerState:
    """The optimizer state of one rank of ``stage`` (ZeRO paper: fp32 master + 2 Adam moments
    = 12 bytes per parameter in mixed precision; one moment for SGD; no master in fp32)."""
    act_B, _ = element_bytes(precision)
    master = 0 if precision == "fp32" else 4
    moments = 2 if optimizer == "adam" else 1
    return OptimizerState(_updated_params(model, plan, stage), master + 4 * moments, act_B,
                          act_B)


def fp8_weight_casts(model: ModelSpec, plan: ParallelPlan, stage: int,
                     fp8: FP8Options) -> list:
    """The step's casts of the FP8 GEMM weights: TE casts each bf16 weight into its fp8
    cache on the first micro-batch of a step (Megatron-Core passes ``is_first_microbatch``)
    and reuses it for the others. With ``fp8.param_gather`` the optimizer writes its updated
    fp32 shard straight to fp8 (Megatron ``quantize_param_shard``) and, where the recipe
    needs it, the column-wise copy is made from the gathered fp8 weight."""
    weights = sum(stage_fp8_weights(model, plan, stage))
    if not fp8.param_gather:
        return [quantize_op("fp8_weight_cast", weights, fp8, weight=True)]
    shard = weights * _updated_params(model, plan, stage) / max(
        1.0, stage_parameters(model, plan, stage).total)
    ops = [OpCost("fp8_param_quantize", "elementwise", 3 * shard,
                  shard * (4 + fp8.wire_weight_B))]
    if fp8.copies > 1:
        ops.append(OpCost("fp8_weight_transpose", "elementwise", 0.0,
                          weights * (fp8.wire_weight_B + fp8.weight_copy_B / 2)))
    return ops


@calibrated_cache(maxsize=1024)
def optimizer_work(model: ModelSpec, plan: ParallelPlan, stage: int, device, precision: str,
                   optimizer: str = "adam", mem_bw_Bps: float | None = None,
                   states_on_device: bool = True, fp8: FP8Options | None = None) -> Work:
    """The optimizer step of one rank of ``stage`` on its device. With the states offloaded
    (``states_on_device=False``) the device memory sees only the gradient and parameter
    traffic; the states stream over the offload link (the program builder adds that).
    ``fp8``: the step's fp8 weight casts come with it (:func:`fp8_weight_casts`)."""
    ops = optimizer_ops(_updated_params(model, plan, stage), precision, optimizer)
    if not states_on_device:
        state = optimizer_state(model, plan, stage, precision, optimizer)
        ops = [replace(op, bytes=op.bytes - 2 * state.total_state_B) for op in ops]
    if fp8 is not None:
        ops = ops + fp8_weight_casts(model, plan, stage, fp8)
    return _time(ops, device, precision, mem_bw_Bps)


def activation_bytes(model: ModelSpec, plan: ParallelPlan, precision: str) -> float:
    """Bytes of activations (or their gradients) each rank sends to the next stage per
    micro-batch: the hidden state of its tokens, split over the tensor-parallel ranks. With
    sequence parallelism the tensor is already split; without it Megatron's scatter/gather
    optimisation (Narayanan et al. SC'21, Sec. 4.1, on by default) sends 1/tp from each rank
    and all-gathers over the fast intra-node links at the receiver
    (:func:`p2p_gather_bytes`)."""
    tokens = plan.micro_batch * plan.seq_len / plan.cp
    return tokens * model.hidden * element_bytes(precision)[0] / plan.tp


def p2p_gather_bytes(model: ModelSpec, plan: ParallelPlan, precision: str) -> float:
    """Size of the all-gather that rebuilds a received activation on the tensor-parallel
    group (scatter/gather without sequence parallelism); 0 when none is needed."""
    if plan.tp == 1 or plan.sp:
        return 0.0
    return activation_bytes(model, plan, precision) * plan.tp
