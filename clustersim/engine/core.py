"""The SimPy core: run a Program on a Cluster.

Each (rank, stream) is a SimPy process that runs its ops in order; an op starts when its
dependencies are done. Compute ops take their duration. Communication ops post their call; the
call starts when every participant has posted, runs its batches of flows through the shared
FlowNetwork one after another, and ends every posting op at once. A program that can never
finish (an unmatched send, a dependency cycle across ranks) ends with :class:`Deadlock`, which
names each stuck rank and what it waits for, instead of hanging.

>>> from clustersim.engine.program import Program
>>> from clustersim.network import build_cluster
>>> c = build_cluster("dgx-h100", devices=8)
>>> p = Program()
>>> r = p.add_rank(c.devices[0])
>>> _ = p.compute(r, 2e-3)
>>> simulate(p, c).step_time_s
0.002
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import simpy

from clustersim.engine.comm import CommModel
from clustersim.engine.program import CollectiveCall, Program
from clustersim.network.flows import FlowNetwork

__all__ = ["SimResult", "Deadlock", "simulate"]


class Deadlock(RuntimeError):
    """The program cannot finish; the message names each stuck rank and what it waits for."""


@dataclass
class SimResult:
    """Times of every op and what every link carried."""

    program: Program
    step_time_s: float
    op_start_s: np.ndarray
    op_end_s: np.ndarray
    link_bytes: np.ndarray
    link_busy_s: np.ndarray
    link_peak_util: np.ndarray
    reshares: int
    link_samples: list = field(default_factory=list, repr=False)
    algorithms: dict = field(default_factory=dict, repr=False)
    call_start_s: dict = field(default_factory=dict, repr=False)


def _streams(program: Program) -> dict[tuple[int, str], list]:
    streams: dict[tuple[int, str], list] = defaultdict(list)
    for op in program.ops:
        streams[(op.rank, op.stream)].append(op)
    return streams


def _deadlock_message(program: Program, end: np.ndarray, posted: dict) -> str:
    lines = []
    seen_streams = set()
    for op in program.ops:
        if not np.isnan(end[op.id]) or (op.rank, op.stream) in seen_streams:
            continue
        seen_streams.add((op.rank, op.stream))
        rank = program.ranks[op.rank]
        what = f"rank {op.rank} ({rank.label or rank.device}) stream {op.stream!r} is stuck " \
               f"at op {op.id} {op.label!r}"
        if op.call is not None:
            call = program.calls[op.call]
            missing = [r for r in call.participants if r not in posted.get(op.call, set())]
            if missing:
                what += f": waits for rank(s) {missing} to post {call.label or 'its call'}"
        else:
            waiting = [d for d in op.deps if np.isnan(end[d])]
            if waiting:
                what += f": waits for op(s) {waiting[:5]}"
        lines.append(what)
        if len(lines) >= 8:
            lines.append("...")
            break
    return "deadlock: the program cannot finish\n  " + "\n  ".join(lines)


def simulate(program: Program, cluster, comm: CommModel | None = None,
             record_links: bool = False) -> SimResult:
    """Run ``program`` on ``cluster`` with the flow-level network; return a SimResult."""
    env = simpy.Environment()
    comm = comm or CommModel(cluster)
    net = FlowNetwork(env, comm.capacity_Bps, record=record_links)
    n = len(program.ops)
    start = np.full(n, np.nan)
    end = np.full(n, np.nan)
    done = [env.event() for _ in range(n)]
    posted: dict[int, set[int]] = {}
    call_done: dict[int, simpy.Event] = {}
    algorithms: dict[int, str] = {}
    call_start: dict[int, float] = {}

    def run_call(call, finished: simpy.Event):
        call_start[call.id] = env.now
        if isinstance(call, CollectiveCall):
            algorithms[call.id] = comm.algorithm(call)
        for flows, nbytes, latency, label in comm.batches(call):
            yield net.start_batch(flows, nbytes, latency, label)
        finished.succeed()

    def post(op) -> simpy.Event:
        call = program.calls[op.call]
        who = posted.setdefault(call.id, set())
        if op.rank in who:
            raise ValueError(f"rank {op.rank} posted call {call.id} ({call.label}) twice")
        who.add(op.rank)
        event = call_done.setdefault(call.id, env.event())
        if len(who) == len(call.participants):
            env.process(run_call(call, event))
        return event

    def run_stream(ops):
        for op in ops:
            waits = [done[d] for d in op.deps if not done[d].processed]
            if waits:
                yield simpy.AllOf(env, waits)
            start[op.id] = env.now
            if op.kind == "compute":
                if op.duration_s > 0:
                    yield env.timeout(op.duration_s)
            else:
                yield post(op)
            end[op.id] = env.now
            done[op.id].succeed()

    for ops in _streams(program).values():
        env.process(run_stream(ops))
    env.run()
    if np.isnan(end).any():
        raise Deadlock(_deadlock_message(program, end, posted))
    return SimResult(program, float(np.max(end)) if n else 0.0, start, end,
                     comm.physical(net.link_bytes, spread=True),
                     comm.physical(net.link_busy_s, spread=False),
                     comm.physical(net.link_peak_util, spread=False), net.reshares,
                     comm.physical_samples(net.samples), algorithms, call_start)
