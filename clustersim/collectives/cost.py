"""The analytic price of a collective's phases, and the pieces the flow engine shares with it.

A phase costs ``steps * alpha_phase + max(max_f bytes_f / rate_f, reduce_bytes / reduce_bw)``:

- rates are max-min fair shares (:func:`clustersim.network.maxmin.max_min_rates`) of the
  phase's own transfers, of every group of the family launched together (``groups``), on the
  effective link capacities (:func:`effective_capacity_Bps`: raw capacity x calibrated
  efficiency of the link's technology);
- ``alpha_phase`` (:func:`phase_latency_s` / steps) is built from the path each transfer
  takes: the protocol's per-hop cost over that transport (the largest of its links'
  technologies: NVLink, PCI or NET as in NCCL's tuner) plus the physical latency of every
  link and switch on the route (hardware catalog). A pipelined phase of several steps moves
  data hop after hop through its transfers' routes, so it pays steps x the *mean* hop latency:
  a rail-aligned ring of N nodes x L GPUs pays ``2(N-1)`` NET steps and ``2(p-N)`` NVLink
  steps (NCCL's ring model counts them the same way), not ``2(p-1)`` of one constant; a
  one-step phase waits for its slowest transfer: steps x the *max*. The collective's first
  phase also pays its launch (NCCL's base latency), once;
- NCCL pipelines reduction with transfer, so a phase takes the longer of the two; a reduction
  streams two operands in and one out of memory, so ``reduce_bw = memory bandwidth x
  memory efficiency / 3`` (the slowest member).

The flow engine runs the same phases as flows on the same capacities and adds the same
per-phase latency, so both agree exactly on an uncontended collective.

Collective cost is linear in S once rates are known (transfers' bytes scale with S), so a
:class:`Profile` (per phase: steps, alpha, critical bytes per unit size and its rate, reduce
bytes per unit size and reduce bandwidth) is cached per (cluster, groups, op, algorithm) and
re-priced for any size by one kernel call (:func:`clustersim.collectives.select.price`).

>>> from clustersim.network import build_cluster
>>> c = build_cluster("dgx-h100", 8)
>>> t = profile(c, [c.devices], "all_reduce", "ring/simple").time_s(2**30)
>>> round(1.75 * 2**30 / t / 1e9)   # busbw, GB/s: NVLink4 450 GB/s x efficiency, - latency
316
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clustersim.collectives.algorithms import expand
from clustersim.collectives.calibration import (Calibration, default_calibration,
                                                protocol_columns, tech_table)
from clustersim.collectives.group_structure import shape_key
from clustersim.collectives.phase import Phase
from clustersim.collectives.routes import routes_of_pairs, transfer_routes
from clustersim.hardware.catalog import get_device
from clustersim.network.maxmin import max_min_rates
from clustersim.network.symmetry import family_class

__all__ = ["effective_capacity_Bps", "phase_latency_s", "phase_rates", "phase_time_s",
           "reduce_bw_Bps", "Profile", "profile", "family_phases"]


def effective_capacity_Bps(cluster, calibration: Calibration | None = None) -> np.ndarray:
    """Capacity of every link x the calibrated efficiency of its technology.

    >>> from clustersim.network import build_cluster
    >>> c = build_cluster("dgx-a100", 8)
    >>> bool(np.all(effective_capacity_Bps(c) <= c.links.capacity_Bps))
    True
    """
    table = tech_table(cluster, calibration or default_calibration())
    return cluster.links.capacity_Bps * table[cluster.links.tech_id, 0]


def _step_latency(cluster, pairs, protocol: str, cal: Calibration, steps: int,
                  routes=None, in_switch: bool = False) -> float:
    """Per-step latency of a phase: mean (several steps) or max (one step) over its transfers
    of the path's protocol cost (the largest per-hop cost of its links' technologies; none
    for an in-switch reduction, whose latency is its launch) plus the path's physical latency
    (every link and switch it crosses, from the catalog). ``routes`` are the CSR arrays of
    ``routes_of_pairs(cluster, pairs)`` when the caller has them already."""
    table = tech_table(cluster, cal)
    col = protocol_columns(protocol)[0]
    ptr, link, _, lat = routes if routes is not None else routes_of_pairs(cluster, pairs)
    lengths = np.diff(ptr)
    routed = lengths > 0
    if not routed.any():
        return 0.0
    hops = lat[routed]
    if not in_switch:
        cost = table[cluster.links.tech_id[link], col]
        # the largest protocol cost along each routed transfer's path, all at once
        hops = hops + np.maximum.reduceat(cost, ptr[:-1][routed])
    return float(hops.max()) if steps <= 1 else float(hops.mean())


def phase_latency_s(cluster, group, phase: Phase, calibration: Calibration | None = None
                    ) -> float:
    """The phase's launch latency + ``steps`` x its per-step latency (see the module
    docstring for the rule).

    >>> from clustersim.network import build_cluster
    >>> c = build_cluster("dgx-a100", 8)
    >>> [ph] = expand(c, c.devices, "all_gather", 1e6, "ring/ll")
    >>> cal = default_calibration()
    >>> hop = cal.tech("nvlink3").hop_ll_s + 300e-9  # + NVLink route: 2 links, 1 switch
    >>> launch = cal.launch("ll")   # the host-side launch is not counted by default
    >>> abs(phase_latency_s(c, c.devices, ph) - (launch + 7 * hop)) < 1e-12
    True
    """
    members = list(group)
    pairs = [(members[s], members[d]) for s, d in zip(phase.src, phase.dst)]
    step = _step_latency(cluster, pairs, phase.protocol, calibration or default_calibration(),
                         phase.steps, in_switch=phase.algorithm in ("nvls", "sharp"))
    return phase.launch_s + phase.steps * step


def reduce_bw_Bps(cluster, members, calibration: Calibration | None = None) -> float:
    """Bytes/s a rank reduces: slowest member's memory bandwidth x efficiency / 3."""
    cal = calibration or default_calibration()
    return min(_memory_bw(cluster, m) for m in members) * cal.memory_efficiency / 3.0


