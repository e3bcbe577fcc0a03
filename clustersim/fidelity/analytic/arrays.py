"""The step plan and its prices as the flat arrays :func:`.kernel.timeline_kernel` reads.

Every stage runs its prologue, its slots in the schedule's order and its epilogue, each an
instance of a template (:mod:`.templates`) with the stage's prices; link bytes, FLOPs and
memory bytes follow from how often each instance runs, so the kernel needs only times.

>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.network import build_cluster
>>> from clustersim.step import plan_step
>>> from clustersim.workload import get_model, resolve_plan
>>> from clustersim.fidelity.analytic.prices import prices_for
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> model, t = get_model("llama3-8b"), TrainingConfig(global_batch=16, parallelism={"pp": 2})
>>> step = plan_step(model, resolve_plan(t, model, 16), cluster, t)
>>> arrays = encode(step, prices_for(cluster))
>>> len(arrays.seq_ptr) - 1, int(arrays.seq_ptr[-1])   # stages; instances: 2 x (1 + 4 + 1)
(2, 12)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from clustersim.fidelity.analytic.kernel import (CALL, COMPUTE, ENTRY, LOCAL, MEET, PROLOGUE,
                                                 RECV, SEND)
from clustersim.fidelity.analytic.templates import (REGISTERS, epilogue_template,
                                                    prologue_template, slot_template)
from clustersim.result.overlap import slows_compute
from clustersim.step.frameworks import FRAMEWORKS
from clustersim.step.stepplan import MAIN
from clustersim.workload.groups import PAIRED_AXES, home_stage

__all__ = ["TimelineArrays", "encode"]

_REF = {"local": LOCAL, "entry": ENTRY, "prologue": PROLOGUE}


@dataclass
class TimelineArrays:
    """The kernel's inputs (see :func:`.kernel.timeline_kernel`), and per stage the FLOPs
    and memory bytes of one rank; ``link_terms`` maps link unit keys to the bytes they
    scale by over the whole step."""

    seq_ptr: np.ndarray
    seq_inst: np.ndarray
    seq_mb: np.ndarray
    inst_ptr: np.ndarray
    inst_exit: np.ndarray
    op_code: np.ndarray
    op_reg: np.ndarray
    op_dur: np.ndarray
    op_key: np.ndarray
    op_main: np.ndarray
    dep_ptr: np.ndarray
    dep_kind: np.ndarray
    dep_val: np.ndarray
    n_regs: int
    n_keys: int
    n_meets: int
    max_ops: int
    n_prologue: int
    flops: list = field(repr=False)
    mem_bytes: list = field(repr=False)
    link_terms: dict = field(repr=False)
    reg_names: tuple = field(default=(), repr=False)   # register index -> stream name
    # per op: communication that takes SMs from the compute beside it (result.overlap)
    op_on_sms: np.ndarray | None = field(default=None, repr=False)

    def kernel_args(self) -> tuple:
        return (self.seq_ptr, self.seq_inst, self.seq_mb, self.inst_ptr, self.inst_exit,
                self.op_code, self.op_reg, self.op_dur, self.op_key, self.op_main,
                self.dep_ptr, self.dep_kind, self.dep_val, self.n_regs, self.n_keys,
                self.n_meets, self.max_ops, self.n_prologue)


# Stream and register name -> register index, shared by every encoding so that a template is
# mapped to registers once (bent for speed); registers a step never uses stay at 0.
_REGS: dict[str, int] = {name: i for i, name in enumerate((MAIN,) + REGISTERS)}


def _reg(name: str) -> int:
    return _REGS.setdefault(name, len(_REGS))


def _template_code(template) -> tuple:
    """A template's registers, dependencies and exit registers as indices (kept per template:
    slot templates are shared by every stage and plan)."""
    found = _CODES.get(id(template))
    if found is None or found[0] is not template:
        regs = tuple(_reg(op.stream) for op in template.ops)
        deps = tuple(tuple((_REF[kind], _reg(val) if kind == "entry" else val)
                           for kind, val in op.deps) for op in template.ops)
        exits = tuple((_reg(name), val if kind == "local" else -1 - _reg(val))
                      for name, (kind, val) in template.exit.items())
        main = tuple(op.kind == "compute" and op.stream == MAIN for op in template.ops)
        if len(_CODES) > 16384:
            _CODES.clear()
        found = _CODES[id(template)] = (template, regs, deps, exits, main)
    return found[1:]


_CODES: dict = {}   # id(template) -> (template, registers, dependencies, exits, main)


class _Structure:
    """Everything of a step's encoding but its prices (kept per step plan: a sweep prices one
    plan on several clusters); ``requests`` lists the ops a price sets, in op order."""

    def __init__(self, step):
        self.step, self.plan = step, step.plan
        self.m = step.plan.num_microbatches
        self.vstages = step.plan.pp * step.plan.virtual_stages
        self.meets: dict[tuple, int] = {}   # (name, home stage) -> meet index
        self.code, self.regs, self.dur, self.keys, self.main, self.deps = [], [], [], [], [], []
        self.inst_ptr = [0]
        self.exits: list = []
        self.prices_asked: dict[tuple, int] = {}   # price request -> its index
        self.requests: list = []    # (op index, price index, count, link scale, per call)
        self.arrays = self._arrays()

    def _op(self, s: int, op, times: int):
        """``(code, duration, key)`` of one template op on stage ``s``, which runs ``times``
        times in the step; ops with a price are listed in ``requests`` (duration 0 here)."""
        item, plan = op.item, self.plan
        if op.kind == "compute":
            return COMPUTE, item.work.seconds, 0
        if op.kind == "call":
            home = home_stage(item.family.axis, s, plan.pp)
            # a paired call runs once for its two stages: its bytes count on one
            self._request(("call", s, item.family, item.op, item.bytes), item.count,
                          item.bytes * item.count * times if s == home else 0.0, True)
            if item.family.axis in PAIRED_AXES:
                return MEET, 0.0, self.meets.setdefault((item.name, home), len(self.meets))
            return CALL, 0.0, 0
        if op.kind == "offload":
            self._request(("offload", s, item.where, item.to_device, item.bytes), 1, times, False)
            return CALL, 0.0, 0
        base = ((item.what == "grad") * self.vstages + item.vstage) * self.m
        if item.direction == "send":
            return SEND, 0.0, base
        self._request(("recv", s, item.peer, item.bytes), 1, times, False)
        return RECV, 0.0, base

    def _request(self, price: tuple, count: int, scale: float, per_call: bool) -> None:
        """The op about to be added takes ``count`` times the seconds of ``price`` (a
        unique request: ops of several templates often share one); its link bytes are
        ``scale`` bytes (``per_call``) or ``scale`` times the wire bytes per pair."""
        u = self.prices_asked.setdefault(price, len(self.prices_asked))
        self.requests.append((len(self.code), u, count, scale, per_call))

    def instance(self, s: int, template, times: int) -> tuple[int, float, float]:
        """Add ``template`` for stage ``s``; ``(instance id, flops, memory bytes)`` of one
        run of it."""
        flops = mem = 0.0
        regs, deps, exits, main = _template_code(template)
        for op in template.ops:
            code, dur, key = self._op(s, op, times)
            if code == COMPUTE:
                flops += op.item.work.flops
                mem += op.item.work.bytes
            self.code.append(code)
            self.dur.append(dur)
            self.keys.append(key)
        self.regs += regs
        self.deps += deps
        self.main += main
        self.inst_ptr.append(len(self.code))
        self.exits.append(exits)
        return len(self.inst_ptr) - 2, flops, mem

    def stage(self, sp):
        """The stage's sequence of instances ``(instance ids, micro-batches)`` and its
        per-rank FLOPs and memory bytes."""
        slot_of, microbatch, runs = _order_arrays(sp.order, len(sp.slots))
        first, flops, mem = self.instance(sp.stage, prologue_template(sp), 1)
        ids = np.empty(len(sp.slots), np.int64)
        for index, slot in enumerate(sp.slots):
            ids[index], f, b = self.instance(sp.stage, slot_template(slot), int(runs[index]))
            flops, mem = flops + f * runs[index], mem + b * runs[index]
        last, f, b = self.instance(sp.stage, epilogue_template(sp), 1)
        return (np.concatenate(([first], ids[slot_of], [last])),
                np.concatenate(([-2], microbatch, [-1])), flops + f, mem + b)

    def _arrays(self) -> TimelineArrays:
        insts, mbs, flops, mem = zip(*(self.stage(sp) for sp in self.step.stages))
        n_regs = len(_REGS)
        inst_exit = np.tile(-1 - np.arange(n_regs, dtype=np.int64), (len(self.exits), 1))
        for i, exits in enumerate(self.exits):   # registers not listed keep their value
            for r, val in exits:
                inst_exit[i, r] = val
        dep_ptr = np.cumsum([0] + [len(d) for d in self.deps])
        flat = [d for ds in self.deps for d in ds]
        seq_ptr = np.cumsum([0] + [len(x) for x in insts])
        sizes = np.diff(self.inst_ptr)
        names = tuple(sorted(_REGS, key=_REGS.get))
        framework = FRAMEWORKS[self.step.training.framework]
        on_sms = np.array([slows_compute(name, framework) for name in names], np.bool_)
        return TimelineArrays(
            seq_ptr.astype(np.int64), np.concatenate(insts).astype(np.int64),
            np.concatenate(mbs).astype(np.int64), np.array(self.inst_ptr, np.int64),
            inst_exit, np.array(self.code, np.int64), np.array(self.regs, np.int64),
            np.array(self.dur, np.float64), np.array(self.keys, np.int64),
            np.array(self.main, np.bool_), dep_ptr.astype(np.int64),
            np.array([k for k, _ in flat], np.int64), np.array([v for _, v in flat], np.int64),
            n_regs, 2 * self.vstages * self.m + 1, len(self.meets),
            int(sizes.max()) if len(sizes) else 1,
            max(len(sp.prologue) for sp in self.step.stages), list(flops), list(mem),
            {}, names, on_sms[np.array(self.regs, np.int64)])

    def priced(self, prices) -> TimelineArrays:
        """The arrays at ``prices``: each listed op's duration, and the link bytes (added in
        op order, as the ops were before the requests were shared)."""
        plan, asked = self.plan, []
        for kind, s, *what in self.prices_asked:
            if kind == "call":
                asked.append(prices.collective(plan, what[0], s, what[1], what[2]) + (0.0,))
            elif kind == "offload":
                asked.append(prices.offload(plan, s, *what))
            else:
                asked.append(prices.hop(plan, what[0], s, what[1]))
        dur, terms = self.arrays.op_dur.copy(), {}
        for j, u, count, scale, per_call in self.requests:
            seconds, unit, wire = asked[u]
            dur[j] = seconds * count if per_call else seconds
            nbytes = scale if per_call else wire * scale
            if unit is not None and nbytes:
                terms[unit] = terms.get(unit, 0.0) + nbytes
        return replace(self.arrays, op_dur=dur, link_terms=terms)


@lru_cache(maxsize=1024)
def _order_arrays(order: tuple, n_slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stage order as arrays: each action's slot and micro-batch, and the runs per slot
    (cached: a sweep prices the same schedules again and again)."""
    pairs = np.array(order, np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1], np.bincount(pairs[:, 0], minlength=n_slots)


def encode(step, prices) -> TimelineArrays:
    """The kernel's arrays for ``step`` at ``prices`` (a :class:`.prices.Prices`); the
    step's structure is kept per step plan."""
    known = _STRUCTURES.get(id(step))
    if known is None or known[0] is not step:
        if len(_STRUCTURES) >= 64:   # a sweep revisits a plan soon or never
            _STRUCTURES.pop(next(iter(_STRUCTURES)))
        known = _STRUCTURES[id(step)] = (step, _Structure(step))
    return known[1].priced(prices)


_STRUCTURES: dict = {}   # id(step) -> (step, its _Structure)
