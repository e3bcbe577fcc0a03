"""Max-min fair sharing of links among concurrent flows (progressive filling).

Flows are given as CSR arrays: flow ``f`` crosses links ``link[ptr[f]:ptr[f+1]]`` carrying
the fractions ``weight[...]`` of its rate on each (a flow split over parallel paths puts a
fraction on each). All unfixed flows grow at the same rate until some link saturates; the
flows on it are fixed; repeat (Bertsekas & Gallager, *Data Networks*, 6.5.2). A flow with an
empty route is not limited by the network: its rate is ``inf``.

>>> import numpy as np
>>> ptr = np.array([0, 1, 2]); link = np.array([0, 0]); weight = np.array([1.0, 1.0])
>>> max_min_rates(ptr, link, weight, np.array([10.0]))
array([5., 5.])
"""

from __future__ import annotations

import math

import numpy as np

from clustersim._numba import njit

__all__ = ["max_min_rates", "max_min_rates_py"]

# A link is saturated when less than this fraction of its capacity is left (float slack).
_SATURATED = 1e-9


@njit
def _max_min_kernel(ptr, link, weight, capacity):
    # Progressive filling by "water level": every unfixed flow's rate is the current level,
    # so raising the level touches no flow; a flow is fixed (rate = level) when a link on its
    # route saturates, found through the link -> flows transpose. Work per round is the
    # links still carrying unfixed flows, not every flow. Whether a link still carries an
    # unfixed flow is an integer count: float sums of weights leave residues.
    n = ptr.shape[0] - 1
    m = capacity.shape[0]
    rate = np.zeros(n)
    fixed = np.zeros(n, dtype=np.bool_)
    wsum = np.zeros(m)
    carrying = np.zeros(m, dtype=np.int64)
    degree = np.zeros(m + 1, dtype=np.int64)
    unfixed = 0
    for f in range(n):
        if ptr[f + 1] == ptr[f]:
            rate[f] = np.inf
            fixed[f] = True
            continue
        unfixed += 1
        for k in range(ptr[f], ptr[f + 1]):
            wsum[link[k]] += weight[k]
            carrying[link[k]] += 1
            degree[link[k] + 1] += 1
    lptr = np.cumsum(degree)
    fill = lptr[:-1].copy()
    lflow = np.empty(lptr[-1], dtype=np.int64)
    for f in range(n):
        for k in range(ptr[f], ptr[f + 1]):
            lflow[fill[link[k]]] = f
            fill[link[k]] += 1
    active = np.nonzero(degree[1:])[0]
    n_active = active.shape[0]
    remaining = capacity.copy()
    level = 0.0
    while unfixed > 0 and n_active > 0:
        inc = np.inf
        for i in range(n_active):
            l = active[i]
            share = remaining[l] / wsum[l]
            if share < inc:
                inc = share
        if inc < 0.0:
            inc = 0.0
        level += inc
        for i in range(n_active):
            l = active[i]
            remaining[l] -= inc * wsum[l]
        for i in range(n_active):
            l = active[i]
            if carrying[l] > 0 and remaining[l] <= _SATURATED * capacity[l]:
                for j in range(lptr[l], lptr[l + 1]):
                    f = lflow[j]
                    if fixed[f]:
                        continue
                    fixed[f] = True
                    rate[f] = level
                    unfixed -= 1
                    for k in range(ptr[f], ptr[f + 1]):
                        wsum[link[k]] -= weight[k]
                        carrying[link[k]] -= 1
        kept = 0
        for i in range(n_active):  # drop links with no unfixed flow left
            l = active[i]
            if carrying[l] > 0:
                active[kept] = l
                kept += 1
        n_active = kept
    for f in range(n):
        if not fixed[f]:
            rate[f] = level
    return rate


def max_min_rates(ptr: np.ndarray, link: np.ndarray, weight: np.ndarray,
                  capacity: np.ndarray) -> np.ndarray:
    """Max-min fair rate of every flow (bytes/s); checks shapes, then runs the kernel."""
    ptr = np.ascontiguousarray(ptr, dtype=np.int64)
    link = np.ascontiguousarray(link, dtype=np.int64)
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    capacity = np.ascontiguousarray(capacity, dtype=np.float64)
    if ptr.ndim != 1 or ptr.shape[0] < 1 or ptr[-1] != link.shape[0] or \
            link.shape != weight.shape:
        raise ValueError("flows must be CSR arrays: ptr[-1] == len(link) == len(weight)")
    if link.size and (link.min() < 0 or link.max() >= capacity.shape[0]):
        raise ValueError("a flow crosses a link index outside the capacity array")
    if np.any(capacity <= 0):
        raise ValueError("every link capacity must be positive")
    return _max_min_kernel(ptr, link, weight, capacity)


def max_min_rates_py(ptr, link, weight, capacity) -> list[float]:
    """Plain-Python twin of the kernel, for tests: the textbook loop (raise every unfixed
    flow, fix the flows of saturated links, repeat)."""
    n = len(ptr) - 1
    rate = [0.0] * n
    fixed = [False] * n
    wsum: dict[int, float] = {}
    carrying: dict[int, int] = {}
    for f in range(n):
        if ptr[f + 1] == ptr[f]:
            rate[f], fixed[f] = math.inf, True
        for k in range(ptr[f], ptr[f + 1]):
            wsum[link[k]] = wsum.get(link[k], 0.0) + weight[k]
            carrying[link[k]] = carrying.get(link[k], 0) + 1
    remaining = {l: float(capacity[l]) for l in wsum}
    while not all(fixed):
        inc = max(0.0, min(remaining[l] / wsum[l] for l in wsum if carrying[l] > 0))
        for l in wsum:
            remaining[l] -= inc * wsum[l]
        for f in range(n):
            if not fixed[f]:
                rate[f] += inc
        for f in range(n):
            if fixed[f]:
                continue
            route = range(ptr[f], ptr[f + 1])
            if any(carrying[link[k]] > 0 and remaining[link[k]] <= _SATURATED * capacity[link[k]]
                   for k in route):
                fixed[f] = True
                for k in route:
                    wsum[link[k]] -= weight[k]
                    carrying[link[k]] -= 1
    return rate
