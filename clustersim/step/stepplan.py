"""The step plan: what every pipeline stage does in one training step, and in what order.

A :class:`StepPlan` is a plain frozen value: per stage, the distinct :class:`Slot` s it runs
(one micro-batch of one model chunk, forward or backward), the schedule's order of them, the
side-stream calls that start with the step (``prologue``) and what follows the last slot
(``epilogue``: gradient tails, tied embeddings, the optimizer). Every communication call says
which groups run it (:class:`Family`), how many bytes, on which stream, and what it waits for
(:class:`Dep`). Both fidelities read it and neither decides anything of its own: the flow
fidelity lowers it to a Program for the SimPy engine, the analytic fidelity evaluates the same
order with uncontended prices.

What each dependency kind means (the whole contract between the plan and the fidelities):

==============  ===============================================================================
``blocking``    on the main stream, after what precedes it there
``side``        on its stream, once the main stream has done what precedes the call
``bucketed``    as ``side``, posted as a compute piece produces its gradient bucket
``prefetched``  launched one compute piece ahead (when the piece before the previous one
                is done); the next compute piece waits for it
``overlapped``  on its stream from the start of the slot's compute; the slot's main stream
                waits for it at the slot's end
``chained``     after the item listed just before it (on its own stream)
``queued``      as soon as its stream is free: from the step's start in the prologue
                (compute pieces name the ones they wait for), after all the stream was
                given in the epilogue
``drain``       once the main stream and the data-parallel stream are done
==============  ===============================================================================

Compute runs ``blocking`` (after the main stream, any prefetched calls since the last compute
and the prologue calls it names), ``drain`` (the optimizer) or ``chained``.

>>> from clustersim.workload.ops import Work
>>> slot = Slot("F", 0, pieces=(Piece(Compute(Work(1e-3), "F c0"),),),
...             calls=(Call("tp_all_reduce", "all_reduce", Family("tp"), 2**20, Dep.BLOCKING,
...                         count=2),))
>>> print(slot)
F chunk 0: compute F c0 1.000 ms; tp_all_reduce x2 all_reduce 1.0 MiB on tp (blocking)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from clustersim.workload.memory import MemoryBreakdown
from clustersim.workload.ops import Work

__all__ = ["MAIN", "Dep", "Family", "Call", "Compute", "Transfer", "Offload", "Piece", "Slot",
           "StagePlan", "StepPlan"]

MAIN = "compute"   # the stream a rank's kernels run on


class Dep(str, Enum):
    """What a call waits for before it starts (see the module docstring)."""

    BLOCKING = "blocking"
    SIDE = "side"
    BUCKETED = "bucketed"
    PREFETCHED = "prefetched"
    OVERLAPPED = "overlapped"
    CHAINED = "chained"
    QUEUED = "queued"
    DRAIN = "drain"

    def __str__(self) -> str:
        return self.value


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


@dataclass(frozen=True)
class Family:
    """The rank groups a collective runs on: every group of mesh ``axis`` within the stage
    (``tp cp ep dp edp tied``, see :mod:`clustersim.workload.groups`), or under hybrid
    sharding one ``inner`` block of each, or the groups ``across`` the blocks."""

    axis: str
    block: str = "all"

    def __str__(self) -> str:
        return self.axis if self.block == "all" else f"{self.axis}/{self.block}"


@dataclass(frozen=True)
class Call:
    """``count`` back-to-back collectives ``op`` of ``bytes`` each (nccl-tests sizes) on
    ``family``, on ``stream``, waiting as ``dep`` says. ``category`` labels it in traces."""

    name: str
    op: str
    family: Family
    bytes: float
    dep: Dep
    stream: str = MAIN
    count: int = 1
    category: str = ""

    def __str__(self) -> str:
        times = f" x{self.count}" if self.count > 1 else ""
        where = f", {self.stream} stream" if self.stream != MAIN else ""
        return (f"{self.name}{times} {self.op} {_size(self.bytes)} on {self.family} "
                f"({self.dep}{where})")


@dataclass(frozen=True)
class Compute:
    """Kernels on the main stream (or ``stream``, e.g. the host CPU), waiting as ``dep``
    says and for the items ``waits_for`` names by index: prologue calls for a slot's
    compute, earlier epilogue items for the epilogue's."""

    work: Work
    label: str
    category: str = ""
    waits_for: tuple[int, ...] = ()
    stream: str = MAIN
    dep: Dep = Dep.BLOCKING

    def __str__(self) -> str:
        wait = f" after #{list(self.waits_for)}" if self.waits_for else ""
        where = f" on {self.stream}" if self.stream != MAIN else ""
        how = f" ({self.dep})" if self.dep != Dep.BLOCKING else ""
        return f"compute {self.label} {self.work.seconds * 1e3:.3f} ms{where}{wait}{how}"


