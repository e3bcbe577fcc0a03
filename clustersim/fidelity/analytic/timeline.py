"""The step plan's timeline with uncontended prices: the max-plus evaluation of the very ops
the flow fidelity would run (:func:`~clustersim.fidelity.lowering.lower_stage`), without the
engine and without contention between calls.

Every op starts when its stream is free and what it depends on has ended, and ends its price
later; a pipeline transfer starts when its sender and its receiver have both posted it (a
sender posts its sends in order on their stream), a paired call (tied embeddings, DualPipe's
mirrored copies) when both its stages have. Stages run as coroutines: each advances until it waits for a transfer or a
rendezvous another stage has not posted yet.

>>> from clustersim.network import build_cluster
>>> from clustersim.step.stepplan import Compute, Piece, Slot, StagePlan, StepPlan
>>> from clustersim.workload import ParallelPlan
>>> from clustersim.workload.ops import Work
>>> cluster = build_cluster("dgx-h100", devices=8)
>>> slot = Slot("F", 0, (Piece(Compute(Work(2e-3), "F c0")),))
>>> step = StepPlan((StagePlan(0, 8, (slot,), ((0, 0), (0, 1))),), ParallelPlan(), None, None)
>>> evaluate(step, cluster).stage_end_s
[0.004]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clustersim.engine.core import Deadlock
from clustersim.fidelity.analytic.prices import Prices, prices_for
from clustersim.fidelity.lowering import Request, lower_stage
from clustersim.step.stepplan import MAIN
from clustersim.workload.groups import PAIRED_AXES, home_stage

__all__ = ["Timeline", "evaluate"]

_WAIT = object()   # an answer not known yet: the stage waits


@dataclass
class Timeline:
    """Per stage: when it ends, its compute and communication intervals (for the
    breakdown), FLOPs and memory bytes of one rank; link unit keys with the bytes they
    scale by (over every rank of the step)."""

    stage_end_s: list[float]
    compute: dict[int, list] = field(repr=False)
    comm: dict[int, list] = field(repr=False)
    flops: list[float] = field(repr=False)
    mem_bytes: list[float] = field(repr=False)
    link_terms: dict = field(repr=False)


class _Clock:
    """One stage's streams and what it has done."""

    def __init__(self):
        self.free: dict[str, float] = {}
        self.compute: list = []
        self.comm: list = []
        self.end = 0.0
        self.flops = self.mem = 0.0

    def ready(self, stream: str, deps) -> float:
        t = self.free.get(stream, 0.0)
        for d in deps:
            if d is not None and d > t:
                t = d
        return t

    def busy(self, stream: str, start: float, end: float, comm: bool) -> float:
        self.free[stream] = end
        if end > self.end:
            self.end = end
        if comm:
            self.comm.append((start, end))
        elif stream == MAIN:
            self.compute.append((start, end))
        return end