def _memory_bw(cluster, device) -> float:
    """The device's memory edges, else its catalog spec (standalone tori have no memory
    nodes), else unlimited."""
    node = cluster.graph.nodes[device]
    if "memory" in node:
        return cluster.memory_bw_Bps(device)
    if node.get("device"):
        return get_device(node["device"]).memory.bw_Bps
    return float("inf")


def family_phases(cluster, groups, op, size_bytes, algorithm, calibration=None, **kwargs):
    """Expand ``algorithm`` on every group of a family; returns, per phase index, the list of
    ``(phase, members)`` of all groups (their transfers run concurrently)."""
    by_shape: dict = {}  # groups of one shape expand to the same positional phases
    per_group = []
    for g in groups:
        key = shape_key(cluster, g)
        if key not in by_shape:
            by_shape[key] = expand(cluster, g, op, size_bytes, algorithm,
                                   calibration=calibration, **kwargs)
        per_group.append(by_shape[key])
    n = len(per_group[0])
    if any(len(ph) != n for ph in per_group):
        raise ValueError("groups of one family expand to different numbers of phases")
    return [[(per_group[g][k], list(groups[g])) for g in range(len(groups))] for k in range(n)]


def phase_rates(cluster, parts, capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """Max-min rates of the concurrent transfers ``parts = [(phase, members), ...]``; returns
    ``(bytes, rates, (node pairs, their CSR routes))`` (an empty list when nothing moves)."""
    pairs = [(m[s], m[d]) for ph, m in parts for s, d in zip(ph.src, ph.dst)]
    nbytes = np.concatenate([ph.bytes for ph, _ in parts]) if parts else np.zeros(0)
    if not pairs:
        return nbytes, np.zeros(0), pairs
    routes = _concat([transfer_routes(cluster, m, ph.src, ph.dst) for ph, m in parts])
    ptr, link, weight, _ = routes
    return nbytes, _rates(ptr, link, weight, capacity), (pairs, routes)


_RATES: dict = {}


def _rates(ptr, link, weight, capacity):
    """Max-min rates, cached: a ring's Simple, LL128 and LL variants share routes and
    capacities (only their bytes differ), so they share one solve."""
    key = (ptr.tobytes(), link.tobytes(), weight.tobytes(), capacity.tobytes())
    hit = _RATES.get(key)
    if hit is None:
        if len(_RATES) > 256:
            _RATES.clear()
        hit = _RATES[key] = max_min_rates(ptr, link, weight, capacity)
    return hit


def _concat(parts) -> tuple:
    """One CSR route set from several (the family's groups run at once)."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [int(p[0][-1]) for p in parts[:-1]])
    ptr = np.concatenate([[0]] + [p[0][1:] + o for p, o in zip(parts, offsets)])
    return (ptr.astype(np.int64), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))


@dataclass(frozen=True)
class Profile:
    """Per phase of one (cluster, groups, op, algorithm): what pricing a size needs."""

    steps: np.ndarray        # int64
    alpha_s: np.ndarray      # latency per step (the launch spread over the phase's steps)
    coef: np.ndarray         # wire bytes per byte of S of the slowest transfer
    rate_Bps: np.ndarray     # its max-min rate
    reduce_coef: np.ndarray  # bytes reduced per byte of S
    reduce_Bps: np.ndarray   # reduction bandwidth
    algorithm: str

    def time_s(self, size_bytes: float) -> float:
        """Plain-numpy price of one size (the kernels price many at once)."""
        xfer = np.where(self.rate_Bps > 0, self.coef * size_bytes / self.rate_Bps, 0.0)
        red = self.reduce_coef * size_bytes / self.reduce_Bps
        return float(np.sum(self.steps * self.alpha_s + np.maximum(xfer, red)))


def _build_profile(cluster, groups, op, algorithm, cal, **kwargs) -> Profile:
    capacity = effective_capacity_Bps(cluster, cal)
    red_bw = reduce_bw_Bps(cluster, [m for g in groups for m in g], cal)
    rows = []
    for parts in family_phases(cluster, groups, op, 1.0, algorithm, cal, **kwargs):
        nbytes, rates, routed = phase_rates(cluster, parts, capacity)
        first = parts[0][0]
        steps = max(ph.steps for ph, _ in parts)
        pairs, routes = routed if routed else ([], None)
        step = _step_latency(cluster, pairs, first.protocol, cal, steps, routes,
                             first.algorithm in ("nvls", "sharp")) if pairs else 0.0
        # steps x alpha is the phase's whole latency (launch included), as the kernel reads it
        alpha = (first.launch_s + steps * step) / max(steps, 1)
        steps = max(steps, 1)
        if len(nbytes):
            per = np.where(np.isfinite(rates), nbytes / rates, 0.0)
            k = int(np.argmax(per))
            coef, rate = (float(nbytes[k]), float(rates[k])) if per[k] > 0 else (0.0, 1.0)
        else:
            coef, rate = 0.0, 1.0
        rows.append((steps, alpha, coef, rate, max(ph.reduce_bytes for ph, _ in parts), red_bw))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return Profile(arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4],
                   arr[:, 5], algorithm)


_PROFILES: dict = {}


def profile(cluster, groups, op: str, algorithm: str, calibration: Calibration | None = None,
            root: int = 0, skew: float = 1.0, symmetric: bool = True) -> Profile:
    """The cached :class:`Profile` of ``algorithm`` (with a protocol) for a family of groups.
    ``symmetric``: families that are images of each other under the fabric's symmetry (the
    same collective on every pipeline stage) share one profile, priced once per class
    (:func:`clustersim.network.symmetry.family_class`); else each family on its own."""
    cal = calibration or default_calibration()
    members = (symmetric and family_class(cluster, groups)) or tuple(tuple(g) for g in groups)
    key = (id(cluster), members, op, algorithm, id(cal), root, skew)
    hit = _PROFILES.get(key)
    if hit is not None and hit[0] is cluster and hit[1] is cal:
        return hit[2]
    prof = _build_profile(cluster, [list(g) for g in groups], op, algorithm, cal, root=root,
                          skew=skew)
    if len(_PROFILES) > 4096:
        _PROFILES.clear()
    _PROFILES[key] = (cluster, cal, prof)
    return prof


def phase_time_s(cluster, group, phase: Phase, calibration: Calibration | None = None,
                 groups=None) -> float:
    """Analytic time of one expanded phase of ``group`` (optionally alongside the same phase
    of the other ``groups`` of its family, given as ``[(phase, members), ...]``)."""
    cal = calibration or default_calibration()
    parts = [(phase, list(group))] + list(groups or [])
    nbytes, rates, _ = phase_rates(cluster, parts, effective_capacity_Bps(cluster, cal))
    xfer = float(np.max(np.where(np.isfinite(rates), nbytes / rates, 0.0))) if len(rates) \
        else 0.0
    red = phase.reduce_bytes / reduce_bw_Bps(cluster, group, cal)
    return phase_latency_s(cluster, group, phase, cal) + max(xfer, red)
