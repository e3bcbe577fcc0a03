"""Uncontended prices on one cluster for the analytic fidelity, kept across a sweep: each
collective on the family of groups it runs on (all groups of the family at once, as the flow
fidelity launches them), priced as ``collective_time_s`` would (algorithm ``auto``); each
pipeline transfer and optimizer offload at the flow engine's point-to-point price over the
slowest max-min rate of its pairs; and the bytes each puts on every link.

The flow engine runs the same phases on the same capacities with the same latencies, so on a
call that nothing else contends with both fidelities agree exactly.

>>> from clustersim.network import build_cluster
>>> from clustersim.step.stepplan import Family
>>> from clustersim.workload import ParallelPlan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> plan = ParallelPlan(tp=4, pp=2, dp=2, stage_layers=(16, 16))
>>> prices = prices_for(cluster)
>>> seconds, unit = prices.collective(plan, Family("tp"), 1, "all_reduce", 2**26)
>>> 0 < seconds < 1e-3, len(prices.units[unit][0][0]) > 0
(True, True)
"""

from __future__ import annotations

import numpy as np

from clustersim.collectives import effective_capacity_Bps, expand, profile
from clustersim.collectives.select import candidates
from clustersim.engine.comm import p2p_cost
from clustersim.fidelity.placement import (offload_pairs, stage_groups, stage_pairs,
                                           stage_ranks)
from clustersim.network.maxmin import max_min_rates
from clustersim.workload.groups import block_size, home_stage
from clustersim.workload.mesh import mesh_for_plan

__all__ = ["Prices", "prices_for", "PRICES"]


class Prices:
    """What repeats in a sweep on one cluster: families, the candidate algorithms' profiles
    per (family, op), prices per size, link-byte vectors (``units``), transfers."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.capacity = effective_capacity_Bps(cluster)
        self.J_per_B = cluster.links.energy_J_per_bit * 8.0
        self.groups, self.curves, self.prices, self.units = {}, {}, {}, {}
        self.routes, self.p2p = {}, {}

    def family(self, plan, family, stage: int) -> tuple:
        """The device groups of ``family`` on ``stage`` (cached by mesh shape)."""
        mesh = mesh_for_plan(plan)
        size = 0 if family.block == "all" else block_size(plan, family.axis, mesh)
        key = (mesh.order, mesh.shape, family, size, home_stage(family.axis, stage, plan.pp))
        found = self.groups.get(key)
        if found is None:
            found = self.groups[key] = (key, stage_groups(plan, self.cluster, family, stage))
        return found

    def collective(self, plan, family, stage: int, op: str, size: float) -> tuple:
        """``(seconds, link unit key)`` of one ``op`` of ``size`` bytes on every group of
        ``family`` on ``stage`` at once, by the fastest candidate algorithm."""
        key, groups = self.family(plan, family, stage)
        found = self.prices.get((key, op, size))
        if found is None:
            curves = self.curves.get((key, op))
            if curves is None:
                curves = self.curves[(key, op)] = self._curves(groups, op)
            best, name = float("inf"), None
            for algorithm, rows in curves:   # price_points_kernel, per candidate
                t = 0.0
                for fixed, coef, rate, rcoef, rbw in rows:
                    x, r = coef * size / rate, rcoef * size / rbw
                    t += fixed + (x if x > r else r)
                if t < best:
                    best, name = t, algorithm
            found = (best, self._unit((key, op, name), groups, op, name))
            if len(self.prices) > 500_000:   # sizes vary with every plan: keep it bounded
                self.prices.clear()
            self.prices[(key, op, size)] = found
        return found

    def _curves(self, groups, op):
        family = [list(g) for g in groups]
        out = []
        for name in candidates(self.cluster, family[0], op, "auto"):
            pr = profile(self.cluster, family, op, name)
            out.append((name, [tuple(map(float, (st * a, c, r, rc, rb))) for st, a, c, r, rc, rb
                               in zip(pr.steps, pr.alpha_s, pr.coef, pr.rate_Bps,
                                      pr.reduce_coef, pr.reduce_Bps)]))
        return out

    def _unit(self, key, groups, op, algorithm):
        """Link bytes per byte of size, laid out as the flow engine does (the first group's
        phases on every group of the family); returns ``key``."""
        if key not in self.units:
            route = self.cluster.route
            routes = [(lk, w * b) for phase in expand(self.cluster, list(groups[0]), op, 1.0,
                                                      algorithm)
                      for group in groups for s, d, b in zip(phase.src, phase.dst, phase.bytes)
                      for lk, w, _ in (route(group[s], group[d]),)]
            self.units[key] = self._sparse(routes)
        return key

    def _sparse(self, routes):
        if not routes:
            return (np.zeros(0, np.int64), np.zeros(0)), 0.0
        idx, inv = np.unique(np.concatenate([lk for lk, _ in routes]), return_inverse=True)
        unit = np.bincount(inv, weights=np.concatenate([w for _, w in routes]),
                           minlength=len(idx))
        return (idx, unit), float(unit @ self.J_per_B[idx])

    def _slowest(self, key, pairs):
        """``(slowest max-min rate, link unit key)`` of flows between all ``pairs`` at once."""
        found = self.routes.get(key)
        if found is None:
            routes = [self.cluster.route(a, b)[:2] for a, b in pairs]
            rates = max_min_rates(np.cumsum([0] + [len(lk) for lk, _ in routes]),
                                  np.concatenate([lk for lk, _ in routes]),
                                  np.concatenate([w for _, w in routes]), self.capacity)
            self.units[key] = self._sparse(routes)
            slowest = float(rates.min())
            found = self.routes[key] = (slowest if np.isfinite(slowest) else 0.0, key)
        return found

    def _transfer(self, key, pairs, size: float) -> tuple:
        rate, unit = self._slowest(key, pairs)
        wire, latency = p2p_cost(self.cluster, *pairs[0], size, self.p2p)
        return latency + (wire / rate if rate > 0 else 0.0), unit, wire

    def hop(self, plan, src: int, dst: int, size: float) -> tuple:
        """``(seconds, link unit key, wire bytes per pair)`` of every rank of stage ``src``
        sending ``size`` bytes to its peer on ``dst`` at once."""
        mesh = mesh_for_plan(plan)
        key = ("hop", mesh.order, mesh.shape, src, dst)
        found = self.prices.get((key, size))
        if found is None:
            found = self.prices[(key, size)] = self._transfer(
                key, stage_pairs(plan, self.cluster, src, dst), size)
        return found

    def offload(self, plan, stage: int, where: str, to_device: bool, size: float) -> tuple:
        """``(seconds, link unit key, bytes per device)`` of every device of ``stage``
        moving ``size`` bytes to (or from) the memory its optimizer states live in."""
        mesh = mesh_for_plan(plan)
        key = ("offload", mesh.order, mesh.shape, stage, where, to_device)
        found = self.prices.get((key, size))
        if found is None:
            devices = [self.cluster.devices[r] for r in stage_ranks(plan, stage)]
            found = self.prices[(key, size)] = self._transfer(
                key, offload_pairs(self.cluster, devices, where, to_device), size)
        return found


PRICES: dict = {}   # id(cluster) -> its Prices


def prices_for(cluster) -> Prices:
    """The cluster's :class:`Prices`, kept across calls (a sweep prices many plans on one
    cluster); at most 64 clusters are kept."""
    found = PRICES.get(id(cluster))
    if found is None or found.cluster is not cluster:
        if len(PRICES) >= 64:
            PRICES.clear()
        found = PRICES[id(cluster)] = Prices(cluster)
    return found