class _Evaluation:
    def __init__(self, step, prices: Prices):
        self.step, self.plan, self.prices = step, step.plan, prices
        self.clocks = [_Clock() for _ in step.stages]
        self.terms: dict = {}
        self.sends: dict = {}        # (what, vstage, m) -> (ready, sender, stream, bytes)
        self.receivers: dict = {}    # (what, vstage, m) -> (stage, post time)
        self.last_send: dict = {}    # (sender, stream) -> end of its last transfer
        self.meets: dict = {}        # (tag, home stage) -> the first poster's stage, time
        self.answers: dict[int, object] = {}   # stage -> the answer it waited for

    def _scale(self, unit, nbytes: float) -> None:
        if unit is not None and nbytes:
            self.terms[unit] = self.terms.get(unit, 0.0) + nbytes

    def answer(self, s: int, req: Request):
        """The end time of ``req`` posted by stage ``s``, or ``_WAIT``."""
        clock, item = self.clocks[s], req.item
        if req.kind == "compute":
            start = clock.ready(req.stream, req.deps)
            clock.flops += item.work.flops
            clock.mem += item.work.bytes
            return clock.busy(req.stream, start, start + item.work.seconds, False)
        if req.kind == "call":
            seconds, unit = self.prices.collective(self.plan, item.family, s, item.op,
                                                   item.bytes)
            if item.family.axis in PAIRED_AXES:
                return self._meet(s, req, seconds * item.count, unit)
            self._scale(unit, item.bytes * item.count)
            start = clock.ready(req.stream, req.deps)
            return clock.busy(req.stream, start, start + seconds * item.count, True)
        if req.kind == "offload":
            seconds, unit, wire = self.prices.offload(self.plan, s, item.where,
                                                      item.to_device, item.bytes)
            self._scale(unit, wire)
            start = clock.ready(req.stream, req.deps)
            return clock.busy(req.stream, start, start + seconds, True)
        key = (item.what, item.vstage, req.microbatch)
        if item.direction == "send":
            self.sends[key] = (clock.ready(req.stream, req.deps), s, req.stream, item.bytes)
            waiting = self.receivers.pop(key, None)
            if waiting is not None:
                self.answers[waiting[0]] = self._transfer(key, *waiting)
            return None
        post = clock.ready(req.stream, req.deps)
        if key not in self.sends:
            self.receivers[key] = (s, post)
            return _WAIT
        return self._transfer(key, s, post)

    def _transfer(self, key, receiver: int, post: float) -> float:
        """The end of a pipeline transfer both sides have posted."""
        ready, sender, stream, size = self.sends.pop(key)
        start = max(post, ready, self.last_send.get((sender, stream), 0.0))
        seconds, unit, wire = self.prices.hop(self.plan, sender, receiver, size)
        self._scale(unit, wire)
        end = start + seconds
        self.last_send[(sender, stream)] = end
        self.clocks[sender].busy(stream, start, end, True)
        return self.clocks[receiver].busy(MAIN, start, end, True)

    def _meet(self, s: int, req: Request, seconds: float, unit):
        """A call two stages post (tied embeddings, DualPipe's mirrored copies): it starts
        when the later does."""
        post = self.clocks[s].ready(req.stream, req.deps)
        key = (req.tag, home_stage(req.item.family.axis, s, self.plan.pp))
        first = self.meets.pop(key, None)
        if first is None:
            self.meets[key] = (s, post, req.stream)
            return _WAIT
        other, other_post, other_stream = first
        self._scale(unit, req.item.bytes * req.item.count)
        start = max(post, other_post)
        self.answers[other] = self.clocks[other].busy(other_stream, start, start + seconds,
                                                      True)
        return self.clocks[s].busy(req.stream, start, start + seconds, True)

    def run(self) -> None:
        lowerings = [lower_stage(stage) for stage in self.step.stages]
        pending = {s: next(g, None) for s, g in enumerate(lowerings)}
        pending = {s: r for s, r in pending.items() if r is not None}
        waiting: set[int] = set()   # stages whose request another stage must answer
        while pending:
            progress = False
            for s in list(pending):
                req = pending[s]
                while True:
                    if s in waiting:
                        value = self.answers.pop(s, _WAIT)
                        if value is _WAIT:
                            break
                        waiting.discard(s)
                    else:
                        value = self.answer(s, req)
                        if value is _WAIT:
                            waiting.add(s)
                            break
                    progress = True
                    try:
                        req = pending[s] = lowerings[s].send(value)
                    except StopIteration:
                        del pending[s]
                        break
            if not progress:
                stuck = ", ".join(f"stage {s} at {r.tag}" for s, r in pending.items())
                raise Deadlock(f"deadlock: the step plan cannot finish ({stuck})")


def evaluate(step, cluster, prices: Prices | None = None) -> Timeline:
    """The uncontended timeline of ``step`` on ``cluster``."""
    ev = _Evaluation(step, prices or prices_for(cluster))
    ev.run()
    return Timeline([c.end for c in ev.clocks], {s: c.compute for s, c in enumerate(ev.clocks)},
                    {s: c.comm for s, c in enumerate(ev.clocks)},
                    [c.flops for c in ev.clocks], [c.mem for c in ev.clocks], ev.terms)
