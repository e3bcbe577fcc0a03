"""The step plan as flat arrays for the timeline kernel: each distinct slot (and each stage's
prologue and epilogue) lowered once, symbolically, by the shared lowering.

Lowering a slot with handles that are symbols instead of op ids gives a *template*: its ops
in order, what each depends on (an earlier op of the same template, or a register the rank
held when the slot began: the latest op of a stream, the previous item, the op before the
previous compute piece, a prologue call) and what the registers hold when it ends. Every
micro-batch of a slot runs the same template, so a stage is a sequence of
``(template, micro-batch)`` and the kernel only reads numbers.

>>> from clustersim.step.stepplan import Compute, Piece, Slot
>>> from clustersim.workload.ops import Work
>>> t = slot_template(Slot("F", 0, (Piece(Compute(Work(1.0), "F c0")),)))
>>> [(op.kind, op.deps) for op in t.ops], t.exit["compute"]
([('compute', (('entry', 'compute'),))], ('local', 0))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from clustersim.fidelity.lowering import (Registers, Request, lower_epilogue, lower_prologue,
                                          lower_slot)
from clustersim.step.stepplan import Slot

__all__ = ["TemplateOp", "Template", "slot_template", "prologue_template",
           "epilogue_template", "REGISTERS"]

# What a rank's lowering carries from one slot to the next besides the latest op of each
# stream (``latest``): the previous item, the op before the previous compute piece, the op
# before the previous slot's compute.
REGISTERS = ("previous", "prefetch_from", "slot_start")


@dataclass(frozen=True)
class TemplateOp:
    """One op of a template: the request's kind, item and stream, and its dependencies as
    ``('local', j)``, ``('entry', register)`` or ``('prologue', k)``."""

    kind: str
    item: object
    stream: str
    deps: tuple


@dataclass(frozen=True)
class Template:
    """A slot's (or prologue's, epilogue's) ops, and the registers when it ends: stream or
    register name -> ``('local', j)`` or ``('entry', name)``."""

    ops: tuple[TemplateOp, ...]
    exit: dict


class _Latest(dict):
    """Streams never posted on in this template read as their value at entry."""

    def get(self, stream, default=None):
        return self[stream] if stream in self else ("entry", stream)


def _entry() -> Registers:
    """Registers holding the symbols of their values when a template starts."""
    return Registers(_Latest(), *(("entry", name) for name in REGISTERS))


def _record(lowering, rank) -> Template:
    ops: list[TemplateOp] = []
    try:
        request: Request = next(lowering)
        while True:
            deps = tuple(d for d in request.deps if d is not None)
            ops.append(TemplateOp(request.kind, request.item, request.stream, deps))
            request = lowering.send(("local", len(ops) - 1))
    except StopIteration:
        pass
    exit = {stream: handle for stream, handle in rank.latest.items()}
    exit.update({name: getattr(rank, name) for name in REGISTERS})
    return Template(tuple(ops), exit)


@lru_cache(maxsize=8192)
def slot_template(slot: Slot) -> Template:
    """The template of one slot (cached: every micro-batch, stage and plan alike share it)."""
    rank = _entry()
    return _record(lower_slot(rank, slot, 0, -1, _Prologue()), rank)


class _Prologue:
    """Prologue handles by index, as symbols."""

    def __getitem__(self, k: int):
        return ("prologue", k)


@dataclass(frozen=True)
class _Items:
    """What the prologue's and epilogue's lowerings read of a stage (a cache key)."""

    stage: int
    prologue: tuple = ()
    epilogue: tuple = ()


def prologue_template(stage) -> Template:
    """The template of a stage's prologue (its ops depend on nothing)."""
    return _prologue_template(_Items(stage.stage, prologue=stage.prologue))


def epilogue_template(stage) -> Template:
    """The template of a stage's epilogue."""
    return _epilogue_template(_Items(stage.stage, epilogue=stage.epilogue))


@lru_cache(maxsize=4096)
def _prologue_template(items: _Items) -> Template:
    """(cached: the plans of a sweep share their prologues)"""
    rank = _entry()
    return _record(lower_prologue(rank, items, []), rank)


@lru_cache(maxsize=4096)
def _epilogue_template(items: _Items) -> Template:
    """(cached: plans that differ in their batch alone share their epilogues)"""
    rank = _entry()
    return _record(lower_epilogue(rank, items), rank)
