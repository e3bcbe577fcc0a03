"""The slots of one pipeline stage: what one micro-batch through one model chunk does, forward
or backward, and where each of its collectives goes.

A forward receives its input from the previous virtual stage (blocking, on the main stream;
without sequence parallelism Megatron's scatter/gather sends 1/tp of it and the receiver
all-gathers it over TP), computes, runs the chunk's tensor/context/expert-parallel
collectives (blocking, as Megatron does without ``--tp-comm-overlap``; with
``overlap.tp_comm`` the TP ones run beside the compute), and sends its output on a side stream
(like ``isend``); a backward does the same in reverse. Data-parallel traffic joins the slots
as :mod:`~clustersim.step.dataparallel` says: ZeRO 3 splits every slot into pieces with
prefetched gathers and bucketed reduce-scatters; the first forward of each chunk waits for
its parameter buckets, the last backward of each chunk launches its gradient buckets; ZeRO 2
reduce-scatters after every backward.

>>> from clustersim.hardware import get_device
>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.workload import ParallelPlan, get_model
>>> plan = ParallelPlan(tp=2, pp=2, stage_layers=(16, 16), seq_len=8192, num_microbatches=4)
>>> ctx = StageContext(get_model("llama3-8b"), plan, TrainingConfig(global_batch=4),
...                    get_device("h100-sxm-80gb"), 3.35e12)
>>> slots, order, prologue = stage_slots(ctx, 1)
>>> [f"{slots[s].kind}{m}" for s, m in order]
['F0', 'B0', 'F1', 'B1', 'F2', 'B2', 'F3', 'B3']
>>> print(slots[0].receive)
recv act from stage 0 32.0 MiB (compute)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from clustersim.step.dataparallel import (BUCKETS, ZERO3_PIECES, StageGradients,
                                          across_blocks, split_count, stage_gradients)
from clustersim.step.schedules import next_virtual_stage, previous_virtual_stage, schedule
from clustersim.step.stepplan import Call, Compute, Dep, Family, Piece, Slot, Transfer
from clustersim.workload.chunks import ChunkWork, activation_bytes, chunk_work, p2p_gather_bytes
from clustersim.workload.groups import axis_of, group_size
from clustersim.workload.plan import ParallelPlan

__all__ = ["StageContext", "stage_slots"]


@dataclass(frozen=True)
class StageContext:
    """What every stage of one step is planned from: the model, the checked plan, the
    experiment's training section, the device and the bandwidth of its memory edges."""

    model: object
    plan: ParallelPlan
    training: object
    device: object
    mem_bw_Bps: float

    def chunk(self, stage: int, chunk: int) -> ChunkWork:
        """The work of ``chunk`` of ``stage`` for one micro-batch."""
        t = self.training
        return chunk_work(self.model, self.plan, chunk * self.plan.pp + stage, self.device,
                          t.precision, t.recompute, self.mem_bw_Bps, attention=t.attention)

    def gradients(self, stage: int) -> StageGradients:
        return stage_gradients(self.model, self.plan, stage, self.training.precision)


def _intrinsic(ctx: StageContext, comms) -> tuple[Call, ...]:
    """A chunk's TP/CP/EP collectives after its compute: blocking, or TP beside the compute."""
    out = []
    for comm in comms:
        axis = axis_of(comm)
        if group_size(ctx.plan, axis) < 2:
            continue
        overlapped = ctx.training.overlap.tp_comm and comm.axis == "tp"
        out.append(Call(comm.name, comm.op, Family(axis), comm.bytes,
                        Dep.OVERLAPPED if overlapped else Dep.BLOCKING,
                        stream="tp" if overlapped else "compute", count=comm.count,
                        category=comm.axis))
    return tuple(out)


def _pieces(ctx: StageContext, kind: str, chunk: int, work, grads: StageGradients,
            waits: list[tuple[int, ...]], buckets: tuple[Call, ...]) -> tuple[Piece, ...]:
    """The slot's compute in pieces: ZeRO 3 pieces of layers, the parameter buckets a first
    forward waits for (``waits[i]``: prologue indices), the gradient buckets a last
    backward launches (``buckets``: each call's share of the chunk), else one piece."""
    body = work.fwd if kind == "F" else work.bwd
    if grads.sharded_layers:
        n = max(1, min(work.layers, ZERO3_PIECES))
    elif waits or buckets:
        n = BUCKETS
    else:
        n = 1
    layer_gathers = [replace(c, dep=Dep.PREFETCHED, count=work.layers)
                     for c in grads.layer_gathers]
    layer_reduces = [replace(c, dep=Dep.BUCKETED, count=work.layers)
                     for c in grads.layer_reduces] if kind == "B" else []
    pieces = []
    for i in range(n):
        prefetch = tuple(p for c in layer_gathers if (p := split_count(c, n, i)) is not None)
        then = [p for c in layer_reduces if (p := split_count(c, n, i)) is not None]
        for bucket in buckets:
            then.append(bucket)
            after = across_blocks(ctx.plan, bucket)
            if after is not None:
                then.append(after)
        label = f"{kind} c{chunk}" + (f" {i + 1}/{n}" if n > 1 else "")
        pieces.append(Piece(Compute(body * (1 / n), label, "fwd" if kind == "F" else "bwd",
                                    waits_for=waits[i] if waits else ()),
                            prefetch, tuple(then)))
    return tuple(pieces)


