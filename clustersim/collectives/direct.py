"""Direct (one-shot) algorithms: every transfer in one phase of one step.

- all_reduce: every rank sends its whole buffer to every other and reduces the ``p-1`` it
  receives (one-shot all-reduce, as in TensorRT-LLM's custom all-reduce): ``alpha +
  (p-1) S / B``;
- reduce_scatter / all_gather: each rank sends ``S/p`` to every other;
- all_to_all: each rank sends ``S/p`` (or the row of a size matrix) to every other;
- broadcast / reduce: the root sends to (receives from) every rank ``S``;
- send_recv: every rank sends ``S`` to its successor (nccl-tests' sendrecv_perf pattern).

>>> from clustersim.network import build_cluster
>>> from clustersim.collectives.group_structure import group_info
>>> c = build_cluster("dgx-a100", 4)
>>> [ph] = expand_direct(c, group_info(c, c.devices), "all_gather", 400.0)
>>> len(ph.src), float(ph.bytes.sum()), ph.steps
(12, 1200.0, 1)
"""

from __future__ import annotations

from clustersim.collectives.phase import Phase, make_phase

__all__ = ["expand_direct"]


def expand_direct(cluster, info, op: str, size_bytes: float, root: int = 0, matrix=None
                  ) -> list[Phase]:
    p = info.p
    if p == 1:
        return []
    S = size_bytes
    everyone = [(i, j) for i in range(p) for j in range(p) if i != j]
    if op == "all_reduce":
        return [make_phase([(i, j, S) for i, j in everyone], 1, (p - 1) * S, op)]
    if op in ("reduce_scatter", "all_gather"):
        reduce = (p - 1) / p * S if op == "reduce_scatter" else 0.0
        return [make_phase([(i, j, S / p) for i, j in everyone], 1, reduce, op)]
    if op == "all_to_all":
        if matrix is None:
            return [make_phase([(i, j, S / p) for i, j in everyone], 1, 0.0, op)]
        return [make_phase([(i, j, float(matrix[i, j])) for i, j in everyone], 1, 0.0, op)]
    if op == "broadcast":
        return [make_phase([(root, j, S) for j in range(p) if j != root], 1, 0.0, op)]
    if op == "reduce":
        return [make_phase([(j, root, S) for j in range(p) if j != root], 1, (p - 1) * S, op)]
    # send_recv
    return [make_phase([(i, (i + 1) % p, S) for i in range(p)], 1, 0.0, op)]
