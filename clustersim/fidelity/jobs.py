"""Several training jobs on one fabric (``jobs:``): each job's step plan lowered onto its own
devices, the Programs merged into one and simulated once, so every job's flows share the
links max-min fairly; and each job alone on the same devices, for its slowdown.

The first job is the *primary*: it runs one step from time 0. The others are *neighbours*:
they start at time 0 too and run step after step, each step of a rank after its previous one
(per rank, as a framework does: no barrier across ranks), until the primary's step has ended,
so a neighbour never stops interfering early. The number of neighbour steps starts at
``ceil(primary alone / neighbour alone) + 1`` and grows (a new run) while a neighbour's last
step ends before the primary's. A neighbour's step time is its mean over the steps that began
while the primary's step ran (the last may end after it), against the same number of steps
alone; its breakdown (``shared``) is its first step's.

Ranks of different jobs never post the same call (:meth:`Program.append` keeps every call
among its own job's ranks), and each job's calls list the groups of its own devices, so the
representative mode carries over: a representative rank's call holds every group of its class
on the job's placement.

>>> from clustersim.config.experiment import SimulationConfig, TrainingConfig
>>> from clustersim.network import build_cluster
>>> from clustersim.step import plan_step
>>> from clustersim.workload import get_model, resolve_plan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> model = get_model("llama3-8b")
>>> training = TrainingConfig(global_batch=8, parallelism={"tp": 8})
>>> def job(name, devices):
...     view = cluster.on_devices(devices)
...     plan = resolve_plan(training, model, len(devices))
...     return JobStep(name, plan_step(model, plan, view, training), view)
>>> a, b = simulate_jobs([job("a", cluster.devices[:8]), job("b", cluster.devices[8:])],
...                      cluster, SimulationConfig())
>>> a.slowdown, b.slowdown, a.steps     # one node each: no link in common
(1.0, 1.0, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from clustersim.engine.core import simulate
from clustersim.engine.program import Program
from clustersim.fidelity.flow import build_program, step_outcome
from clustersim.result.outcome import StepOutcome

__all__ = ["JobStep", "JobOutcome", "simulate_jobs"]

# Rounds of "add neighbour steps and run again"; each round sizes the steps from the last
# run's times, so a second round is rare and a third would mean the sizing is wrong.
_MAX_ROUNDS = 4


@dataclass(frozen=True)
class JobStep:
    """One job: its name, its step plan, and the cluster seen from its devices
    (:meth:`Cluster.on_devices`: rank ``r`` of its plan on its ``r``-th device)."""

    name: str
    step: object
    cluster: object


@dataclass(frozen=True)
class JobOutcome:
    """A job's (first) step with every job on the fabric, the same step alone on the same
    devices, its step time shared and alone (a neighbour's: the mean over the steps that
    overlap the primary's), and how many steps of it the shared run simulated. In ``shared``
    the bytes per link are the job's own (routes do not change with contention: the alone
    run's bytes); busy time and peak utilisation per link are the shared run's, every job's
    traffic."""

    name: str
    shared: StepOutcome
    alone: StepOutcome
    step_time_s: float
    step_time_alone_s: float
    steps: int

    @property
    def slowdown(self) -> float:
        """Step time shared over step time alone (1.0: the neighbours cost nothing)."""
        return self.step_time_s / self.step_time_alone_s


@dataclass(frozen=True)
class _Span:
    """Where one job sits in the merged program: its ranks and the ops of each step."""

    ranks: range
    steps: tuple[range, ...]


def _alone(job: JobStep, program: Program) -> StepOutcome:
    return step_outcome(program, simulate(program, job.cluster), job.step, job.cluster)


def _last_ops(program: Program, ops: range) -> dict[int, tuple[int, ...]]:
    """Rank -> the last op of each of its streams among ``ops`` (the end of its step)."""
    last: dict[tuple, int] = {}
    for op in program.ops[ops.start:ops.stop]:
        last[(op.rank, op.stream)] = op.id
    out: dict[int, tuple[int, ...]] = {}
    for (rank, _), op_id in last.items():
        out[rank] = out.get(rank, ()) + (op_id,)
    return out


def _merged(jobs: Sequence[JobStep], programs: Sequence[Program], steps: Sequence[int]
            ) -> tuple[Program, list[_Span]]:
    """Every job's program in one, the neighbours' repeated ``steps[k]`` times."""
    merged, spans = Program(), []
    for job, program, count in zip(jobs, programs, steps):
        start = len(merged.ops)
        ranks = merged.append(program, label=job.name)
        step_ops = [range(start, len(merged.ops))]
        for _ in range(count - 1):
            after = _last_ops(merged, step_ops[-1])
            begin = len(merged.ops)
            merged.append(program, ranks=ranks, after=after)
            step_ops.append(range(begin, len(merged.ops)))
        spans.append(_Span(range(ranks[0], ranks[-1] + 1), tuple(step_ops)))
    return merged, spans


def _end_s(result, ops: range) -> float:
    return float(np.max(result.op_end_s[ops.start:ops.stop]))


def _mean_steps_s(job: JobStep, program: Program, result, span: _Span, until_s: float
                  ) -> tuple[float, float]:
    """A neighbour's mean step over the steps that began before ``until_s`` (each begins
    when its previous one ends), in the shared run and alone for as many steps."""
    ends = [_end_s(result, ops) for ops in span.steps]
    began = 1 + sum(1 for end in ends[:-1] if end < until_s)
    alone_program, alone_spans = _merged([job], [program], [began])
    alone = simulate(alone_program, job.cluster)
    return ends[began - 1] / began, _end_s(alone, alone_spans[0].steps[-1]) / began


def simulate_jobs(jobs: Sequence[JobStep], cluster, simulation, trace: bool = False
                  ) -> list[JobOutcome]:
    """Run ``jobs`` (the primary first) together on ``cluster`` and each alone; one
    :class:`JobOutcome` per job, in order (see the module docstring)."""
    representative = simulation.ranks == "representative"
    programs = [build_program(j.step, j.cluster, representative) for j in jobs]
    alone = [_alone(j, p) for j, p in zip(jobs, programs)]
    primary_s = alone[0].step_time_s
    steps = [1] + [math.ceil(primary_s / a.step_time_s) + 1 for a in alone[1:]]
    for _ in range(_MAX_ROUNDS):
        merged, spans = _merged(jobs, programs, steps)
        result = simulate(merged, cluster, record_links=trace)
        primary_end = _end_s(result, spans[0].steps[0])
        short = {k: _end_s(result, spans[k].steps[-1]) for k in range(1, len(jobs))}
        short = {k: end for k, end in short.items() if end < primary_end}
        if not short:
            break
        for k, end in short.items():
            steps[k] = math.ceil(steps[k] * primary_end / end) + 1
    else:
        raise RuntimeError(f"neighbour jobs still end before the primary after "
                           f"{_MAX_ROUNDS} rounds: {steps} steps")
    out = []
    for k, (job, span) in enumerate(zip(jobs, spans)):
        shared = step_outcome(merged, result, job.step, cluster, ops=span.steps[0],
                              ranks=span.ranks, trace=trace and k == 0)
        shared = replace(shared, link_bytes=alone[k].link_bytes)
        times = ((shared.step_time_s, alone[k].step_time_s) if k == 0 else
                 _mean_steps_s(job, programs[k], result, span, primary_end))
        out.append(JobOutcome(job.name, shared, alone[k], *times, steps[k]))
    return out
