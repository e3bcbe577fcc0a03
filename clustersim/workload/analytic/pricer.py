"""Prices on one cluster for the analytic model, cached across a sweep: each collective on
the family of groups the program builder forms (:mod:`~clustersim.workload.groups`), priced
by the collectives layer as ``collective_time_s`` would (algorithm ``auto``); the bytes it
puts on each link; pipeline hops at the flow engine's point-to-point price; the stage work of
:mod:`~clustersim.workload.stagework`.

>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.topology import build_cluster
>>> from clustersim.workload import get_model, resolve_plan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> plan = resolve_plan(TrainingConfig(global_batch=16, parallelism={"tp": 4, "pp": 2}),
...                     get_model("llama3-8b"), 16)
>>> pr = pricer_for(cluster)
>>> tp_groups = pr.family((mesh_key_of(plan), "tp", "all", 0, 1))   # stage 1's TP groups
>>> len(tp_groups), tp_groups[0]
(2, ['n1/g0', 'n1/g1', 'n1/g2', 'n1/g3'])
>>> seconds, _ = pr.price((mesh_key_of(plan), "tp", "all", 0, 1), "all_reduce", 2**26)
>>> 0 < seconds < 1e-3
True
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from clustersim.workload.groups import collective_families
from clustersim.workload.mesh import Mesh, mesh_for_plan
from clustersim.workload.plan import ParallelPlan
from clustersim.workload.stagework import chunk_work, dp_comms, optimizer_work

__all__ = ["Pricer", "pricer_for", "PRICERS", "mesh_key_of", "stage_families"]


def mesh_key_of(plan: ParallelPlan) -> tuple:
    """``(order, shape)`` of the plan's mesh: all the group families depend on."""
    mesh = mesh_for_plan(plan)
    return mesh.order, mesh.shape


