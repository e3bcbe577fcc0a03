"""The step plan, lowered op by op for one simulated rank: the one reading of a StagePlan that
both fidelities share.

:func:`lower_stage` is a generator: it yields a :class:`Request` for every op of the rank in
posting order, each with the handles of the ops it depends on, and receives the new op's
handle back. The flow fidelity answers with op ids of a Program (and the engine times them);
the analytic fidelity answers with end times, computed on the spot from uncontended prices.
So what each dependency kind of :mod:`clustersim.step.stepplan` means is written here once:

- an op on the main stream also becomes the stream's latest op (``main``);
- ``blocking``: after ``main``; ``side`` and ``bucketed``: after ``main``, on their stream;
  ``chained``: after the previous item; ``queued``: no dependency (its stream orders it);
  ``drain``: after ``main`` and the latest data-parallel op;
- ``prefetched``: after the op that preceded the previous compute piece; the next compute
  waits for it; ``overlapped``: after the op that preceded the slot's compute, and the slot
  joins it (a zero-time compute on the main stream) before its first side call or at its end;
- a compute also waits for the items its ``waits_for`` names (prologue calls in a slot,
  earlier items in the epilogue);
- a ``prefetched`` receive is posted on its own stream after the op that preceded the
  previous slot's compute, and the slot joins it before anything else.

A send's handle is never depended on (nothing waits for a send but the next send on its
stream), so a fidelity may answer a send before it knows when the send ends.

>>> from clustersim.step.stepplan import Compute, Piece, Slot, StagePlan
>>> from clustersim.workload.ops import Work
>>> stage = StagePlan(0, 1, (Slot("F", 0, (Piece(Compute(Work(1.0), "F c0")),)),), ((0, 0),))
>>> gen = lower_stage(stage)
>>> request = next(gen)
>>> request.kind, request.item.label, request.tag
('compute', 'F c0', ('slot', 0, 'piece', 0))
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from clustersim.step.stepplan import MAIN, Call, Compute, Dep, Offload, Slot, StagePlan
from clustersim.workload.ops import Work

__all__ = ["Request", "Registers", "lower_stage", "lower_prologue", "lower_slot",
           "lower_epilogue", "JOIN"]

DP_STREAM = "dp"
JOIN = Compute(Work(), "joins overlapped calls")


@dataclass(frozen=True)
class Request:
    """One op to post: ``kind`` (``compute``, ``call``, ``transfer``, ``offload``), the plan
    item, its stream, the handles it depends on (None entries mean nothing), a ``tag`` that
    names it within the step (the same on every rank of the stage), and the micro-batch."""

    kind: str
    item: Any
    stream: str
    deps: tuple
    tag: tuple
    microbatch: int = -1


class Registers:
    """The handles a rank's lowering keeps from op to op: the latest op per stream (a dict,
    or any mapping whose ``get`` answers for streams not posted on yet), the previous item,
    and the op that preceded the previous compute piece."""

    def __init__(self, latest=None, previous: Any = None, prefetch_from: Any = None,
                 slot_start: Any = None):
        self.latest = {} if latest is None else latest
        self.previous = previous
        self.prefetch_from = prefetch_from
        self.slot_start = slot_start   # the op before the previous slot's compute

    @property
    def main(self):
        return self.latest.get(MAIN)

    def after(self, dep: Dep, slot_start=None):
        if dep in (Dep.BLOCKING, Dep.SIDE, Dep.BUCKETED):
            return (self.main,)
        if dep == Dep.CHAINED:
            return (self.previous,)
        if dep == Dep.DRAIN:
            return (self.main, self.latest.get(DP_STREAM))
        if dep == Dep.PREFETCHED:
            return (self.prefetch_from,)
        if dep == Dep.OVERLAPPED:
            return (slot_start,)
        return ()   # queued

    def posted(self, stream: str, handle) -> None:
        self.latest[stream] = handle
        self.previous = handle


def _stream(item) -> str:
    return MAIN if getattr(item, "dep", None) == Dep.BLOCKING else item.stream


Lowering = Generator[Request, Any, None]


def _post(rank: Registers, kind: str, item, deps, tag, m: int = -1) -> Lowering:
    stream = _stream(item)
    handle = yield Request(kind, item, stream, tuple(deps), tag, m)
    rank.posted(stream, handle)
    return handle


def lower_slot(rank: Registers, slot: Slot, pos: int, m: int, prologue) -> Lowering:
    """The ops of one slot at position ``pos`` of the order, for micro-batch ``m``;
    ``prologue`` maps prologue indices to their handles."""
    tag = ("slot", pos)
    if slot.receive is not None and slot.receive.dep == Dep.PREFETCHED:
        got = yield from _post(rank, "transfer", slot.receive, (rank.slot_start,),
                               tag + ("recv",), m)
        yield from _post(rank, "compute", JOIN, (rank.main, got), tag + ("recv", "join"), m)
    elif slot.receive is not None:
        yield from _post(rank, "transfer", slot.receive, (rank.main,), tag + ("recv",), m)
    for i, call in enumerate(slot.receive_calls):
        yield from _post(rank, "call", call, rank.after(call.dep), tag + ("recv", i), m)
    start = rank.slot_start = rank.main
    for i, piece in enumerate(slot.pieces):
        deps = [rank.main]
        for j, call in enumerate(piece.prefetch):
            deps.append((yield from _post(rank, "call", call, rank.after(call.dep),
                                          tag + ("prefetch", i, j), m)))
        rank.prefetch_from = rank.main
        deps += [prologue[k] for k in piece.compute.waits_for]
        yield from _post(rank, "compute", piece.compute, deps, tag + ("piece", i), m)
        for j, call in enumerate(piece.then):
            yield from _post(rank, "call", call, rank.after(call.dep), tag + ("then", i, j), m)
    overlapped: list = []
    for i, call in enumerate(slot.calls):
        if call.dep == Dep.SIDE and overlapped:
            yield from _post(rank, "compute", JOIN, (rank.main, *overlapped), tag + ("join",), m)
            overlapped = []
        handle = yield from _post(rank, "call", call, rank.after(call.dep, start),
                                  tag + ("call", i), m)
        if call.dep == Dep.OVERLAPPED:
            overlapped.append(handle)
    if overlapped:
        yield from _post(rank, "compute", JOIN, (rank.main, *overlapped), tag + ("join",), m)
    if slot.send is not None:   # nothing depends on a send: its handle is not kept
        yield Request("transfer", slot.send, slot.send.stream, (rank.main,), tag + ("send",), m)


def lower_prologue(rank: Registers, stage: StagePlan, handles: list) -> Lowering:
    """The calls that start with the step, their handles appended to ``handles``."""
    for i, call in enumerate(stage.prologue):
        handles.append((yield from _post(rank, "call", call, (), ("prologue", i))))


def lower_epilogue(rank: Registers, stage: StagePlan) -> Lowering:
    """What follows the stage's last slot."""
    done = []
    for i, item in enumerate(stage.epilogue):
        kind = ("call" if isinstance(item, Call) else "compute" if isinstance(item, Compute)
                else "offload" if isinstance(item, Offload) else None)
        if kind is None:
            raise TypeError(f"stage {stage.stage}: no lowering for epilogue item {item!r}")
        tag = ("epilogue", item.name) if kind == "call" else ("epilogue", i)
        deps = rank.after(item.dep) + tuple(done[k] for k in getattr(item, "waits_for", ()))
        done.append((yield from _post(rank, kind, item, deps, tag)))


def lower_stage(stage: StagePlan) -> Lowering:
    """Every op of one rank of ``stage``, in posting order (see the module docstring)."""
    rank = Registers()
    prologue: list = []
    yield from lower_prologue(rank, stage, prologue)
    for pos, (index, m) in enumerate(stage.order):
        yield from lower_slot(rank, stage.slots[index], pos, m, prologue)
    yield from lower_epilogue(rank, stage)
