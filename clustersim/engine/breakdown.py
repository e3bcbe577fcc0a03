"""Where a rank's step time goes: compute, exposed communication, and idle (bubble).

On a rank's main (``compute``) stream, time is spent computing, blocked in communication it
must wait for (from the moment the call could start until it ends: *exposed* communication),
or idle: waiting for a pipeline neighbour's data or for a partner to arrive (the *bubble*).
Communication on side streams that overlaps compute counts in ``comm_s`` but not in
``exposed_comm_s``. The three parts sum to the step time.

>>> from clustersim.engine import Program, simulate
>>> from clustersim.topology import build_cluster
>>> c = build_cluster("dgx-h100", devices=8)
>>> p = Program(); r = p.add_rank(c.devices[0])
>>> _ = p.compute(r, 1e-3)
>>> rank_breakdown(simulate(p, c), r)["compute_s"]
0.001
"""

from __future__ import annotations

__all__ = ["rank_breakdown", "critical_rank", "MAIN_STREAM"]

MAIN_STREAM = "compute"


def critical_rank(result) -> int:
    """The simulated rank whose last op ends last (the one that sets the step time)."""
    ends = {}
    for op in result.program.ops:
        ends[op.rank] = max(ends.get(op.rank, 0.0), result.op_end_s[op.id])
    return max(sorted(ends), key=lambda r: ends[r]) if ends else 0


def rank_breakdown(result, rank: int) -> dict[str, float]:
    """``compute_s``, ``comm_s`` (all communication time, overlapped or not),
    ``exposed_comm_s`` and ``bubble_s`` of one simulated rank over the step."""
    start, end = result.op_start_s, result.op_end_s
    compute = exposed = comm = 0.0
    for op in result.program.ops:
        if op.rank != rank:
            continue
        duration = float(end[op.id] - start[op.id])
        if op.kind == "compute":
            if op.stream == MAIN_STREAM:
                compute += duration
            continue
        began = max(float(start[op.id]), result.call_start_s.get(op.call, start[op.id]))
        moving = float(end[op.id]) - began
        comm += moving
        if op.stream == MAIN_STREAM:
            exposed += moving
    step = float(result.step_time_s)
    return {"compute_s": compute, "comm_s": comm, "exposed_comm_s": exposed,
            "bubble_s": max(0.0, step - compute - exposed)}
