"""Where a rank's step time goes: compute, exposed communication, and idle (bubble).

On a rank, *compute* is the time its main stream runs kernels. Communication is active from
the moment a call can start (every participant has posted it) until it ends, on any stream;
the part of it that no compute overlaps is *exposed* communication. The rest of the step is
*bubble*: idle, waiting for a pipeline neighbour or a partner to arrive. The three parts sum
to the step time; ``comm_s`` is all communication time, hidden or not. Both fidelities hand
their intervals to :func:`critical_breakdown`.

>>> rank_breakdown([(0.0, 2.0)], [(1.0, 3.0)], step_time_s=4.0)
{'compute_s': 2.0, 'comm_s': 2.0, 'exposed_comm_s': 1.0, 'bubble_s': 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["union_length", "rank_breakdown", "critical_rank", "critical_breakdown",
           "hidden_time"]

Intervals = Sequence[tuple[float, float]]


def _merge(intervals: Intervals) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def union_length(intervals: Intervals) -> float:
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


def rank_breakdown(compute: Intervals, comm: Intervals, step_time_s: float
                   ) -> dict[str, float]:
    """``compute_s``, ``comm_s``, ``exposed_comm_s`` and ``bubble_s`` of one rank, from the
    intervals its main stream computes and its calls are active."""
    compute_m, comm_m = _merge(compute), _merge(comm)
    compute_s = sum(e - s for s, e in compute_m)
    comm_s = sum(e - s for s, e in comm_m)
    exposed = comm_s - _overlap(compute_m, comm_m)
    return {"compute_s": compute_s, "comm_s": comm_s, "exposed_comm_s": exposed,
            "bubble_s": max(0.0, step_time_s - compute_s - exposed)}


def critical_breakdown(rank_end_s: Sequence[float], compute: Mapping[int, Intervals],
                       comm: Mapping[int, Intervals]) -> dict[str, float]:
    """The breakdown of the rank whose last op ends last (the one that sets the step time;
    the first of equals), over the step that rank ends.

    >>> critical_breakdown([1.0, 3.0], {0: [(0, 1)], 1: [(0, 2)]}, {1: [(2, 3)]})["bubble_s"]
    0.0
    """
    step = max(rank_end_s) if len(rank_end_s) else 0.0
    rank = critical_rank(rank_end_s)
    return rank_breakdown(compute.get(rank, ()), comm.get(rank, ()), float(step))


def critical_rank(rank_end_s: Sequence[float]) -> int:
    """The rank whose last op ends last (the first of equals)."""
    return max(range(len(rank_end_s)), key=lambda r: (rank_end_s[r], -r)) if len(
        rank_end_s) else 0


def hidden_time(compute: Intervals, comm: Intervals) -> float:
    """How long ``comm`` ran while ``compute`` did.

    >>> hidden_time([(0.0, 2.0)], [(1.0, 3.0)])
    1.0
    """
    return _overlap(_merge(compute), _merge(comm))