@lru_cache(maxsize=1024)
def stage_families(mesh_key: tuple, axis: str, block: str, block_size: int) -> dict:
    """Stage -> the builder's family of rank groups for ``axis`` (``block``: ``all``, or the
    ``inner``/``across`` groups of hybrid sharding), in ``Mesh.groups`` order
    (:func:`~clustersim.workload.groups.collective_families`, split by the stage of each
    group's first rank). The tied-embedding family (first with last stage) is stage 0's."""
    order, shape = mesh_key
    mesh = Mesh(dict(zip(order, shape)), order)
    stride, pp = mesh.stride["pp"], mesh.sizes["pp"]
    out: dict[int, list] = {}
    for g in collective_families(mesh, axis, block, block_size):
        out.setdefault((g[0] // stride) % pp, []).append(g)
    return out


class Pricer:
    """What repeats in a sweep on one cluster: families, the candidate algorithms' profiles
    per (family, op), prices per size, link-byte vectors, pipeline hops, stage work."""

    def __init__(self, cluster):
        from clustersim.collectives import effective_capacity_Bps

        self.cluster = cluster
        self.mem_bw = cluster.memory_bw_Bps(cluster.devices[0])
        self.capacity = effective_capacity_Bps(cluster)
        self.J_per_B = cluster.links.energy_J_per_bit * 8.0
        self.groups, self.curves, self.prices, self.units = {}, {}, {}, {}
        self.hops, self.pairs, self.chunks, self.stages = {}, {}, {}, {}
        self.templates, self.stage_prices, self.p2p = {}, {}, {}

    def family(self, key: tuple) -> list:
        found = self.groups.get(key)
        if found is None:
            devices = self.cluster.devices
            found = self.groups[key] = [[devices[r] for r in g] for g in stage_families(
                *key[:4]).get(key[4], [[0]])]
        return found

    def price(self, key: tuple, op: str, size: float) -> tuple:
        """``(seconds, link unit key)`` of ``op`` of ``size`` bytes on family ``key`` (no
        unit for a one-rank group): ``collective_time_s(cluster, family[0], op, size,
        groups=family)``, from the cached profiles of its candidate algorithms."""
        found = self.prices.get((key, op, size))
        if found is None:
            family = self.family(key)
            found = (0.0, None)
            if len(family[0]) > 1:
                curves = self.curves.get((key, op))
                if curves is None:
                    curves = self.curves[(key, op)] = self._curves(family, op)
                best, name = float("inf"), None
                for algorithm, rows in curves:   # price_points_kernel, per candidate
                    t = 0.0
                    for fixed, coef, rate, rcoef, rbw in rows:
                        x, r = coef * size / rate, rcoef * size / rbw
                        t += fixed + (x if x > r else r)
                    if t < best:
                        best, name = t, algorithm
                found = (best, self._unit((key, op, name), family, op, name))
            if len(self.prices) > 500_000:   # sizes vary with every plan: keep it bounded
                self.prices.clear()
            self.prices[(key, op, size)] = found
        return found

    def _curves(self, family, op):
        from clustersim.collectives.cost import profile
        from clustersim.collectives.select import candidates

        out = []
        for name in candidates(self.cluster, family[0], op, "auto"):
            pr = profile(self.cluster, family, op, name)
            out.append((name, [tuple(map(float, (st * a, c, r, rc, rb))) for st, a, c, r, rc, rb
                               in zip(pr.steps, pr.alpha_s, pr.coef, pr.rate_Bps,
                                      pr.reduce_coef, pr.reduce_Bps)]))
        return out

    def _unit(self, key, family, op, algorithm):
        """Link bytes per byte of size, laid out as the flow engine does (the first group's
        phases on every group of the family); returns ``key``."""
        if key not in self.units:
            from clustersim.collectives import expand

            routes = [(lk, w * b) for phase in expand(self.cluster, family[0], op, 1.0, algorithm)
                      for group in family for s, d, b in zip(phase.src, phase.dst, phase.bytes)
                      for lk, w, _ in (self.cluster.route(group[s], group[d]),)]
            self.units[key] = self._sparse(routes)
        return key

    def _sparse(self, routes):
        if not routes:
            return (np.zeros(0, np.int64), np.zeros(0)), 0.0
        idx, inv = np.unique(np.concatenate([lk for lk, _ in routes]), return_inverse=True)
        unit = np.bincount(inv, weights=np.concatenate([w for _, w in routes]),
                           minlength=len(idx))
        return (idx, unit), float(unit @ self.J_per_B[idx])

    def hop(self, mesh_key: tuple, src: int, dst: int, size: float) -> tuple:
        """``(seconds, link unit key, wire bytes per pair)`` of every rank of stage ``src``
        sending ``size`` bytes to its peer on ``dst`` at once: the message's wire bytes and
        latency as the flow engine prices them (:func:`~clustersim.engine.comm.p2p_cost`),
        at the slowest max-min rate."""
        key = (mesh_key, src, dst, size)
        found = self.hops.get(key)
        if found is None:
            # imported here: the engine pulls in numba, needed only once a hop is priced
            from clustersim.engine.comm import p2p_cost

            pairs, rate, unit = self._pairs(mesh_key, src, dst)
            wire, latency = p2p_cost(self.cluster, *pairs[0], size, self.p2p)
            found = self.hops[key] = (latency + (wire / rate if rate > 0 else 0.0), unit, wire)
        return found

    def _pairs(self, mesh_key, src, dst):
        key = ("hop", mesh_key, src, dst)
        found = self.pairs.get(key)
        if found is None:
            from clustersim.network.maxmin import max_min_rates

            order, shape = mesh_key
            stride, devices = int(np.prod(shape[:order.index("pp")])), self.cluster.devices
            pairs = [(devices[src * stride + i], devices[dst * stride + i])
                     for i in range(stride)]
            routes = [self.cluster.route(a, b)[:2] for a, b in pairs]
            rates = max_min_rates(np.cumsum([0] + [len(lk) for lk, _ in routes]),
                                  np.concatenate([lk for lk, _ in routes]),
                                  np.concatenate([w for _, w in routes]), self.capacity)
            self.units[key] = self._sparse(routes)
            slowest = float(rates.min())
            found = self.pairs[key] = (pairs, slowest if np.isfinite(slowest) else 0.0, key)
        return found

    # The stagework functions read only these fields of a plan, so one canonical plan per
    # (shape, layers, first/last) serves every stage and scenario (tests hold them equal).
    def chunk(self, model, plan: ParallelPlan, vstage: int, training):
        """``chunk_work`` of virtual stage ``vstage``."""
        layers, index = _canonical(plan.stage_layers[vstage], vstage == 0,
                                   vstage == len(plan.stage_layers) - 1)
        precision, recompute, attention = (training.precision, training.recompute,
                                           training.attention)
        key = (model, plan.tp, plan.sp, plan.cp, plan.ep, plan.zero, plan.micro_batch,
               plan.seq_len, layers, index, precision, recompute, attention)
        found = self.chunks.get(key)
        if found is None:
            canon = ParallelPlan(tp=plan.tp, pp=len(layers), cp=plan.cp, ep=plan.ep,
                                 sp=plan.sp, zero=plan.zero, micro_batch=plan.micro_batch,
                                 seq_len=plan.seq_len, stage_layers=layers)
            found = self.chunks[key] = chunk_work(model, canon, index, self.cluster.device,
                                                  precision, recompute, self.mem_bw,
                                                  attention=attention)
        return found

    def stage(self, model, plan: ParallelPlan, stage: int, precision: str, optimizer: str):
        """``(optimizer_work, dp_comms)`` of physical ``stage``."""
        layers, index = _canonical(plan.layers_on_stage(stage), stage == 0,
                                   stage == plan.pp - 1)
        key = (model, plan.tp, plan.dp, plan.cp, plan.ep, plan.sp, plan.zero, plan.shard_group,
               plan.micro_batch, plan.seq_len, layers, index, precision, optimizer)
        found = self.stages.get(key)
        if found is None:
            canon = ParallelPlan(tp=plan.tp, pp=len(layers), dp=plan.dp, cp=plan.cp,
                                 ep=plan.ep, sp=plan.sp, zero=plan.zero,
                                 shard_group=plan.shard_group, micro_batch=plan.micro_batch,
                                 seq_len=plan.seq_len, stage_layers=layers)
            found = self.stages[key] = (
                optimizer_work(model, canon, index, self.cluster.device, precision, optimizer,
                               self.mem_bw), dp_comms(model, canon, index, precision))
        return found


def _canonical(layers: int, first: bool, last: bool) -> tuple[tuple[int, ...], int]:
    """Stage layers, and the index, of a plan whose stage ``index`` holds ``layers`` and is
    the first and/or last as asked (they hold the embedding and the output layer)."""
    if first:
        return ((layers,), 0) if last else ((layers, 1), 0)
    return ((1, layers), 1) if last else ((1, layers, 1), 1)


PRICERS: dict = {}   # id(cluster) -> its Pricer


def pricer_for(cluster) -> Pricer:
    """The cluster's :class:`Pricer`, kept across calls (a sweep prices many plans on one
    cluster); at most 64 clusters are kept."""
    found = PRICERS.get(id(cluster))
    if found is None or found.cluster is not cluster:
        if len(PRICERS) >= 64:
            PRICERS.clear()
        found = PRICERS[id(cluster)] = Pricer(cluster)
    return found
