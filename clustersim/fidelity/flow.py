"""The ``flow`` fidelity: the step plan lowered to a Program and run by the SimPy engine on
the flow-level network, so concurrent calls contend on shared links.

In ``representative`` mode one rank per pipeline stage is simulated and every collective or
send carries all groups or pairs of its stage, so the network sees every concurrent flow; in
``all`` mode every rank is simulated with its own calls (for asymmetric cases, and to check
the reduction).

>>> from clustersim.config.experiment import SimulationConfig, TrainingConfig
>>> from clustersim.network import build_cluster
>>> from clustersim.step import plan_step
>>> from clustersim.workload import get_model, resolve_plan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> model = get_model("llama3-8b")
>>> training = TrainingConfig(global_batch=16, parallelism={"tp": 4, "pp": 2})
>>> step = plan_step(model, resolve_plan(training, model, 16), cluster, training)
>>> program = build_program(step, cluster)
>>> len(program.ranks), program.ranks[0].stands_for
(2, 8)
>>> outcome = simulate_flow(step, cluster, SimulationConfig())
>>> round(outcome.compute_s + outcome.exposed_comm_s + outcome.bubble_s - outcome.step_time_s, 9)
0.0
"""

from __future__ import annotations

import numpy as np

from clustersim.engine.comm import CommModel
from clustersim.engine.core import simulate
from clustersim.engine.program import Program
from clustersim.fidelity.lowering import Request, lower_stage
from clustersim.fidelity.placement import offload_pairs, stage_ranks
from clustersim.result.breakdown import critical_breakdown, critical_rank, hidden_time
from clustersim.result.outcome import StepOutcome
from clustersim.result.overlap import slows_compute
from clustersim.step.frameworks import FRAMEWORKS
from clustersim.workload.groups import block_size, collective_families
from clustersim.workload.mesh import mesh_for_plan

__all__ = ["build_program", "simulate_flow", "step_outcome"]


class _Builder:
    """Posts the lowered step plan of every simulated rank into one Program."""

    def __init__(self, step, cluster, representative: bool):
        plan = step.plan
        if len(cluster.devices) < plan.devices:
            raise ValueError(f"the plan needs {plan.devices} devices, the cluster has "
                             f"{len(cluster.devices)}")
        self.step, self.plan, self.cluster = step, plan, cluster
        self.mesh = mesh_for_plan(plan)
        self.devices = cluster.devices
        self.representative = representative
        self.program = Program()
        self.stage_of = [self.mesh.coords(r)["pp"] for r in range(plan.devices)]
        firsts = [stage_ranks(plan, s)[0] for s in range(plan.pp)]
        self.real_of = firsts if representative else list(range(plan.devices))
        per_stage = plan.devices // plan.pp
        for r in self.real_of:
            stage = self.stage_of[r]
            self.program.add_rank(self.devices[r], per_stage if representative else 1,
                                  label=f"stage {stage}" + ("" if representative
                                                            else f" rank {r}"))
        # the simulated rank of each real rank: its stage's (the stages are in order)
        self.sim_of = list(self.stage_of) if representative else list(range(plan.devices))
        self._families: dict = {}
        self._calls: dict = {}
        self._shared: dict = {}

    def _family(self, family):
        """For a family: real rank -> (its group, the sim ranks of the group), and those sim
        ranks -> the device groups one call carries (built once, shared by every call)."""
        found = self._families.get(family)
        if found is None:
            size = 0 if family.block == "all" else block_size(self.plan, family.axis,
                                                              self.mesh)
            of_rank, by_sig = {}, {}
            for g in collective_families(self.mesh, family.axis, family.block, size):
                sig = tuple(sorted({self.sim_of[x] for x in g}))
                by_sig.setdefault(sig, []).append(g)
                for x in g:
                    of_rank[x] = (g, sig)
            found = self._families[family] = (of_rank, by_sig)
        return found

    def _groups(self, family, sig, group) -> tuple[tuple, ...]:
        key = (family, sig) if self.representative else (family, tuple(group))
        found = self._shared.get(key)
        if found is None:
            groups = self._family(family)[1][sig] if self.representative else [group]
            found = self._shared[key] = tuple(tuple(self.devices[x] for x in g) for g in groups)
        return found

    def _pairs(self, me: int, src: int, dst: int):
        key = (src, dst, None if self.representative else me)
        found = self._shared.get(key)
        if found is None:
            stride = self.mesh.stride["pp"]
            members = (stage_ranks(self.plan, src) if self.representative
                       else [me + (src - self.stage_of[me]) * stride])
            pairs = [(r, r + (dst - src) * stride) for r in members]
            found = self._shared[key] = (pairs, tuple((self.devices[a], self.devices[b])
                                                      for a, b in pairs))
        return found

    def post(self, sim: int, req: Request) -> int | None:
        """The op for one request of ``sim``'s lowering; returns its id."""
        p, deps = self.program, tuple(d for d in req.deps if d is not None)
        item, me = req.item, self.real_of[sim]
        if req.kind == "compute":
            label = item.label + (f" mb{req.microbatch}" if req.microbatch >= 0 else "")
            return p.compute(sim, item.work.seconds, deps, stream=req.stream,
                             flops=item.work.flops, mem_bytes=item.work.bytes,
                             category=item.category, label=label)
        if req.kind == "call":
            group, sig = self._family(item.family)[0][me]
            key = (req.tag, req.microbatch, item.name, item.family, sig)
            call = self._calls.get(key)
            if call is None:
                label = f"{item.name} x{item.count}" if item.count > 1 else item.name
                call = self._calls[key] = p.collective(
                    item.op, item.bytes, self._groups(item.family, sig, group), sig,
                    repeat=item.count, label=label)
            return p.post(sim, call, stream=req.stream, deps=deps,
                          category=item.category or item.family.axis)
        if req.kind == "transfer":
            here = self.stage_of[me]
            src, dst = (here, item.peer) if item.direction == "send" else (item.peer, here)
            pairs, devices = self._pairs(me, src, dst)
            sig = (self.sim_of[pairs[0][0]], self.sim_of[pairs[0][1]])
            key = (item.what, item.vstage, req.microbatch, sig)
            call = self._calls.get(key)
            if call is None:
                call = self._calls[key] = p.transfer(
                    devices, item.bytes, participants=sig,
                    label=f"{item.what} ({item.vstage}, {req.microbatch})")
            return p.post(sim, call, stream=req.stream, deps=deps, kind=item.direction,
                          category="pp")
        ranks = self.ranks_of(sim)
        pairs = offload_pairs(self.cluster, [self.devices[r] for r in ranks], item.where,
                              item.to_device)
        call = p.transfer(pairs, item.bytes, participants=(sim,), label=item.label)
        return p.post(sim, call, stream=req.stream, deps=deps, category="offload")

    def ranks_of(self, sim: int) -> list[int]:
        """The real ranks ``sim`` stands for: its stage, or itself."""
        me = self.real_of[sim]
        return stage_ranks(self.plan, self.stage_of[me]) if self.representative else [me]

    def build(self) -> Program:
        for sim, me in enumerate(self.real_of):
            lowering = lower_stage(self.step.stages[self.stage_of[me]])
            try:
                request = next(lowering)
                while True:
                    request = lowering.send(self.post(sim, request))
            except StopIteration:
                pass
        return self.program


