"""What one pipeline stage does: compute time and collectives of a micro-batch through each of
its model chunks, its optimizer step and its data-parallel gradient traffic.

The program builder (flow fidelity) and the analytic step model both read these, so the two
fidelities price the same work. Kernels are timed by ``clustersim.hardware.compute`` on the
cluster's device with the bandwidth of its memory edges; identical back-to-back collectives of
a chunk's layers are merged into one with a repeat count (``Comm.count``).

>>> from clustersim.workload import get_model, ParallelPlan
>>> from clustersim.hardware import get_device
>>> plan = ParallelPlan(tp=8, pp=2, dp=1, sp=True, stage_layers=(48, 48), seq_len=2048)
>>> w = chunk_work(get_model("gpt3-175b"), plan, 0, get_device("h100-sxm-80gb"), "bf16", "none")
>>> w.layers, [(c.op, c.count) for c in w.fwd_comms]
(48, [('all_gather', 96), ('reduce_scatter', 97)])
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass

from clustersim.hardware.compute import op_time_s
from clustersim.workload.comms import (embedding_comms, gradient_comms, layer_comms,
                                       logits_comms)
from clustersim.workload.flops import embedding_ops, layer_ops, logits_ops, optimizer_ops
from clustersim.workload.memory import stage_parameters
from clustersim.workload.models import ModelSpec
from clustersim.workload.plan import ParallelPlan

__all__ = ["Work", "Comm", "ChunkWork", "chunk_work", "optimizer_work", "dp_comms",
           "activation_bytes", "ZERO3_PREFIX"]

ZERO3_PREFIX = "zero3"  # layer collectives that FSDP prefetches / overlaps


@dataclass(frozen=True)
class Work:
    """Compute on one rank: seconds, FLOPs executed, bytes moved to and from memory."""

    seconds: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(self.seconds + other.seconds, self.flops + other.flops,
                    self.bytes + other.bytes)

    def __mul__(self, k: float) -> Work:
        return Work(self.seconds * k, self.flops * k, self.bytes * k)


@dataclass(frozen=True)
class Comm:
    """``count`` back-to-back collectives of ``bytes`` each on the ``axis`` group."""

    name: str
    op: str
    axis: str
    bytes: float
    count: int = 1

    @property
    def prefetched(self) -> bool:
        return self.name.startswith(ZERO3_PREFIX) and self.op == "all_gather"


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


def _time(ops, device, precision: str, mem_bw_Bps: float | None) -> Work:
    total = Work()
    for op in ops:
        dtype = op.dtype or precision
        total = total + Work(op_time_s(op, device, dtype, mem_bw_Bps), op.flops, op.bytes)
    return total


def _merge(comms, times: int = 1) -> OrderedDict:
    merged: OrderedDict = OrderedDict()
    for c in comms:
        key = (c.name.split("_")[0] if c.name.startswith(ZERO3_PREFIX) else "", c.op, c.axis,
               c.bytes)
        name = merged[key].name if key in merged else c.name
        count = merged[key].count + times if key in merged else times
        merged[key] = Comm(name, c.op, c.axis, c.bytes, count)
    return merged


@functools.lru_cache(maxsize=4096)
def chunk_work(model: ModelSpec, plan: ParallelPlan, virtual_stage: int, device,
               precision: str, recompute: str, mem_bw_Bps: float | None = None, *,
               attention: str = "flash") -> ChunkWork:
    """Compute and collectives of one micro-batch through ``virtual_stage`` (pipeline order):
    its layers, plus the embedding on the first and the output layer and loss on the last.
    ``attention`` is the experiment's ``training.attention`` (``flash`` or ``materialized``,
    see :func:`~clustersim.workload.flops.layer_ops`); a device without flash-attention
    kernels refuses ``flash`` with an InputError."""
    shard, b, s = plan.shard, plan.micro_batch, plan.seq_len
    layers = plan.stage_layers[virtual_stage]
    ops = layer_ops(model, shard, b, s, precision, recompute, attention=attention)
    comms = layer_comms(model, shard, b, s, precision, recompute, plan.zero)
    layer_fwd = _time(ops["fwd"], device, precision, mem_bw_Bps)
    layer_bwd = _time(ops["bwd"], device, precision, mem_bw_Bps)
    fwd, bwd = layer_fwd * layers, layer_bwd * layers
    fwd_comms = _merge(comms["fwd"], layers)
    bwd_comms = _merge(comms["bwd"], layers)
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
        for c in _merge(extra_comms["fwd"]).values():
            key = ("", c.op, c.axis, c.bytes)
            fwd_comms[key] = Comm(c.name, c.op, c.axis, c.bytes,
                                  c.count + (fwd_comms[key].count if key in fwd_comms else 0))
        for c in _merge(extra_comms["bwd"]).values():
            key = ("", c.op, c.axis, c.bytes)
            bwd_comms[key] = Comm(c.name, c.op, c.axis, c.bytes,
                                  c.count + (bwd_comms[key].count if key in bwd_comms else 0))
    return ChunkWork(layers, fwd, bwd, tuple(fwd_comms.values()), tuple(bwd_comms.values()),
                     layer_fwd, layer_bwd)


def _updated_params(model: ModelSpec, plan: ParallelPlan, stage: int) -> float:
    """Parameters whose optimizer state this rank updates (after ZeRO sharding)."""
    p = stage_parameters(model, plan, stage)
    if plan.zero == 0:
        return p.dense + p.expert
    dense_shards = max(1, plan.shard_group) * plan.cp
    expert_shards = max(1, min(plan.shard_group, plan.expert_dp))
    return p.dense / dense_shards + p.expert / expert_shards


@functools.lru_cache(maxsize=1024)
def optimizer_work(model: ModelSpec, plan: ParallelPlan, stage: int, device, precision: str,
                   optimizer: str = "adam", mem_bw_Bps: float | None = None) -> Work:
    """The optimizer step of one rank of ``stage``."""
    ops = optimizer_ops(_updated_params(model, plan, stage), precision, optimizer)
    return _time(ops, device, precision, mem_bw_Bps)


@functools.lru_cache(maxsize=1024)
def dp_comms(model: ModelSpec, plan: ParallelPlan, stage: int, precision: str
             ) -> dict[str, tuple]:
    """Data-parallel gradient collectives of ``stage`` (per micro-batch and per step)."""
    p = stage_parameters(model, plan, stage)
    comms = gradient_comms(p.dense, p.expert, min(plan.zero, 2), precision,
                           p.tied_embedding if plan.pp > 1 else 0.0)
    if plan.zero >= 3:  # the per-layer collectives carry everything except tied embeddings
        comms = {"microbatch": (), "step": tuple(c for c in comms["step"] if c.axis == "pp")}
    return {k: tuple(Comm(c.name, c.op, c.axis, c.bytes) for c in v) for k, v in comms.items()}


def activation_bytes(model: ModelSpec, plan: ParallelPlan, precision: str) -> float:
    """Bytes of activations (or their gradients) a stage sends to the next per micro-batch:
    the hidden state of its tokens, divided by tp under sequence parallelism."""
    from clustersim.workload.flops import element_bytes

    tokens = plan.micro_batch * plan.seq_len / plan.cp
    per_rank = tokens * model.hidden * element_bytes(precision)[0]
    return per_rank / plan.tp if plan.sp and plan.tp > 1 else per_rank