@dataclass(frozen=True)
class Transfer:
    """A pipeline send or receive of ``what`` (``act`` forward, ``grad`` backward) between
    this stage and ``peer``; a send and its receive share ``what`` and ``vstage``, the
    virtual stage the data goes to. A send runs beside the compute (``side``); a receive
    blocks the main stream, or is posted one slot ahead (``prefetched``) and the slot's
    compute waits for it."""

    direction: str       # "send" | "recv"
    peer: int
    what: str            # "act" | "grad"
    vstage: int
    bytes: float
    stream: str = MAIN
    dep: Dep = Dep.BLOCKING

    def __str__(self) -> str:
        way = "to" if self.direction == "send" else "from"
        how = f", {self.dep}" if self.dep == Dep.PREFETCHED else ""
        return (f"{self.direction} {self.what} {way} stage {self.peer} "
                f"{_size(self.bytes)} ({self.stream}{how})")


@dataclass(frozen=True)
class Offload:
    """Bytes between each device of the stage and the memory its optimizer states live in
    (``where``: ``host`` DRAM or a ``cxl`` pool), on ``stream``, waiting as ``dep`` says."""

    where: str
    to_device: bool
    bytes: float
    stream: str
    label: str
    dep: Dep = Dep.DRAIN

    def __str__(self) -> str:
        way = "from" if self.to_device else "to"
        return (f"{self.label}: {_size(self.bytes)} {way} {self.where} ({self.dep}, "
                f"{self.stream})")


@dataclass(frozen=True)
class Piece:
    """One piece of a slot's compute: calls prefetched for it, the compute, and the gradient
    buckets it produces (``bucketed``, possibly ``chained``)."""

    compute: Compute
    prefetch: tuple[Call, ...] = ()
    then: tuple[Call, ...] = ()


@dataclass(frozen=True)
class Slot:
    """One micro-batch through one model chunk (``kind`` F or B): a receive and its calls
    (blocking), the compute in pieces, the calls after it in order, a send."""

    kind: str
    chunk: int
    pieces: tuple[Piece, ...]
    calls: tuple[Call, ...] = ()
    receive: Transfer | None = None
    receive_calls: tuple[Call, ...] = ()
    send: Transfer | None = None

    @property
    def work(self) -> Work:
        """The slot's compute, all pieces together."""
        total = Work()
        for piece in self.pieces:
            total = total + piece.compute.work
        return total

    def __str__(self) -> str:
        parts = [str(x) for x in (self.receive, *self.receive_calls) if x is not None]
        for piece in self.pieces:
            parts += [*map(str, piece.prefetch), str(piece.compute), *map(str, piece.then)]
        parts += [str(c) for c in self.calls] + ([str(self.send)] if self.send else [])
        return f"{self.kind} chunk {self.chunk}: " + "; ".join(parts)


EpilogueItem = Call | Compute | Offload


@dataclass(frozen=True)
class StagePlan:
    """One pipeline stage: its slots, the schedule's order of them (``(slot, micro-batch)``),
    the calls launched at the step's start and what follows the last slot, and the memory
    its devices hold at the step's peak (``offloaded_B`` of it elsewhere). ``ranks`` is how
    many ranks run this stage alike."""

    stage: int
    ranks: int
    slots: tuple[Slot, ...]
    order: tuple[tuple[int, int], ...]
    prologue: tuple[Call, ...] = ()
    epilogue: tuple[EpilogueItem, ...] = ()
    memory: MemoryBreakdown | None = None
    offloaded_B: float = 0.0

    def __str__(self) -> str:
        lines = [f"stage {self.stage} ({self.ranks} ranks):"]
        lines += [f"  prologue {i}: {c}" for i, c in enumerate(self.prologue)]
        lines += [f"  slot {i}: {s}" for i, s in enumerate(self.slots)]
        shown = " ".join(f"{self.slots[s].kind}{self.slots[s].chunk}.{m}"
                         for s, m in self.order[:24])
        more = f" ... ({len(self.order)} slots)" if len(self.order) > 24 else ""
        lines.append(f"  order: {shown}{more}")
        lines += [f"  epilogue {i}: {item}" for i, item in enumerate(self.epilogue)]
        return "\n".join(lines)


@dataclass(frozen=True)
class StepPlan:
    """One training step of a parallel plan: a :class:`StagePlan` per pipeline stage, plus
    the memory each stage's devices hold at the step's peak."""

    stages: tuple[StagePlan, ...]
    plan: object = field(repr=False)
    model: object = field(repr=False)
    training: object = field(repr=False, compare=False)

    def __str__(self) -> str:
        return "\n".join(str(s) for s in self.stages)

    @property
    def peak_stage(self) -> StagePlan:
        """The stage whose devices hold the most memory (the first of equals)."""
        return max(self.stages, key=lambda s: (s.memory.total_B, -s.stage))
