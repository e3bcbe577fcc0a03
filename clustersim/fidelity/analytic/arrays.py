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

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from clustersim.fidelity.analytic.kernel import (CALL, COMPUTE, ENTRY, LOCAL, MEET, PROLOGUE,
                                                 RECV, SEND)
from clustersim.fidelity.analytic.templates import (REGISTERS, epilogue_template,
                                                    prologue_template, slot_template)
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

    def kernel_args(self) -> tuple:
        return (self.seq_ptr, self.seq_inst, self.seq_mb, self.inst_ptr, self.inst_exit,
                self.op_code, self.op_reg, self.op_dur, self.op_key, self.op_main,
                self.dep_ptr, self.dep_kind, self.dep_val, self.n_regs, self.n_keys,
                self.n_meets, self.max_ops, self.n_prologue)


class _Encoder:
    def __init__(self, step, prices):
        self.step, self.plan, self.prices = step, step.plan, prices
        self.m = step.plan.num_microbatches
        self.vstages = step.plan.pp * step.plan.virtual_stages
        self.regs: dict[str, int] = {name: i for i, name in enumerate((MAIN,) + REGISTERS)}
        self.meets: dict[tuple, int] = {}   # (name, home stage) -> meet index
        self.ops: list = []          # (code, reg, dur, key, main, deps)
        self.inst_ptr = [0]
        self.exits: list = []
        self.terms: dict = {}

    def reg(self, name: str) -> int:
        return self.regs.setdefault(name, len(self.regs))

    def _scale(self, unit, nbytes: float) -> None:
        if unit is not None and nbytes:
            self.terms[unit] = self.terms.get(unit, 0.0) + nbytes

    def _op(self, s: int, op, times: int):
        """``(code, duration, key)`` of one template op on stage ``s``, which runs ``times``
        times in the step; adds its link bytes."""
        item, plan = op.item, self.plan
        if op.kind == "compute":
            return COMPUTE, item.work.seconds, 0
        if op.kind == "call":
            seconds, unit = self.prices.collective(plan, item.family, s, item.op, item.bytes)
            paired = item.family.axis in PAIRED_AXES
            home = home_stage(item.family.axis, s, plan.pp)
            if s == home:   # a paired call runs once for its two stages
                self._scale(unit, item.bytes * item.count * times)
            if paired:
                return MEET, seconds * item.count, self.meets.setdefault((item.name, home),
                                                                         len(self.meets))
            return CALL, seconds * item.count, 0
        if op.kind == "offload":
            seconds, unit, wire = self.prices.offload(plan, s, item.where, item.to_device,
                                                      item.bytes)
            self._scale(unit, wire * times)
            return CALL, seconds, 0
        base = ((item.what == "grad") * self.vstages + item.vstage) * self.m
        if item.direction == "send":
            return SEND, 0.0, base
        seconds, unit, wire = self.prices.hop(plan, item.peer, s, item.bytes)
        self._scale(unit, wire * times)
        return RECV, seconds, base

    def instance(self, s: int, template, times: int) -> tuple[int, float, float]:
        """Add ``template`` priced for stage ``s``; ``(instance id, flops, memory bytes)``
        of one run of it."""
        flops = mem = 0.0
        for op in template.ops:
            code, dur, key = self._op(s, op, times)
            if code == COMPUTE:
                flops += op.item.work.flops
                mem += op.item.work.bytes
            deps = [(_REF[kind], self.reg(val) if kind == "entry" else val)
                    for kind, val in op.deps]
            self.ops.append((code, self.reg(op.stream), dur, key,
                             code == COMPUTE and op.stream == MAIN, deps))
        self.inst_ptr.append(len(self.ops))
        self.exits.append({self.reg(name): ref for name, ref in template.exit.items()})
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

    def arrays(self) -> TimelineArrays:
        insts, mbs, flops, mem = zip(*(self.stage(sp) for sp in self.step.stages))
        n_regs = len(self.regs)
        n_inst = len(self.inst_ptr) - 1
        inst_exit = np.empty((n_inst, n_regs), dtype=np.int64)
        for i, exits in enumerate(self.exits):
            for r in range(n_regs):
                kind, val = exits.get(r, ("entry", None))
                inst_exit[i, r] = val if kind == "local" else -1 - (
                    r if val is None else self.regs[val])
        code, reg, dur, key, main, deps = zip(*self.ops) if self.ops else ((),) * 6
        dep_ptr = np.cumsum([0] + [len(d) for d in deps])
        flat = [d for ds in deps for d in ds]
        seq_ptr = np.cumsum([0] + [len(x) for x in insts])
        sizes = np.diff(self.inst_ptr)
        return TimelineArrays(
            seq_ptr.astype(np.int64), np.concatenate(insts).astype(np.int64),
            np.concatenate(mbs).astype(np.int64), np.array(self.inst_ptr, np.int64),
            inst_exit, np.array(code, np.int64), np.array(reg, np.int64),
            np.array(dur, np.float64), np.array(key, np.int64), np.array(main, np.bool_),
            dep_ptr.astype(np.int64), np.array([k for k, _ in flat], np.int64),
            np.array([v for _, v in flat], np.int64), n_regs,
            2 * self.vstages * self.m + 1, len(self.meets),
            int(sizes.max()) if len(sizes) else 1,
            max(len(sp.prologue) for sp in self.step.stages), list(flops), list(mem),
            self.terms, tuple(sorted(self.regs, key=self.regs.get)))


@lru_cache(maxsize=1024)
def _order_arrays(order: tuple, n_slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stage order as arrays: each action's slot and micro-batch, and the runs per slot
    (cached: a sweep prices the same schedules again and again)."""
    pairs = np.array(order, np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1], np.bincount(pairs[:, 0], minlength=n_slots)


def encode(step, prices) -> TimelineArrays:
    """The kernel's arrays for ``step`` at ``prices`` (a :class:`.prices.Prices`)."""
    return _Encoder(step, prices).arrays()
