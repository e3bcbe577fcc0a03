"""The pipeline part of the analytic model: when stage 0's main stream ends, given each
stage's forward and backward slots (closed forms of the schedules in
:mod:`~clustersim.workload.schedules`; the derivation is in :mod:`clustersim.workload.analytic`).

Equal stages give the classic ``(m + p - 1)(F + B)``, and ``(mv + p - 1)(F + B)/v``
interleaved (Narayanan et al. SC'21); GPipe is two flow shops.

>>> pipeline_span_s("gpipe", [[1.0]] * 4, [[2.0]] * 4, 8)   # (m + p - 1)(F + B)
33.0
"""

from __future__ import annotations

__all__ = ["warmup_forwards", "pipeline_span_s"]


def warmup_forwards(schedule: str, stage: int, stages: int, microbatches: int,
                    chunks: int = 1) -> int:
    """Forwards ``stage`` runs before its first backward, as
    :func:`clustersim.workload.schedules.schedule` orders them.

    >>> [warmup_forwards("1f1b", s, 4, 8) for s in range(4)], warmup_forwards("gpipe", 0, 4, 8)
    ([3, 2, 1, 0], 8)
    """
    if schedule == "gpipe":
        return microbatches * chunks
    if schedule == "1f1b":
        return min(stages - stage - 1, microbatches)
    return min(2 * (stages - stage - 1) + (chunks - 1) * stages, microbatches * chunks)


def pipeline_span_s(schedule: str, fwd_s, bwd_s, microbatches: int, stall_s=None,
                    delay_s=None, drain_bwd_s=None) -> float:
    """When stage 0's main stream ends: ``fwd_s[s][c]``/``bwd_s[s][c]`` are the forward and
    backward slots of chunk ``c`` on stage ``s``; ``stall_s[s]`` one-off waits of stage
    ``s``, ``delay_s[s]`` the delay of its first forward (non-decreasing in ``s``),
    ``drain_bwd_s[s][c]`` the last backward of each chunk when it differs.

    The longest of these paths: the first micro-batch's forwards down to chunk ``c`` of stage
    ``s`` (the rings of chunks before ``c`` instead of ``s``'s own ``c p`` forwards), the rest
    of ``s``'s work, the last micro-batch's backwards from its chunk ``c'`` back to stage 0;
    and before ``s``'s first backward, the round trip through the stages after it when that
    is longer than its warm-up forwards of the last chunk. Exact for equal stages, a lower
    bound otherwise.

    >>> pipeline_span_s("1f1b", [[1.0]] * 4, [[2.0]] * 4, 8)   # (m + p - 1)(F + B)
    33.0
    >>> pipeline_span_s("1f1b-interleaved", [[0.5, 0.5]] * 4, [[1.0, 1.0]] * 4, 8)
    28.5
    """
    p, v, m = len(fwd_s), len(fwd_s[0]), microbatches
    stall_s = stall_s or [0.0] * p
    delay_s = delay_s or [0.0] * p
    drain = drain_bwd_s or bwd_s
    if schedule == "gpipe":
        f, b = [x[0] for x in fwd_s], [x[0] for x in bwd_s]
        return (delay_s[-1] + sum(f) + (m - 1) * max(f) + sum(d[0] for d in drain)
                + (m - 1) * max(b) + max(stall_s))
    ring_f = [sum(fwd_s[r][c] for r in range(p)) for c in range(v)]
    ring_b = [sum(drain[r][c] for r in range(p)) for c in range(v)]
    below = [0.0] * (p + 1)   # the round trip through the stages after s, last chunk
    for s in range(p - 1, -1, -1):
        below[s] = below[s + 1] + fwd_s[s][v - 1] + bwd_s[s][v - 1]
    best = 0.0
    above_f, above_b = [0.0] * v, [0.0] * v   # per chunk, summed over the stages before s
    for s in range(p):
        own_f, own_b = fwd_s[s], bwd_s[s]
        work = m * sum(own_f[c] + own_b[c] for c in range(v)) + stall_s[s]
        ahead = max(0, warmup_forwards(schedule, s, p, m, v) - (v - 1) * p) * own_f[v - 1]
        trip = below[s + 1] + delay_s[-1] - delay_s[s]
        down = up = -float("inf")
        ring_in = ring_out = skip_f = skip_b = 0.0
        for c in range(v):
            down = max(down, ring_in + above_f[c] - skip_f)
            up = max(up, ring_out + above_b[c] - skip_b)
            ring_in, ring_out = ring_in + ring_f[c], ring_out + ring_b[c]
            skip_f, skip_b = skip_f + p * own_f[c], skip_b + p * own_b[c]
        best = max(best, delay_s[s] + down + work + max(0.0, trip - ahead) + up)
        for c in range(v):
            above_f[c] += own_f[c]
            above_b[c] += drain[s][c]
    return best
