"""Algorithms that follow the fabric hierarchy: ``hierarchical`` (node, then network) and
``multidim`` (one torus dimension after another).

``hierarchical`` all-reduce on a two-level group of N nodes of L ranks (NCCL's and
Horovod's hierarchical all-reduce; ASTRA-sim's 2-D): reduce-scatter inside every node by ring
(all nodes at once), then L concurrent all-reduces across nodes, the j-th joining local rank
j of every node on ``S/L`` each (one rail each), then all-gather inside every node.

``multidim`` on a group that is a full sub-grid of a torus (the TPU's all-reduce over every
torus dimension at once): the buffer is split into ``n`` parts for ``n`` varying dimensions;
part k reduce-scatters along dimension k by bidirectional rings on every line at once, then
along k+1 on the ``1/X_k`` that is left, ..., then all-gathers back in the reverse order. At
every phase each dimension carries exactly one part, so all ``2n`` links of a chip are busy:
``T ~ alpha * 2 sum_d (X_d - 1) + 2 (p-1)/p S / (n * W_bidi)`` rather than one ring's
bandwidth (ASTRA-sim's multi-dimensional all-reduce runs the dimensions one after another
instead). Reduce-scatter and all-gather alone run the first or the second half.

>>> from clustersim.network import Cluster
>>> from clustersim.topology import torus
>>> from clustersim.collectives.group_structure import group_info
>>> c = Cluster.from_graph(torus((4, 4)))
>>> [(ph.steps, len(ph.src)) for ph in expand_multidim(c, group_info(c, c.devices), "all_reduce", 1.0)]
[(3, 64), (3, 64), (3, 64), (3, 64)]
"""

from __future__ import annotations

import numpy as np

from clustersim.collectives.group_structure import sub_lattice
from clustersim.collectives.phase import Phase
from clustersim.collectives.ring import ring_phase
from clustersim.errors import InputError

__all__ = ["expand_hierarchical", "expand_multidim", "merge_concurrent"]


def merge_concurrent(parts: list[tuple[Phase, list[int]]], label: str) -> Phase:
    """One phase from concurrent sub-group phases, each with its positions in the group."""
    src = np.concatenate([np.asarray(pos)[ph.src] for ph, pos in parts])
    dst = np.concatenate([np.asarray(pos)[ph.dst] for ph, pos in parts])
    nbytes = np.concatenate([ph.bytes for ph, _ in parts])
    return Phase(src.astype(np.int64), dst.astype(np.int64), nbytes,
                 max(ph.steps for ph, _ in parts), max(ph.reduce_bytes for ph, _ in parts),
                 label)


def _ring_on(lines: list[list[int]], op: str, size_bytes: float, bidirectional: bool,
             label: str) -> Phase:
    parts = []
    for line in lines:
        n = len(line)
        orders = [list(range(n)), list(range(n))[::-1]] if bidirectional and n > 2 else \
            [list(range(n))]
        parts.append((ring_phase(n, op, size_bytes, orders), line))
    return merge_concurrent(parts, label)


def expand_hierarchical(cluster, info, op: str, size_bytes: float, root: int = 0,
                        matrix=None) -> list[Phase]:
    if op != "all_reduce":
        raise InputError(f"hierarchical is defined for all_reduce, not {op}")
    if info.flat or not info.uniform:
        raise InputError("hierarchical needs a group spanning several nodes (scale-up "
                         "domains) with the same number of ranks (>1) in each")
    L, S = info.local_size, size_bytes
    nodes = [list(n) for n in info.nodes]
    rails = [[node[j] for node in nodes] for j in range(L)]
    return [_ring_on(nodes, "reduce_scatter", S, False, "reduce_scatter in node"),
            _ring_on(rails, "all_reduce", S / L, False, "all_reduce across nodes"),
            _ring_on(nodes, "all_gather", S, False, "all_gather in node")]


def _stream_phases(line_sets, op: str, size_bytes: float, label: str) -> list[Phase]:
    """One stream of ``multidim``: reduce-scatter along ``line_sets`` in order, then
    all-gather back in the reverse order (or only one half for reduce_scatter/all_gather)."""
    rs, sizes, S = [], [], size_bytes
    for d, lines in line_sets:
        sizes.append(S)
        rs.append(_ring_on(lines, "reduce_scatter", S, True, f"{label} reduce_scatter dim {d}"))
        S /= len(lines[0])
    ag = [_ring_on(lines, "all_gather", s, True, f"{label} all_gather dim {d}")
          for (d, lines), s in reversed(list(zip(line_sets, sizes)))]
    return rs if op == "reduce_scatter" else ag if op == "all_gather" else rs + ag


def _merge_streams(streams: list[list[Phase]]) -> list[Phase]:
    """Phase j of every stream at once (the streams use different dimensions at each j)."""
    out = []
    for parts in zip(*streams):
        out.append(Phase(np.concatenate([ph.src for ph in parts]),
                         np.concatenate([ph.dst for ph in parts]),
                         np.concatenate([ph.bytes for ph in parts]),
                         max(ph.steps for ph in parts), max(ph.reduce_bytes for ph in parts),
                         " | ".join(ph.label for ph in parts)))
    return out


def expand_multidim(cluster, info, op: str, size_bytes: float, root: int = 0,
                    matrix=None) -> list[Phase]:
    if op not in ("all_reduce", "reduce_scatter", "all_gather"):
        raise InputError(f"multidim is defined for all_reduce, reduce_scatter, all_gather, "
                         f"not {op}")
    lattice = sub_lattice(info)
    if lattice is None:
        raise InputError("multidim needs a group that is a full sub-grid of one torus")
    dims, coords = lattice
    if info.p == 1:
        return []
    line_sets = []
    for d in dims:
        lines: dict[tuple, list[int]] = {}
        for pos in sorted(coords, key=lambda i: coords[i][d]):
            key = tuple(x for k, x in enumerate(coords[pos]) if k != d)
            lines.setdefault(key, []).append(pos)
        line_sets.append((d, list(lines.values())))
    # n streams of S/n, stream k taking the dimensions in the order k, k+1, ...: at every
    # phase each dimension's links carry exactly one stream, so all run at once
    n = len(line_sets)
    streams = [_stream_phases(line_sets[k:] + line_sets[:k], op, size_bytes / n, f"part {k}")
               for k in range(n)]
    return _merge_streams(streams)
