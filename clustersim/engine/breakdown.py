"""Where a rank's step time goes: compute, exposed communication, and idle (bubble).

On a rank, *compute* is the time its main (``compute``) stream runs kernels. Communication
is active from the moment a call can start (every participant has posted it) until it ends,
on any stream; the part of it that no compute overlaps is *exposed* communication. The rest
of the step is *bubble*: idle, waiting for a pipeline neighbour or a partner to arrive. The
three parts sum to the step time; ``comm_s`` is all communication time, hidden or not.

>>> from clustersim.engine import Program, simulate
>>> from clustersim.topology import build_cluster
>>> c = build_cluster("dgx-h100", devices=8)
>>> p = Program(); r = p.add_rank(c.devices[0])
>>> _ = p.compute(r, 1e-3)
>>> rank_breakdown(simulate(p, c), r)["compute_s"]
0.001
"""

from __future__ import annotations

__all__ = ["rank_breakdown", "critical_rank", "MAIN_STREAM", "union_length"]

MAIN_STREAM = "compute"


def critical_rank(result) -> int:
    """The simulated rank whose last op ends last (the one that sets the step time)."""
    ends: dict[int, float] = {}
    for op in result.program.ops:
        ends[op.rank] = max(ends.get(op.rank, 0.0), float(result.op_end_s[op.id]))
    return max(sorted(ends), key=lambda r: ends[r]) if ends else 0


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by a set of intervals.

    >>> union_length([(0, 2), (1, 3), (5, 6)])
    4
    """
    return sum(end - start for start, end in _merge(intervals))


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of the intersection of two merged interval lists."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def rank_breakdown(result, rank: int) -> dict[str, float]:
    """``compute_s``, ``comm_s``, ``exposed_comm_s`` and ``bubble_s`` of one simulated rank."""
    start, end = result.op_start_s, result.op_end_s
    compute, comm = [], []
    for op in result.program.ops:
        if op.rank != rank:
            continue
        if op.kind == "compute":
            if op.stream == MAIN_STREAM:
                compute.append((float(start[op.id]), float(end[op.id])))
            continue
        began = max(float(start[op.id]), result.call_start_s.get(op.call, start[op.id]))
        comm.append((began, float(end[op.id])))
    compute_m, comm_m = _merge(compute), _merge(comm)
    compute_s = sum(e - s for s, e in compute_m)
    comm_s = sum(e - s for s, e in comm_m)
    exposed = comm_s - _overlap(compute_m, comm_m)
    step = float(result.step_time_s)
    return {"compute_s": compute_s, "comm_s": comm_s, "exposed_comm_s": exposed,
            "bubble_s": max(0.0, step - compute_s - exposed)}
