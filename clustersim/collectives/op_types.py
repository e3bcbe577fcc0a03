"""Collective operations: their names, what the size of a call means, and nccl-tests' bus
bandwidth factors.

Sizes follow nccl-tests: ``all_reduce``, ``broadcast`` and ``reduce`` take the buffer size S;
``all_gather`` the total output (p slices of S/p); ``reduce_scatter`` the total input;
``all_to_all`` the bytes each rank sends in all (S/p to each rank, itself included);
``send_recv`` the message each rank sends to the next.

nccl-tests reports ``algbw = S / t`` and ``busbw = algbw * factor`` where the factor makes busbw
comparable with the link rate whatever the op and group size (nccl-tests doc/PERFORMANCE.md):
2(p-1)/p for all_reduce, (p-1)/p for all_gather, reduce_scatter and all_to_all, 1 otherwise.

>>> bus_factor("all_reduce", 8)
1.75
>>> bus_factor("all_gather", 4), bus_factor("send_recv", 8)
(0.75, 1.0)
>>> check_op("allreduce")
Traceback (most recent call last):
...
clustersim.errors.InputError: unknown collective op 'allreduce'; did you mean 'all_reduce'? ...
"""

from __future__ import annotations

import numpy as np

from clustersim.errors import InputError, closest

__all__ = ["OPS", "bus_factor", "check_op", "all_to_all_matrix"]

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce",
       "send_recv")


def check_op(op: str) -> str:
    """``op`` if it is a known collective, else an InputError naming the closest."""
    if op in OPS:
        return op
    near = closest(str(op), OPS)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise InputError(f"unknown collective op {op!r}; {hint}(allowed: {', '.join(OPS)})")


def bus_factor(op: str, p: int) -> float:
    """nccl-tests' busbw / algbw for ``op`` on ``p`` ranks."""
    check_op(op)
    if p < 1:
        raise InputError(f"a group needs at least one rank, got {p}")
    if op == "all_reduce":
        return 2.0 * (p - 1) / p
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (p - 1) / p
    return 1.0


def all_to_all_matrix(p: int, size_bytes: float, skew: float = 1.0) -> np.ndarray:
    """Bytes rank i sends to rank j (diagonal: kept locally) for an all_to_all of ``size_bytes``
    per rank.

    ``skew`` = 1 is uniform (S/p each). ``skew`` > 1 models MoE routing imbalance: sender i
    gives rank ``i+1+k`` (mod p) a share proportional to ``skew ** (-k / (p - 1))``, so it
    favours rank i+1 most and itself least; every rank still sends S in all, the hottest
    destination of each sender gets ``skew`` times the coldest, and every rank receives S in
    all (the rotation keeps receive totals uniform). A caller with real routing statistics can
    pass its own matrix to the algorithms instead.

    >>> m = all_to_all_matrix(4, 400.0, skew=1.0)
    >>> m[0].tolist()
    [100.0, 100.0, 100.0, 100.0]
    >>> m = all_to_all_matrix(4, 400.0, skew=8.0)
    >>> round(float(m.sum(axis=1)[0]), 9), round(float(m.sum(axis=0)[2]), 9)
    (400.0, 400.0)
    >>> round(float(m[0, 1] / m[0, 0]), 6)
    8.0
    """
    if p < 1 or size_bytes < 0:
        raise InputError(f"all_to_all needs p >= 1 and a non-negative size, got p={p}, "
                         f"size={size_bytes}")
    if skew < 1:
        raise InputError(f"all_to_all skew must be >= 1 (1 = uniform), got {skew}")
    if p == 1:
        return np.array([[float(size_bytes)]])
    share = skew ** (-np.arange(p) / (p - 1))
    share = share / share.sum() * size_bytes
    out = np.empty((p, p))
    for i in range(p):
        out[i] = np.roll(share, i + 1)
    return out
