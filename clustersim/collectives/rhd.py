"""Recursive halving-doubling (Rabenseifner's all-reduce; Thakur, Rabenseifner & Gropp 2005).

Reduce-scatter by recursive halving: in step k (k = 0..log2(p)-1) rank i exchanges
``S / 2^(k+1)`` with rank ``i XOR p/2^(k+1)`` and reduces what it receives; all-gather by
recursive doubling mirrors it. Each step is its own phase (one step of latency). All-reduce is
the two back to back: ``2 log2(p) alpha + 2 (p-1)/p S / B``.

A group of p ranks that is not a power of two is folded first (the standard fix): with
``r = p - 2^m`` extra ranks, the odd rank of each of the first ``r`` pairs sends its whole
vector to the even one, the ``2^m`` survivors run the power-of-two algorithm, and the even
ranks send the result back: two more phases of ``S`` each. Reduce-scatter and all-gather alone
have no such fold (the extra ranks would own no block): they refuse non-powers of two.

>>> from clustersim.network import build_cluster
>>> from clustersim.collectives.group_structure import group_info
>>> c = build_cluster("dgx-a100", 8)
>>> [(ph.steps, float(ph.bytes[0])) for ph in expand_rhd(c, group_info(c, c.devices), "all_reduce", 8.0)]
[(1, 4.0), (1, 2.0), (1, 1.0), (1, 1.0), (1, 2.0), (1, 4.0)]
"""

from __future__ import annotations

from clustersim.collectives.phase import Phase, make_phase
from clustersim.errors import InputError

__all__ = ["expand_rhd", "expand_pat", "halving_phases", "doubling_phases"]

RHD_OPS = ("all_reduce", "reduce_scatter", "all_gather")


def halving_phases(core: list[int], size_bytes: float) -> list[Phase]:
    """Recursive-halving reduce-scatter over the positions ``core`` (a power of two)."""
    n, out, chunk, d = len(core), [], size_bytes, len(core) // 2
    while d >= 1:
        chunk /= 2
        out.append(make_phase([(core[i], core[i ^ d], chunk) for i in range(n)], 1, chunk,
                              f"reduce_scatter halving d={d}"))
        d //= 2
    return out


def doubling_phases(core: list[int], size_bytes: float) -> list[Phase]:
    """Recursive-doubling all-gather over ``core``: the mirror of :func:`halving_phases`."""
    n, out, d = len(core), [], 1
    while d < n:
        chunk = size_bytes * d / n
        out.append(make_phase([(core[i], core[i ^ d], chunk) for i in range(n)], 1, 0.0,
                              f"all_gather doubling d={d}"))
        d *= 2
    return out


def expand_rhd(cluster, info, op: str, size_bytes: float, root: int = 0, matrix=None
               ) -> list[Phase]:
    if op not in RHD_OPS:
        raise InputError(f"rhd is defined for {', '.join(RHD_OPS)}, not {op}")
    p = info.p
    if p == 1:
        return []
    power = 1 << (p.bit_length() - 1)
    if op == "reduce_scatter":
        if power != p:
            raise InputError(f"rhd reduce_scatter needs a power-of-two group, not {p} ranks")
        return halving_phases(list(range(p)), size_bytes)
    if op == "all_gather":
        if power != p:
            raise InputError(f"rhd all_gather needs a power-of-two group, not {p} ranks")
        return doubling_phases(list(range(p)), size_bytes)
    extra = p - power
    core = [2 * i for i in range(extra)] + list(range(2 * extra, p))
    phases = []
    if extra:
        phases.append(make_phase([(2 * i + 1, 2 * i, size_bytes) for i in range(extra)], 1,
                                 size_bytes, "fold extra ranks"))
    phases += halving_phases(core, size_bytes) + doubling_phases(core, size_bytes)
    if extra:
        phases.append(make_phase([(2 * i, 2 * i + 1, size_bytes) for i in range(extra)], 1,
                                 0.0, "unfold extra ranks"))
    return phases


def expand_pat(cluster, info, op: str, size_bytes: float, root: int = 0, matrix=None
               ) -> list[Phase]:
    """NCCL's PAT (NCCL 2.23+) all_gather / reduce_scatter: log-depth like recursive
    halving/doubling, run by NCCL only with one rank per node (tuning.cc enables it for
    ``nRanks / nNodes == 1``), with the bulk protocol. Its per-rank set-up is in its launch
    (:func:`clustersim.collectives.algorithms.launch_latency_s`)."""
    if op not in ("all_gather", "reduce_scatter"):
        raise InputError(f"pat is defined for all_gather and reduce_scatter, not {op}")
    scaleout = info.fabric is not None and info.fabric.level != "scaleup" and \
        info.torus is None
    if not (info.flat and scaleout and len(info.nodes) == info.p):
        raise InputError("pat needs a group of one rank per node across the network (NCCL "
                         "runs PAT only with one rank per node)")
    return expand_rhd(cluster, info, op, size_bytes, root, matrix)