def _transfers(ctx: StageContext, kind: str, stage: int, chunk: int):
    """The slot's receive (with its TP all-gather, when needed) and send."""
    plan = ctx.plan
    size = activation_bytes(ctx.model, plan, ctx.training.precision)
    here = chunk * plan.pp + stage
    forward = kind == "F"
    before = previous_virtual_stage(stage, chunk, plan.pp)
    after = next_virtual_stage(stage, chunk, plan.pp, plan.virtual_stages)
    source, target = (before, after) if forward else (after, before)
    what = "act" if forward else "grad"
    receive = send = None
    calls: tuple[Call, ...] = ()
    if source is not None:
        receive = Transfer("recv", source[0], what, here, size)
        gather_B = p2p_gather_bytes(ctx.model, plan, ctx.training.precision)
        if gather_B and group_size(plan, "tp") > 1:
            calls = (Call("p2p_all_gather", "all_gather", Family("tp"), gather_B,
                          Dep.BLOCKING, category="tp"),)
    if target is not None:
        send = Transfer("send", target[0], what, target[1] * plan.pp + target[0], size,
                        stream="send-next" if forward else "send-prev")
    return receive, calls, send


def _prologue(ctx: StageContext, stage: int, grads: StageGradients, works
              ) -> tuple[tuple[Call, ...], dict[int, list[tuple[int, ...]]]]:
    """ZeRO 1/2 with ``overlap.param_gather``: every chunk's share of the parameter
    all-gathers, in buckets, from the step's start; per chunk, the prologue indices each
    piece of its first forward waits for."""
    if not (grads.gathers and ctx.training.overlap.param_gather):
        return (), {}
    here = sum(w.layers for w in works)
    calls, waits = [], {}
    for c, w in enumerate(works):
        per_piece: list[list[int]] = [[] for _ in range(BUCKETS)]
        for g in grads.gathers:
            for b in range(BUCKETS):
                per_piece[b].append(len(calls))
                calls.append(replace(g, bytes=g.bytes * w.layers / here / BUCKETS,
                                     dep=Dep.QUEUED))
        waits[c] = [tuple(x) for x in per_piece]
    return tuple(calls), waits


def _gradient_buckets(ctx: StageContext, grads: StageGradients, share: float
                      ) -> tuple[Call, ...]:
    """One piece's gradient buckets of a chunk's last backward (``share`` of the stage's
    gradients): on the data-parallel stream, or blocking without ``overlap.grad_reduce``."""
    overlap = ctx.training.overlap.grad_reduce
    return tuple(replace(r, bytes=r.bytes * share / BUCKETS,
                         dep=Dep.BUCKETED if overlap else Dep.BLOCKING,
                         stream="dp" if overlap else "compute") for r in grads.reduces)


@lru_cache(maxsize=4096)
def _first_and_last(name: str, p: int, m: int, v: int, stage: int) -> tuple[dict, dict]:
    """Per chunk, the micro-batch of ``stage``'s first forward and of its last backward."""
    first_f, last_b = {}, {}
    for kind, c, mb in schedule(name, p, m, v)[stage]:
        if kind == "F":
            first_f.setdefault(c, mb)
        else:
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
    prologue, waits = _prologue(ctx, stage, grads, works)
    actions = schedule(plan.schedule, plan.pp, plan.num_microbatches, v)[stage]
    first_f, last_b = _first_and_last(plan.schedule, plan.pp, plan.num_microbatches, v, stage)
    index: dict[tuple, int] = {}
    slots: list[Slot] = []
    order = []
    for kind, c, m in actions:
        first = kind == "F" and m == first_f[c] and c in waits
        last = kind == "B" and m == last_b[c] and bool(grads.reduces)
        key = (kind, c, first, last)
        if key not in index:
            index[key] = len(slots)
            slots.append(_slot(ctx, stage, kind, c, works[c], grads, waits[c] if first else [],
                               _gradient_buckets(ctx, grads, works[c].layers / here)
                               if last else (), works[c].layers / here))
        order.append((index[key], m))
    return tuple(slots), tuple(order), prologue


def _slot(ctx, stage, kind, c, work, grads, waits, buckets, share) -> Slot:
    receive, receive_calls, send = _transfers(ctx, kind, stage, c)
    calls = _intrinsic(ctx, work.fwd_comms if kind == "F" else work.bwd_comms)
    if kind == "B":   # ZeRO 2: this micro-batch's gradients, reduce-scattered
        calls += tuple(replace(r, bytes=r.bytes * share) for r in grads.per_microbatch)
    pieces = _pieces(ctx, kind, c, work, grads, waits, buckets)
    return Slot(kind, c, pieces, calls, receive, receive_calls, send)
