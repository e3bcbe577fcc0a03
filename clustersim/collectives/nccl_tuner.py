"""What NCCL's tuner *believes* a ring or a tree costs, so ``algorithm="nccl"`` can choose as
NCCL does (and be wrong where NCCL is wrong), while the time charged stays this model's.

NCCL (``src/graph/tuning.cc``) estimates ``latency + size / algbw`` per algorithm and
protocol from a per-channel graph bandwidth: the intra-node one when the job spans at most two
nodes (``bw = nNodes <= 2 ? bwIntra : bwInter``), else the inter-node one. It then scales that
bus bandwidth per algorithm and protocol: ring LL 0.5, ring LL128 0.92; tree x 0.92 (LL:
1/3.8, LL128 7/9 on one node, 120/128 across nodes), and converts bus to algorithm bandwidth
by ``p / nsteps`` for rings and ``0.5`` for trees. The tree's factor 0.5 says every rank
moves ``2S`` whatever the node count, so NCCL never credits a double binary tree with moving
less over the NICs at two nodes (where it moves half a ring's bytes); and at two nodes NCCL
prices the NIC-bound ring at NVLink bandwidth. Both beliefs decide the bundled "NCCL default"
rows (e.g. 2 x 8 A100 with 4 NICs: NCCL runs the ring, 86 GB/s, not the tree).

Here, for groups spanning nodes, the graph bandwidth is this model's own ring bus bandwidth
on one node (``bwIntra``) or on the whole group (``bwInter``); latencies are this model's
(from the same calibration); candidates other than ring and tree (NVLS, direct, SHARP) are
believed at this model's price. Inside one fabric (one node) the beliefs are this model's
prices: the single-node sweeps the calibration is fitted on are NCCL's own choices already.
"""

from __future__ import annotations

import numpy as np

from clustersim.collectives.cost import profile
from clustersim.collectives.group_structure import group_info
from clustersim.collectives.op_types import bus_factor

__all__ = ["nccl_estimates", "RING_PROTOCOL_FACTOR", "TREE_PROTOCOL_FACTOR"]

# tuning.cc "model refinements" (bus bandwidth factors per protocol)
RING_PROTOCOL_FACTOR = {"simple": 1.0, "ll128": 0.92, "ll": 0.5}
TREE_PROTOCOL_FACTOR = {"simple": 0.92, "ll128": 0.92 * 120 / 128, "ll": 0.92 / 3.8}


def _ring_busbw_Bps(cluster, members, cal) -> float:
    """This model's all_reduce ring bus bandwidth on ``members`` (Simple, bandwidth part)."""
    p = len(members)
    if p < 2:
        return float("inf")
    pr = profile(cluster, [list(members)], "all_reduce", "ring/simple", cal)
    per_byte = float(np.sum(np.maximum(np.where(pr.rate_Bps > 0, pr.coef / pr.rate_Bps, 0.0),
                                       pr.reduce_coef / pr.reduce_Bps)))
    return bus_factor("all_reduce", p) / per_byte if per_byte > 0 else float("inf")


def _graph_bw_Bps(cluster, group, cal) -> float:
    info = group_info(cluster, group)
    nodes = 1 if info.flat else len(info.nodes)
    if nodes <= 2 and not info.flat:
        return _ring_busbw_Bps(cluster, [info.members[i] for i in info.nodes[0]], cal)
    return _ring_busbw_Bps(cluster, list(group), cal)


def nccl_estimates(cluster, group, op: str, sizes, names, times, profs, cal) -> np.ndarray:
    """NCCL's estimated seconds ``[candidate, size]`` for ``names`` (``name/protocol``), given
    this model's ``times`` and ``profs`` (their latencies are used as they are)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    p = len(group)
    info = group_info(cluster, group)
    if info.flat:
        # inside one fabric NCCL's graph bandwidth is the one this model prices (the
        # single-node sweeps the calibration is fitted on): its beliefs and ours agree
        return np.asarray(times, dtype=np.float64)
    bw = _graph_bw_Bps(cluster, group, cal)
    nsteps = 2 * (p - 1) if op == "all_reduce" else p - 1
    out = np.array(times, dtype=np.float64, copy=True)
    for k, (name, pr) in enumerate(zip(names, profs)):
        algo, _, proto = name.partition("/")
        if algo not in ("ring", "tree") or p < 2:
            continue
        latency = float(np.sum(pr.steps * pr.alpha_s))
        if algo == "ring":
            algbw = bw * RING_PROTOCOL_FACTOR[proto] * p / nsteps
        else:
            algbw = bw * TREE_PROTOCOL_FACTOR[proto] * 0.5
        out[k] = latency + sizes / algbw
    return out