def build_program(step, cluster, representative: bool = True) -> Program:
    """The Program of ``step`` on ``cluster`` (one rank per stage, or every rank)."""
    return _Builder(step, cluster, representative).build()


def simulate_flow(step, cluster, simulation, trace: bool = False) -> StepOutcome:
    """Run ``step`` through the engine; the :class:`StepOutcome` of the critical rank."""
    program = build_program(step, cluster, simulation.ranks == "representative")
    comm = CommModel(cluster, symmetric=simulation.network == "symmetric")
    result = simulate(program, cluster, comm, record_links=trace)
    return step_outcome(program, result, step, cluster, trace=trace)


def step_outcome(program: Program, result, step, cluster, ops: range | None = None,
                 ranks: range | None = None, trace: bool = False) -> StepOutcome:
    """The :class:`StepOutcome` of the ops ``ops`` on the ranks ``ranks`` of a simulated
    ``program`` (default: all of them; one job's step when several shared the run, timed
    from 0). Link arrays are the whole run's."""
    ops = range(len(program.ops)) if ops is None else ops
    ranks = range(len(program.ranks)) if ranks is None else ranks
    mine = program.ops[ops.start:ops.stop]
    framework = FRAMEWORKS[step.training.framework]
    compute, comm, on_sms = {}, {}, {}
    for op in mine:
        at = op.rank - ranks.start
        start, end = float(result.op_start_s[op.id]), float(result.op_end_s[op.id])
        if op.kind == "compute":
            if op.stream == "compute":
                compute.setdefault(at, []).append((start, end))
            continue
        began = max(start, result.call_start_s.get(op.call, start))
        comm.setdefault(at, []).append((began, end))
        if slows_compute(op.stream, framework):
            on_sms.setdefault(at, []).append((began, end))
    ends = np.full(len(ranks), 0.0)
    np.maximum.at(ends, [op.rank - ranks.start for op in mine],
                  result.op_end_s[ops.start:ops.stop])
    parts = critical_breakdown(ends, compute, comm)
    critical = critical_rank(ends)
    parts["hidden_sm_comm_s"] = hidden_time(compute.get(critical, ()), on_sms.get(critical, ()))
    weight = np.array([program.ranks[op.rank].stands_for for op in mine])
    events = None
    if trace:
        from clustersim.engine.trace import trace_events   # json and the trace only on demand

        events = trace_events(result, cluster)
    return StepOutcome(
        step_time_s=float(ends.max()) if len(ends) else 0.0, **parts,
        flops=float(np.dot(weight, [op.flops for op in mine])),
        mem_bytes=float(np.dot(weight, [op.mem_bytes for op in mine])),
        link_bytes=result.link_bytes, link_busy_s=result.link_busy_s,
        link_peak_util=result.link_peak_util, trace=events)
