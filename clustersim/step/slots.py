"""The slots of one pipeline stage: what one micro-batch through one model chunk does, forward
or backward, and where each of its collectives goes.

A forward receives its input from the previous virtual stage (blocking, on the main stream;
without sequence parallelism Megatron's scatter/gather sends 1/tp of it and the receiver
all-gathers it over TP), computes, runs the chunk's tensor/context/expert-parallel
collectives (blocking; with ``overlap.tp_comm`` the TP ones run beside the compute, and
Megatron-Core's backward overlaps its TP collectives with the neighbouring GEMMs), and sends
its output, beside the next compute (``overlap.p2p``) or blocking; a backward does the same
in reverse. Ring attention (``cp_comm: p2p``) is the exception among the CP collectives: its
K/V rotation hides under the attention core alone, so the core becomes cp pieces of its own
with the ring steps prefetched between them (:func:`_ring_pieces`). Data-parallel traffic
joins the slots as :mod:`~clustersim.step.dataparallel`
says: ZeRO 3 splits every slot into pieces with prefetched gathers and bucketed
reduce-scatters; the first forward of each chunk waits for its parameter buckets, the last
backward of each chunk launches its gradient buckets; ZeRO 2 reduces after every backward.

>>> from clustersim.hardware import get_device
>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.workload import ParallelPlan, get_model
>>> plan = ParallelPlan(tp=2, pp=2, stage_layers=(16, 16), seq_len=8192, num_microbatches=4)
>>> ctx = StageContext.of(get_model("llama3-8b"), plan, TrainingConfig(global_batch=4),
...                       get_device("h100-sxm-80gb"), 3.35e12)
>>> slots, order, prologue = stage_slots(ctx, 1)
>>> [f"{slots[s].kind}{m}" for s, m in order]
['F0', 'B0', 'F1', 'B1', 'F2', 'B2', 'F3', 'B3']
>>> print(slots[0].receive)
recv act from stage 0 32.0 MiB (compute)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from clustersim.step.dataparallel import (MAX_PIECES, StageGradients, across_blocks,
                                          chunk_buckets, split_count, stage_gradients)
from clustersim.step.frameworks import FRAMEWORKS, Framework, Overlap, effective_overlap
from clustersim.step.schedules import (model_stage, next_virtual_stage, paired_actions,
                                       previous_virtual_stage, schedule, splits_backward)
from clustersim.step.stepplan import Call, Compute, Dep, Family, Piece, Slot, Transfer
from clustersim.workload.chunks import (ChunkWork, RingAttention, activation_bytes, chunk_work,
                                       p2p_gather_bytes)
from clustersim.workload.ops import Work
from clustersim.workload.fp8 import FP8Options, fp8_options
from clustersim.workload.groups import axis_of, group_size
from clustersim.workload.plan import ParallelPlan

__all__ = ["StageContext", "stage_slots"]


@dataclass(frozen=True)
class StageContext:
    """What every stage of one step is planned from: the model, the checked plan, the
    experiment's training section, the device and the bandwidth of its memory edges, the
    framework and the overlap flags in force."""

    model: object
    plan: ParallelPlan
    training: object
    device: object
    mem_bw_Bps: float
    framework: Framework
    overlap: Overlap
    fp8: FP8Options | None = None

    @classmethod
    def of(cls, model, plan: ParallelPlan, training, device, mem_bw_Bps: float):
        """The context of ``training``'s framework, overlap flags and FP8 recipe."""
        framework = FRAMEWORKS[training.framework]
        return cls(model, plan, training, device, mem_bw_Bps, framework,
                   effective_overlap(framework, training.overlap, plan.zero),
                   fp8_options(training, device))

    def chunk(self, stage: int, chunk: int) -> ChunkWork:
        """The work of ``chunk`` of ``stage`` for one micro-batch."""
        t, plan = self.training, self.plan
        layers = plan.model_stage_layers   # chunk_work indexes the model's stages in order
        plan = replace(plan, virtual_stages=len(layers) // plan.pp, stage_layers=layers)
        # chunk_work reads the layer sharding, micro-batch, sequence and stage layers alone:
        # the rest of the plan is set to its defaults so that plans that differ in their
        # batch, data parallelism or ZeRO share the cached work (bent for speed)
        plan = replace(plan, dp=1, shard_group=0, zero=0, num_microbatches=1, global_batch=1,
                       placement=ParallelPlan.placement)
        return chunk_work(self.model, plan, model_stage(self.plan.schedule, stage, chunk,
                                                        self.plan.pp),
                          self.device, t.precision, t.recompute, self.mem_bw_Bps,
                          attention=t.attention, fp8=self.fp8)

    @property
    def gradient_kind(self) -> str:
        """The slot kind that produces the weight gradients: ``W`` where the schedule splits
        the backward, else ``B``."""
        return "W" if splits_backward(self.plan.schedule) else "B"

    def gradients(self, stage: int) -> StageGradients:
        return stage_gradients(self.model, self.plan, stage, self.training.precision,
                               self.framework, self.fp8)


def _intrinsic(ctx: StageContext, kind: str, comms, paired: bool = False
               ) -> tuple[Call, ...]:
    """A chunk's TP/CP/EP collectives after its compute: blocking, or TP beside the compute
    (``overlap.tp_comm``; the backward of a framework that overlaps it with its GEMMs), or
    the expert-parallel all-to-alls beside it in a DualPipe forward-backward pair
    (``paired``: DeepSeek-V3 hides dispatch and combine under the other chunk's compute;
    TP, which DeepSeek-V3 does not use, stays as ``overlap.tp_comm`` says)."""
    out = []
    beside = ctx.overlap.tp_comm or (kind == "B" and ctx.framework.tp_backward_overlap)
    for comm in comms:
        axis = axis_of(comm)
        if group_size(ctx.plan, axis) < 2:
            continue
        overlapped = (paired and comm.axis == "ep") or (beside and comm.axis == "tp")
        out.append(Call(comm.name, comm.op, Family(axis), comm.bytes,
                        Dep.OVERLAPPED if overlapped else Dep.BLOCKING,
                        stream=comm.axis if overlapped else "compute", count=comm.count,
                        category=comm.axis))
    return tuple(out)


def _zero3_calls(ctx: StageContext, kind: str, work, grads: StageGradients, last: bool):
    """ZeRO 3's gathers and reduce-scatters of one slot, ``count`` over its layers."""
    plan, fw = ctx.plan, ctx.framework
    gather = kind == "F" or (kind == "B" and (plan.pp == 1 or fw.zero3_regather_with_pp))
    reduce = kind == ctx.gradient_kind and (plan.pp == 1 or fw.bucket_elements is not None
                              or fw.zero3_regather_with_pp or last)
    gathers = [replace(c, dep=Dep.PREFETCHED, count=c.count * work.layers)
               for c in grads.layer_gathers] if gather else []
    reduces = [replace(c, dep=Dep.BUCKETED, count=work.layers)
               for c in grads.layer_reduces] if reduce else []
    return gathers, reduces


def _pieces(ctx: StageContext, kind: str, chunk: int, work, grads: StageGradients,
            waits: list[tuple[int, ...]], buckets: tuple[Call, ...], n_buckets: int,
            last: bool) -> tuple[Piece, ...]:
    """The slot's compute in pieces: ZeRO 3 units, the parameter buckets a first forward
    waits for (``waits[i]``: prologue indices), the ``n_buckets`` gradient buckets a last
    backward launches (``buckets``: one piece's share each), else one piece."""
    body = {"F": work.fwd, "W": work.wgrad,
            "B": work.dgrad if ctx.gradient_kind == "W" else work.bwd}[kind]
    ring = _ring_pieces(ctx, kind, chunk, work.ring)
    if ring:   # the attention blocks are pieces of their own, after the rest
        body = body + sum((p.compute.work for p in ring), Work()) * -1.0
    gathers, reduces = _zero3_calls(ctx, kind, work, grads, last) if grads.sharded_layers \
        else ([], [])
    if gathers or reduces:
        n = max(1, min(max(c.count for c in gathers + reduces), MAX_PIECES))
    else:
        n = len(waits) or (n_buckets if buckets else 1)
    pieces = []
    for i in range(n):
        prefetch = tuple(p for c in gathers if (p := split_count(c, n, i)) is not None)
        then = [p for c in reduces if (p := split_count(c, n, i)) is not None]
        for bucket in buckets:
            then.append(bucket)
            after = across_blocks(ctx.plan, bucket)
            if after is not None:
                then.append(after)
        label = f"{kind} c{chunk}" + (f" {i + 1}/{n}" if n > 1 else "")
        pieces.append(Piece(Compute(body * (1 / n), label, "fwd" if kind == "F" else "bwd",
                                    waits_for=waits[i] if waits else ()),
                            prefetch, tuple(then)))
    return tuple(pieces) + ring


def _ring_pieces(ctx: StageContext, kind: str, chunk: int, ring: RingAttention | None
                 ) -> tuple[Piece, ...]:
    """Ring attention (``cp_comm: p2p``) in a forward or backward: the chunk's attention core
    as cp pieces, one attention block of every layer each, and before each but the first a
    ring step of every layer (``count`` = layers), prefetched: it starts with the block
    before, and its block waits for it (the K/V it needs). Only the attention core hides the
    rotation, not the GEMMs around it, so the rotation's exposed time is the sum over steps
    of max(0, step - block), layers x max(0, c - a) for identical layers. The blocks follow
    the rest of the slot's compute (its ZeRO-3 pieces, bucket pieces, or one piece), so they
    compose with ZeRO-3's prefetched gathers and the gradient buckets without sharing their
    pieces: the gathers hide under the GEMMs only, and a last backward's gradient buckets
    are posted before its attention blocks (both a simplification of the layer-by-layer
    order)."""
    if ring is None or kind == "W":
        return ()
    core, step = (ring.fwd_core, ring.fwd_step) if kind == "F" else (ring.bwd_core,
                                                                     ring.bwd_step)
    blocks = ring.steps + 1
    call = Call(step.name, step.op, Family(step.axis), step.bytes, Dep.PREFETCHED,
                stream=step.axis, count=step.count, category=step.axis)
    return tuple(Piece(Compute(core * (1 / blocks), f"{kind} c{chunk} attention "
                                                    f"{i + 1}/{blocks}",
                               "fwd" if kind == "F" else "bwd"),
                       (call,) if i else ())
                 for i in range(blocks))


def _transfers(ctx: StageContext, kind: str, stage: int, chunk: int):
    """The slot's receive (with its TP all-gather, when needed) and send; with
    ``overlap.p2p`` (Megatron: interleaved schedules only) the receive is posted a slot
    ahead, so it can arrive while the previous slot computes."""
    plan = ctx.plan
    size = activation_bytes(ctx.model, plan, ctx.training.precision)
    here = chunk * plan.pp + stage
    forward = kind == "F"
    before = previous_virtual_stage(stage, chunk, plan.pp, plan.schedule)
    after = next_virtual_stage(stage, chunk, plan.pp, plan.virtual_stages, plan.schedule)
    source, target = (before, after) if forward else (after, before)
    what = "act" if forward else "grad"
    ahead = ctx.overlap.p2p and (plan.virtual_stages > 1 or
                                 ctx.framework.name != "megatron-core")
    receive = send = None
    calls: tuple[Call, ...] = ()
    # a stream carries one kind of tensor from (or to) one neighbour, in the order both ends
    # post it; DualPipe and ZB-V send activations and gradients both ways, so their streams
    # also name the neighbour
    bidirectional = plan.schedule in ("dualpipe", "zb-v")
    # ZB-V's turn (chunk 0 to chunk 1 of the last stage) stays on the device: the main
    # stream's order carries it
    source = None if source is not None and source[0] == stage else source
    target = None if target is not None and target[0] == stage else target
    if source is not None:
        side = f"{what}-{'prev' if source[0] < stage else 'next'}" if bidirectional else what
        receive = Transfer("recv", source[0], what, here, size,
                           stream=f"recv-{side}" if ahead else "compute",
                           dep=Dep.PREFETCHED if ahead else Dep.BLOCKING)
        gather_B = p2p_gather_bytes(ctx.model, plan, ctx.training.precision)
        if gather_B and group_size(plan, "tp") > 1:
            calls = (Call("p2p_all_gather", "all_gather", Family("tp"), gather_B,
                          Dep.BLOCKING, category="tp"),)
    if target is not None:
        towards = "next" if (target[0] > stage if bidirectional else forward) else "prev"
        send = Transfer("send", target[0], what, target[1] * plan.pp + target[0], size,
                        stream=f"send-{what}-{towards}" if bidirectional else f"send-{towards}",
                        dep=Dep.SIDE)
    return receive, calls, send


def _prologue(ctx: StageContext, grads: StageGradients, works, buckets: list[int]
              ) -> tuple[tuple[Call, ...], dict[int, list[tuple[int, ...]]]]:
    """ZeRO 1/2 with ``overlap.param_gather``: every chunk's share of the parameter
    all-gathers, in its ``buckets[c]`` buckets, from the step's start; per chunk, the
    prologue indices each piece of its first forward waits for."""
    if not (grads.gathers and ctx.overlap.param_gather):
        return (), {}
    here = sum(w.layers for w in works)
    calls, waits = [], {}
    for c, w in enumerate(works):
        per_piece: list[list[int]] = [[] for _ in range(buckets[c])]
        for g in grads.gathers:
            for b in range(buckets[c]):
                per_piece[b].append(len(calls))
                calls.append(replace(g, bytes=g.bytes * w.layers / here / buckets[c],
                                     dep=Dep.QUEUED))
        waits[c] = [tuple(x) for x in per_piece]
    return tuple(calls), waits


def _gradient_buckets(ctx: StageContext, grads: StageGradients, share: float, n: int
                      ) -> tuple[Call, ...]:
    """One piece's gradient buckets of a chunk's last backward (``share`` of the stage's
    gradients in ``n`` buckets), on the data-parallel stream (``overlap.grad_reduce``)."""
    return tuple(replace(r, bytes=r.bytes * share / n, dep=Dep.BUCKETED, stream="dp")
                 for r in grads.reduces)


@lru_cache(maxsize=4096)
def _first_and_last(name: str, p: int, m: int, v: int, stage: int) -> tuple[dict, dict]:
    """Per chunk, the micro-batch of ``stage``'s first forward and of its last backward (its
    last weight gradient, where the schedule splits the backward)."""
    first_f, last_b = {}, {}
    last_kind = "W" if splits_backward(name) else "B"
    for kind, c, mb in schedule(name, p, m, v)[stage]:
        if kind == "F":
            first_f.setdefault(c, mb)
        elif kind == last_kind:
            last_b[c] = mb
    return first_f, last_b


def stage_slots(ctx: StageContext, stage: int):
    """``(slots, order, prologue)`` of ``stage``: its distinct slots, the schedule's order of
    ``(slot index, micro-batch)``, and the calls that start with the step."""
    plan = ctx.plan
    v = plan.virtual_stages
    works = [ctx.chunk(stage, c) for c in range(v)]
    here = sum(w.layers for w in works)
    grads = ctx.gradients(stage)
    elements = sum(c.bytes for c in grads.reduces) / ctx.framework.reduce_bytes(
        ctx.training.precision)
    buckets = [chunk_buckets(ctx.framework, plan, stage, c, elements * w.layers / here,
                             ctx.overlap.grad_reduce) for c, w in enumerate(works)]
    prologue, waits = _prologue(ctx, grads, works, buckets)
    keys, order = _slot_order(plan.schedule, plan.pp, plan.num_microbatches, v, stage,
                              frozenset(waits), ctx.gradient_kind, ctx.overlap.grad_reduce)
    slots = []
    for kind, c, first, last, paired in keys:
        share = works[c].layers / here
        slots.append(_slot(ctx, stage, kind, c, works[c], grads, waits[c] if first else [],
                           _gradient_buckets(ctx, grads, share, buckets[c]) if last else (),
                           buckets[c], last, share, paired))
    return tuple(slots), order, prologue


@lru_cache(maxsize=1024)
def _slot_order(name: str, p: int, m: int, v: int, stage: int, waiting: frozenset,
                gradient_kind: str, grad_overlap: bool) -> tuple[tuple, tuple]:
    """``(keys, order)`` of a stage's schedule: the distinct slots as ``(kind, chunk, first,
    last, paired)`` in order of first appearance, and the ``(key index, micro-batch)`` of
    every action (cached: a sweep repeats the same schedules with new prices). Bent for
    speed: numpy over the actions (a schedule has thousands) instead of a loop."""
    kinds, chunk, mb = _action_arrays(name, p, m, v, stage)
    first_f, last_b = _first_and_last(name, p, m, v, stage)
    pairs = paired_actions(name, p, m, v)[stage]
    at_first = np.array([first_f.get(c, -1) for c in range(v)], np.int64)[chunk]
    at_last = np.array([last_b.get(c, -1) for c in range(v)], np.int64)[chunk]
    first = (kinds == _KINDS.index("F")) & (mb == at_first) & np.isin(chunk, list(waiting))
    # a chunk's last backward reduces its gradient buckets as they fill (overlap); without
    # overlap the reduce waits for the whole pipeline (stage_epilogue)
    last = (kinds == _KINDS.index(gradient_kind)) & (mb == at_last) & bool(grad_overlap)
    paired = np.zeros(len(mb), np.bool_)
    paired[list(pairs)] = True
    code = (((kinds * v + chunk) * 2 + first) * 2 + last) * 2 + paired
    distinct, where, inverse = np.unique(code, return_index=True, return_inverse=True)
    rank = np.empty(len(distinct), np.int64)   # a key's index: its order of first appearance
    rank[np.argsort(where, kind="stable")] = np.arange(len(distinct))
    keys = [None] * len(distinct)
    for i, k in zip(rank.tolist(), where.tolist()):
        keys[i] = (_KINDS[kinds[k]], int(chunk[k]), bool(first[k]), bool(last[k]),
                   bool(paired[k]))
    return tuple(keys), tuple(zip(rank[inverse.ravel()].tolist(), mb.tolist()))


_KINDS = ("F", "B", "W")


@lru_cache(maxsize=1024)
def _action_arrays(name: str, p: int, m: int, v: int, stage: int):
    """A stage's schedule as arrays: each action's kind (index in ``_KINDS``), chunk and
    micro-batch."""
    actions = schedule(name, p, m, v)[stage]
    kinds = np.array([_KINDS.index(k) for k, _, _ in actions], np.int64)
    rest = np.array([(c, b) for _, c, b in actions], np.int64).reshape(-1, 2)
    return kinds, rest[:, 0], rest[:, 1]


def _slot(ctx, stage, kind, c, work, grads, waits, buckets, n_buckets, last, share,
          paired=False) -> Slot:
    # a weight gradient receives and sends nothing, and its GEMMs need no TP collective
    # (the input gradient's all-reduce belongs to ``B``)
    receive, receive_calls, send = _transfers(ctx, kind, stage, c) if kind != "W" \
        else (None, (), None)
    calls = _intrinsic(ctx, kind, {"F": work.fwd_comms, "B": work.bwd_comms}.get(kind, ()),
                       paired)
    if kind == ctx.gradient_kind:   # ZeRO 2: this micro-batch's gradients, reduced
        dep = Dep.SIDE if ctx.overlap.grad_reduce else Dep.BLOCKING
        calls += tuple(replace(r, bytes=r.bytes * share, dep=dep,
                               stream="dp" if dep == Dep.SIDE else "compute")
                       for r in grads.per_microbatch)
    pieces = _pieces(ctx, kind, c, work, grads, waits, buckets, n_buckets, last)
    return Slot(kind, c, pieces, calls, receive, receive_calls, send)
