"""The ``analytic`` fidelity: a closed-form step time for the work of the flow program.

The work is the flow program's (:mod:`~clustersim.workload.program`): compute and collectives
from :mod:`~clustersim.workload.stagework`; every collective priced by the collectives layer
(``collective_time_s``, algorithm ``auto``) on the group family the builder forms, every send
at the flow engine's point-to-point cost. Only how the pieces combine differs. A slot of
chunk ``c`` on stage ``s`` is ``F = receive + compute + blocking TP/CP/EP collectives`` (a
receive waits for the whole transfer, a call starting once both sides have posted it, then
all-gathers it over TP without sequence parallelism; with ``overlap.tp_comm`` the TP
collectives run beside the compute: ``max(compute + blocking, TP)``), and ``B`` likewise.
The main stream of stage 0 ends at

    T = max_s [ D_s + down_s + W_s + max(0, RT_s - (k_s - (v-1)p) F_s) + up_s ]

``W_s = m sum_c (F_sc + B_sc)`` plus one-off stalls; ``down_s`` brings the first micro-batch
to ``s`` (``sum_{r<s} F_r``, or round the rings of earlier chunks when interleaved), ``up_s``
takes the last one back (``sum_{r<s} B_r``); ``RT_s``, the round trip through the stages
after ``s``, delays its first backward when longer than its ``k_s`` warm-up forwards (1F1B
``p - s - 1``, interleaved ``2(p - s - 1) + (v - 1)p``). Equal stages give the classic
``(m + p - 1)(F + B)``, and ``(mv + p - 1)(F + B)/v`` interleaved (Narayanan et al. SC'21);
GPipe is two flow shops, ``sum F + (m-1) max F + sum B + (m-1) max B``. ``D_s`` delays the
fill where first forwards wait for their parameters. Data parallelism adds, per stage:

- ZeRO-0/1 gradient buckets, reduced on the side stream as the last backward of each chunk
  makes them (``BUCKETS`` per chunk; hybrid sharding adds the across-block all-reduce): what
  does not fit under the remaining buckets of compute is exposed; without
  ``overlap.grad_reduce`` all of it, on the main stream;
- ZeRO-1/2 parameter all-gather buckets from the step's start, which the first forward of
  each chunk waits for piece by piece (or all of it after the optimizer);
- ZeRO-2's per-micro-batch reduce-scatter, queued behind each backward;
- ZeRO-3 (``ZERO3_PIECES`` pieces a slot): each piece waits for its gather, launched one
  piece ahead but queued behind the previous piece's reduce-scatter on the same stream: in
  a forward ``max(0, gather - piece)`` per piece, in a backward ``reduce-scatter + gather``;
  a slot's first piece likewise after the previous slot, counted per transition of the
  schedule; the step's first gather and last reduce-scatter are exposed;
- the tied-embedding all-reduce of the first and last stage, then each stage's optimizer.

The step ends when the slowest stage's optimizer does; the breakdown is that stage's, as
:func:`clustersim.engine.breakdown.rank_breakdown` defines it: communication that no compute
overlaps is exposed (blocking collectives, receives, and side-stream collectives while the
stage waits for them or has nothing else to do: ``dp_wait_s``); ``comm_s`` adds what runs
under compute.

Not modelled, by design: contention between concurrent transfers (the flow fidelity's job).
Approximate: for unequal stages the pipeline form is the longest of the paths above, a lower
bound of the schedule's critical path (exact for equal stages, within 0.1% on 1,024-GPU plans,
up to ~10% when hops of very different cost meet ``m = p`` micro-batches).

>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.topology import build_cluster
>>> from clustersim.workload import get_model, resolve_plan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> training = TrainingConfig(global_batch=16, parallelism={"tp": 4, "pp": 2})
>>> model = get_model("llama3-8b")
>>> est = estimate_step(model, resolve_plan(training, model, 16), cluster, training)
>>> est.critical_stage, abs(est.compute_s + est.exposed_comm_s + est.bubble_s
...                         - est.step_time_s) < 1e-12
(0, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from clustersim.workload.mesh import blocks, mesh_for_plan
from clustersim.workload.plan import ParallelPlan
from clustersim.workload.program import _AXES, BUCKETS, ZERO3_PIECES, _axis_of
from clustersim.workload.stagework import (ZERO3_PREFIX, activation_bytes, chunk_work,
                                           dp_comms, optimizer_work, p2p_gather_bytes)

__all__ = ["StepEstimate", "estimate_step", "pipeline_span_s", "warmup_forwards"]


@dataclass(frozen=True)
class StepEstimate:
    """One training step priced in closed form (see the module docstring).

    ``compute_s``, ``comm_s``, ``exposed_comm_s`` and ``bubble_s`` are the critical stage's,
    as :func:`~clustersim.engine.breakdown.rank_breakdown` defines them; ``dp_wait_s`` is the
    part of ``exposed_comm_s`` that side-stream (data-parallel) collectives expose. ``flops`` and
    ``mem_bytes`` are totals over every device; ``network_energy_J`` prices
    :attr:`network_bytes_by_link` at each link's J/bit.
    """

    step_time_s: float
    compute_s: float
    comm_s: float
    exposed_comm_s: float
    bubble_s: float
    dp_wait_s: float
    critical_stage: int
    flops: float
    mem_bytes: float
    network_energy_J: float
    link_count: int = field(repr=False)
    link_terms: tuple = field(repr=False, compare=False)   # ((links, bytes per unit), units)

    @cached_property
    def network_bytes_by_link(self) -> np.ndarray:
        """Bytes each link of ``cluster.links`` carries in one step (every device's traffic)."""
        out = np.zeros(self.link_count)
        for (links, unit), scale in self.link_terms:
            out[links] += unit * scale
        return out

    def activity(self):
        """This step as the :class:`~clustersim.engine.energy.Activity` the energy model reads."""
        from clustersim.engine.energy import Activity

        return Activity(self.step_time_s, self.flops, self.mem_bytes,
                        self.network_bytes_by_link)


# ------------------------------------------------------------------ the pipeline

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


# ------------------------------------------------------------------ the builder's groups

def _mesh_key(plan: ParallelPlan) -> tuple:
    mesh = mesh_for_plan(plan)
    return mesh.order, mesh.shape


@lru_cache(maxsize=1024)
def _families(mesh_key: tuple, axis: str, block: str, block_size: int) -> dict:
    """Stage -> the builder's family of rank groups for ``axis`` (``block``: ``all``, or the
    ``inner``/``across`` groups of hybrid sharding), in ``Mesh.groups`` order (vectorised).
    The tied-embedding family (first with last stage) is stage 0's."""
    order, shape = mesh_key
    n, pp = int(np.prod(shape)), shape[order.index("pp")]
    stride = int(np.prod(shape[:order.index("pp")]))
    if axis == "tied":
        groups = [[r, r + (pp - 1) * stride] for r in range(n) if (r // stride) % pp == 0]
    else:
        inside = sorted(len(order) - 1 - order.index(a) for a in _AXES[axis])
        rest = [d for d in range(len(order)) if d not in inside]
        grid = np.arange(n).reshape(shape[::-1]).transpose(rest + inside)
        groups = grid.reshape(-1, int(np.prod(grid.shape[len(rest):]))).tolist()
    if block != "all":
        groups = [b for g in groups for b in blocks(g, block_size)[block == "across"]]
    out: dict[int, list] = {}
    for g in groups:
        out.setdefault((g[0] // stride) % pp, []).append(g)
    return out


# ------------------------------------------------------------------ prices on one cluster

class _Pricer:
    """What repeats in a sweep on one cluster: families, the candidate algorithms' profiles
    per (family, op), prices per size, link-byte vectors, pipeline hops, stage work."""

    def __init__(self, cluster):
        from clustersim.collectives import effective_capacity_Bps

        self.cluster = cluster
        self.mem_bw = cluster.memory_bw_Bps(cluster.devices[0])
        self.capacity = effective_capacity_Bps(cluster)
        self.J_per_B = cluster.links.energy_J_per_bit * 8.0
        self.groups, self.curves, self.prices, self.units = {}, {}, {}, {}
        self.hops, self.pairs, self.p2p, self.chunks, self.stages = {}, {}, {}, {}, {}
        self.templates, self.stage_prices = {}, {}

    def family(self, key: tuple) -> list:
        found = self.groups.get(key)
        if found is None:
            devices = self.cluster.devices
            found = self.groups[key] = [[devices[r] for r in g] for g in _families(
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
        latency as ``CommModel._p2p_cost`` gives them, at the slowest max-min rate."""
        key = (mesh_key, src, dst, size)
        found = self.hops.get(key)
        if found is None:
            pairs, rate, unit = self._pairs(mesh_key, src, dst)
            wire, latency = self._p2p_cost(*pairs[0], size)
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

    def _p2p_cost(self, src, dst, size: float) -> tuple[float, float]:
        key = (self.cluster.router.shared_fabric(src, dst), size)
        found = self.p2p.get(key)
        if found is None:
            from clustersim.collectives import expand, phase_latency_s, select_algorithm

            algorithm = select_algorithm(self.cluster, [src, dst], "send_recv", size)
            [phase] = expand(self.cluster, [src, dst], "send_recv", size, algorithm)
            found = self.p2p[key] = (float(phase.bytes.sum()),
                                     phase_latency_s(self.cluster, [src, dst], phase))
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


_PRICERS: dict = {}


def _pricer(cluster) -> _Pricer:
    found = _PRICERS.get(id(cluster))
    if found is None or found.cluster is not cluster:
        if len(_PRICERS) >= 64:
            _PRICERS.clear()
        found = _PRICERS[id(cluster)] = _Pricer(cluster)
    return found


# ------------------------------------------------------------------ the step

class _Stage:
    """One stage's prices (seconds; lists per chunk): compute ``f``/``b``; ``cf``/``cb`` the
    communication-only time its collectives add to each slot (blocking ones, and TP ones
    overlapped with the compute, ``overlap.tp_comm``, beyond the compute); slots ``F``/``B``;
    side-stream work: ZeRO-3 gathers ``ag_f``/``ag_b`` and reduce-scatters ``rs``, ZeRO-2
    ``mb_rs``, parameter buckets (end times from the step's start, ``gathered``), gradient
    buckets (one piece each, ``bucket``); ZeRO-3's ``pieces`` per chunk and the waits inside
    a slot (``wf``/``wb``); per step: ``hidden`` communication under compute (overlapped TP,
    the sends no receive overlaps), ``side`` all side-stream collectives."""

    __slots__ = ("f", "b", "cf", "cb", "F", "B", "ag_f", "ag_b", "rs", "mb_rs", "gathered",
                 "bucket", "reduce_main", "gather_main", "tied", "opt", "flops", "mem",
                 "side", "recv", "hidden", "early", "pieces", "wf", "wb", "recv_f", "recv_b")


def estimate_step(model, plan: ParallelPlan, cluster, training) -> StepEstimate:
    """One training step of ``model`` under ``plan`` on ``cluster``, priced in closed form:
    the work of :func:`~clustersim.workload.program.build_program` (same stage work, same
    collectives on the same groups), combined as the module docstring says."""
    if len(cluster.devices) < plan.devices:
        raise ValueError(f"the plan needs {plan.devices} devices, the cluster has "
                         f"{len(cluster.devices)}")
    if training.offload.optimizer != "none":
        from clustersim.errors import InputError

        raise InputError(f"training.offload.optimizer: {training.offload.optimizer!r} is not "
                         "modelled by the analytic fidelity; use simulation.fidelity: flow")
    pr = _pricer(cluster)
    p, v, m = plan.pp, plan.virtual_stages, plan.num_microbatches
    mesh_key = _mesh_key(plan)
    sizes = dict(zip(*mesh_key))
    terms: dict = {}    # link unit -> bytes it scales by
    # the builder's hybrid-sharding blocks: shard_group data-parallel ranks (x cp)
    block = {a: min(int(np.prod([sizes[x] for x in _AXES[a]])), plan.shard_group * plan.cp)
             for a in ("dp", "edp")}

    def call(axis, kind, stage, op, size, times):
        """Seconds of one collective; ``times`` of them go to the link bytes."""
        key = (mesh_key, axis, kind, 0 if kind == "all" else block[axis], stage)
        t, unit = pr.price(key, op, size)
        if unit is not None and times:
            terms[unit] = terms.get(unit, 0.0) + size * times
        return t

    # pipeline hops into each stage, from the one before (forward) and after (backward)
    act_B = activation_bytes(model, plan, training.precision)
    t_in_f, t_in_b = [0.0] * p, [0.0] * p
    for s in range(p if p > 1 else 0):
        for into, src, count in ((t_in_f, (s - 1) % p, v - (s == 0)),
                                 (t_in_b, (s + 1) % p, v - (s == p - 1))):
            if count:
                into[s], unit, wire = pr.hop(mesh_key, src, s, act_B)
                terms[unit] = terms.get(unit, 0.0) + wire * m * count
    stages = [_stage_prices(pr, model, plan, training, s, call, block, t_in_f, t_in_b)
              for s in range(p)]
    return _combine(plan, training, stages, pr, terms)


# What a priced collective adds to: per chunk, the slot's blocking time (forward, backward),
# overlapped TP (forward, backward), ZeRO-3 gathers (forward, backward) and reduce-scatters,
# ZeRO-2's per micro-batch, parameter buckets, gradient buckets; per stage, parameters
# gathered after the optimizer, the tied embeddings, the receive's all-gather.
(_CF, _CB, _TF, _TB, _AGF, _AGB, _RS, _MB, _PB, _GB, _POST, _TIED, _RECV) = range(13)


def _template(pr, model, plan, training, s):
    """Stage ``s``'s work and the collectives it prices, wherever it sits (cached):
    ``(works, opt, calls)``, a call being ``(slot, chunk, axis, block, op, bytes, count,
    calls per micro-batch, calls per step)``."""
    v = plan.virtual_stages
    key = (model, plan.tp, plan.sp, plan.cp, plan.ep, plan.dp, plan.zero, plan.shard_group,
           plan.micro_batch, plan.seq_len, v, s == 0, s == plan.pp - 1, plan.pp > 1,
           tuple(plan.stage_layers[c * plan.pp + s] for c in range(v)),
           s + plan.pp * (v - 1) == len(plan.stage_layers) - 1, training.precision,
           training.recompute, training.attention, training.optimizer,
           training.overlap.tp_comm, training.overlap.param_gather,
           training.overlap.grad_reduce)
    found = pr.templates.get(key)
    if found is not None:
        return found
    hybrid = plan.zero >= 1 and plan.shard_group < plan.dp
    dp_block = "inner" if hybrid else "all"
    works = [pr.chunk(model, plan, c * plan.pp + s, training) for c in range(v)]
    here = sum(w.layers for w in works)
    opt, comms = pr.stage(model, plan, s, training.precision, training.optimizer)
    gathers = [g for g in comms["step"] if g.op == "all_gather"]
    reduces = [r for r in comms["step"] if r.op != "all_gather" and r.axis != "pp"]
    calls = []
    for c, w in enumerate(works):
        for backward, chunk_comms in ((False, w.fwd_comms), (True, w.bwd_comms)):
            for comm in chunk_comms:   # as build_rank places them
                side = comm.name.startswith(ZERO3_PREFIX) or (
                    plan.zero == 2 and comm.axis == "dp")
                slot = ((_AGB if backward else _AGF) if comm.prefetched else _RS if side
                        else (_TB if backward else _TF)
                        if training.overlap.tp_comm and comm.axis == "tp"
                        else _CB if backward else _CF)
                calls.append((slot, c, _axis_of(comm), dp_block if side else "all", comm.op,
                              comm.bytes, comm.count, comm.count, 0))
        share = w.layers / here
        for comm in comms["microbatch"]:
            calls.append((_MB, c, _axis_of(comm), "all", comm.op, comm.bytes * share, 1, 1, 0))
        for g in (gathers if training.overlap.param_gather else ()):
            calls.append((_PB, c, _axis_of(g), dp_block, g.op, g.bytes * share / BUCKETS, 1,
                          0, BUCKETS))
        for r in reduces:
            size = r.bytes * share / BUCKETS
            calls.append((_GB, c, _axis_of(r), dp_block, r.op, size, 1, 0, BUCKETS))
            if hybrid:   # scaled by the block size when priced
                calls.append((_GB, c, _axis_of(r), "across", "all_reduce", size, 1, 0, BUCKETS))
    for g in (() if training.overlap.param_gather else gathers):
        calls.append((_POST, 0, _axis_of(g), dp_block, g.op, g.bytes, 1, 0, 1))
    for t in comms["step"]:
        if t.axis == "pp":
            calls.append((_TIED, 0, "tied", "all", t.op, t.bytes, 1, 0, 1))
    gather_B = p2p_gather_bytes(model, plan, training.precision) if plan.pp > 1 else 0.0
    if gather_B:
        receives = 2 * v - (s == 0) - (s == plan.pp - 1)
        calls.append((_RECV, 0, "tp", "all", "all_gather", gather_B, 1, receives, 0))
    found = pr.templates[key] = (works, opt, tuple(calls))
    return found


def _stage_prices(pr, model, plan, training, s, call, block, t_in_f, t_in_b) -> _Stage:
    p, v, m = plan.pp, plan.virtual_stages, plan.num_microbatches
    works, opt, calls = _template(pr, model, plan, training, s)
    prices = []
    for slot, c, axis, kind, op, size, count, per_mb, per_step in calls:
        if kind == "across":
            size /= block[axis]
        prices.append(count * call(axis, kind, 0 if slot == _TIED else s, op, size,
                                   per_mb * m + (per_step if slot != _TIED or s == 0 else 0)))
    key = (id(works), p, m, plan.schedule, s == 0, s == p - 1, tuple(prices), t_in_f[s],
           t_in_b[s], t_in_f[1 % p])
    st = pr.stage_prices.get(key)
    if st is None:
        if len(pr.stage_prices) > 100_000:
            pr.stage_prices.clear()
        st = pr.stage_prices[key] = _derive(plan, training, s, works, opt, calls, prices,
                                            t_in_f, t_in_b)
    return st


def _derive(plan, training, s, works, opt, calls, prices, t_in_f, t_in_b) -> _Stage:
    """A stage's slots and side-stream work from its prices (shared by identical stages)."""
    p, v, m = plan.pp, plan.virtual_stages, plan.num_microbatches
    overlap = training.overlap
    acc = [[0.0] * v for _ in range(13)]
    done = [[] for _ in range(v)]   # parameter buckets, queued from the step's start
    clock = 0.0
    for (slot, c, *_), t in zip(calls, prices):
        acc[slot][c] += t
        if slot == _PB:
            for _ in range(BUCKETS if t > 0 else 0):
                clock += t
                done[c].append(clock)
    st = _Stage()
    st.f, st.b = [w.fwd.seconds for w in works], [w.bwd.seconds for w in works]
    st.ag_f, st.ag_b, st.rs, st.mb_rs, st.bucket = (acc[x] for x in (_AGF, _AGB, _RS, _MB, _GB))
    st.gathered, st.gather_main, st.tied = done, acc[_POST][0], acc[_TIED][0]
    st.reduce_main = 0.0 if overlap.grad_reduce else BUCKETS * sum(st.bucket)
    # the TP stream starts with the compute: a slot is max(compute + blocking, TP)
    tp_f, tp_b = acc[_TF], acc[_TB]
    st.hidden = m * sum(min(tp_f[c], st.f[c]) + min(tp_b[c], st.b[c]) for c in range(v))
    st.cf = [max(acc[_CF][c], tp_f[c] - st.f[c]) for c in range(v)]
    st.cb = [max(acc[_CB][c], tp_b[c] - st.b[c]) for c in range(v)]
    st.opt = opt.seconds
    st.flops = m * sum(w.fwd.flops + w.bwd.flops for w in works) + opt.flops
    st.mem = m * sum(w.fwd.bytes + w.bwd.bytes for w in works) + opt.bytes
    # a receive is the transfer, then (scatter/gather without SP) a TP all-gather
    gather = acc[_RECV][0]
    st.recv_f = [0.0 if s == 0 and c == 0 else t_in_f[s] + gather for c in range(v)]
    st.recv_b = [0.0 if s == p - 1 and c == v - 1 else t_in_b[s] + gather for c in range(v)]
    # ZeRO-3 runs a slot in pieces, each gathering the next piece's parameters: a forward
    # waits where a gather outlasts a piece; in a backward every gather queues behind the
    # previous piece's reduce-scatter on the same stream
    st.pieces = [max(1, min(w.layers, ZERO3_PIECES)) for w in works]
    st.wf = [(n - 1) * max(0.0, (st.ag_f[c] - st.f[c]) / n) for c, n in enumerate(st.pieces)]
    st.wb = [(n - 1) * (st.rs[c] + st.ag_b[c]) / n for c, n in enumerate(st.pieces)]
    st.F = [st.f[c] + st.cf[c] + st.recv_f[c] + st.wf[c] for c in range(v)]
    st.B = [st.b[c] + st.cb[c] + st.recv_b[c] + st.wb[c] for c in range(v)]
    st.recv = m * (sum(st.recv_f) + sum(st.recv_b))
    # a send runs alongside the next slot's receive; on the first stage the warm-up forwards
    # have none to hide behind but the next forward's compute
    warm = warmup_forwards(plan.schedule, s, p, m, v) if s == 0 and p > 1 else 0
    st.hidden += warm / v * t_in_f[1 % p]
    st.early = clock or st.ag_f[0] / st.pieces[0]   # side-stream work from the step's start
    st.side = (clock + m * sum(st.mb_rs[c] + st.ag_f[c] + st.ag_b[c] + st.rs[c]
                               for c in range(v))
               + (BUCKETS * sum(st.bucket) if overlap.grad_reduce else 0.0) + st.tied)
    return st



def _first_forward_end(st: _Stage, c: int, start: float) -> float:
    """When the first forward of chunk ``c`` ends if it may start at ``start``: its pieces
    wait for the chunk's parameter buckets (ZeRO-1/2), or all of it for the step's first
    gather (ZeRO-3)."""
    done, x = st.gathered[c], start
    if done:
        for i in range(BUCKETS):
            x = max(x, done[i]) + st.f[c] / BUCKETS
    else:
        x = max(x, st.ag_f[0] / st.pieces[0] if c == 0 else 0.0) + st.f[c] + st.wf[c]
    return x + st.cf[c]


def _queue_end(end: float, n: int, k: int, r: float, cool: float, steady: float,
               free: float) -> float:
    """When a stream free from ``free`` finishes ``n`` jobs of ``r`` seconds released as
    backwards end, the last ``k`` every ``cool`` seconds up to ``end`` and the others every
    ``steady`` before them: the latest ``release_j + r (n - j)``, segment by segment."""
    best, after, last = free + n * r, 0.0, end
    for count, gap in ((min(k, n), cool), (n - min(k, n), steady)):
        if count:
            span = (count - 1) * gap
            best = max(best, last + r + after if gap >= r else last - span + count * r + after)
            after += count * r
            last -= span + gap
    return best


def _combine(plan, training, stages, pr, terms) -> StepEstimate:
    p, v, m = plan.pp, plan.virtual_stages, plan.num_microbatches
    grad_overlap = training.overlap.grad_reduce
    F, B, drain, stall, wait = [], [], [], [0.0] * p, [0.0] * p
    for s, st in enumerate(stages):
        # ZeRO-3: a slot's first piece waits for its gather, queued behind the previous
        # slot's last reduce-scatter, per transition of the schedule (F^k (FB)^(n-k) B^k)
        k, n = warmup_forwards(plan.schedule, s, p, m, v), m * v
        ff, fb, bf, bb = (k, n - k, n - k - 1, k) if k < n else (n - 1, 1, 0, n - 1)
        ag_f, ag_b, rs, f = (sum(x[c] / st.pieces[c] for c in range(v)) / v
                             for x in (st.ag_f, st.ag_b, st.rs, st.f))
        cf, cb, recv_f, recv_b = (sum(x) / v for x in (st.cf, st.cb, st.recv_f, st.recv_b))
        e_ff, e_fb = max(0.0, ag_f - f - cf - recv_f), max(0.0, ag_b - f - cf - recv_b)
        e_bf, e_bb = max(0.0, rs + ag_f - cb - recv_f), max(0.0, rs + ag_b - cb - recv_b)
        waits = ff * e_ff + fb * e_fb + bf * e_bf + bb * e_bb + m * sum(st.wf + st.wb)
        e_f, e_b = (e_ff, e_bb) if plan.schedule == "gpipe" else (e_bf, e_fb)  # steady state
        F.append([x + e_f for x in st.F])
        B.append([x + e_b for x in st.B])
        drain.append([B[s][c] + (0.0 if grad_overlap else BUCKETS * st.bucket[c])
                      for c in range(v)])
        stall[s] += waits - m * sum(st.wf + st.wb) - n * (e_f + e_b)
        if plan.schedule != "gpipe":   # GPipe's drain path holds the blocking reductions
            stall[s] += st.reduce_main
        wait[s] += waits
    # the fill: first forwards waiting for their parameters delay the stages after them;
    # until its first receive a stage idles while its side stream gathers (exposed)
    delay, early, gated, natural = [0.0] * p, [0.0] * p, 0.0, 0.0
    for s, st in enumerate(stages):
        hop = st.recv_f[0]
        early[s] = min(st.early, gated)
        end = _first_forward_end(st, 0, gated + hop)
        wait[s] += end - gated - hop - st.f[0] - st.wf[0] - st.cf[0]
        gated, natural = end, natural + hop + st.f[0] + st.wf[0] + st.cf[0]
        delay[s] = gated - natural
        for c in range(1, v):   # later chunks' first forwards: F index c p
            start = gated + (c * p - 1) * sum(F[s]) / v + st.recv_f[c]
            late = _first_forward_end(st, c, start) - start - st.f[c] - st.wf[c] - st.cf[c]
            stall[s] += late
            wait[s] += late
    span = pipeline_span_s(plan.schedule, F, B, m, stall, delay, drain)
    # side-stream tails, the tied embeddings, the optimizer
    ready, tail, above = [0.0] * p, [0.0] * p, 0.0
    for s, st in enumerate(stages):
        end = span - above
        above += drain[s][0]
        side = st.gathered[-1][-1] if st.gathered[-1] else 0.0
        if st.rs[0]:   # ZeRO-3: the last piece's reduce-scatter, beside the blocking ones
            side = max(side, end - st.cb[0] + st.rs[0] / st.pieces[0])
        if any(st.mb_rs):   # ZeRO-2
            side = _queue_end(end, m * v, warmup_forwards(plan.schedule, s, p, m, v),
                              sum(st.mb_rs) / v, sum(B[s]) / v, sum(F[s] + B[s]) / v, side)
        if grad_overlap and any(st.bucket):
            starts, before = [], 0.0   # each chunk's last backward, before later cool-downs
            for c in range(v):
                starts.append(end - st.b[c] - st.cb[c] - p * before)
                before += B[s][c]
            for c in range(v - 1, -1, -1):
                for i in range(1, BUCKETS + 1):
                    side = max(side, starts[c] + i * st.b[c] / BUCKETS) + st.bucket[c]
        ready[s], tail[s] = max(end, side), max(0.0, side - end)
    if p > 1 and stages[0].tied:   # both stages post it; it starts when the later one does
        ready[0] = ready[-1] = max(ready[0], ready[-1]) + stages[0].tied
        tail[0] += stages[0].tied
        tail[-1] += stages[0].tied
    ends = [ready[s] + st.opt + st.gather_main for s, st in enumerate(stages)]
    step = max(ends)
    crit = ends.index(step)
    st = stages[crit]
    # the breakdown: communication that no compute of the rank overlaps is exposed
    compute = m * sum(st.f[c] + st.b[c] for c in range(v)) + st.opt
    side_exposed = wait[crit] + tail[crit] + early[crit]
    main_comm = (m * sum(st.cf[c] + st.cb[c] for c in range(v)) + st.recv + st.reduce_main
                 + st.gather_main)
    exposed = main_comm + side_exposed
    # the rest of the side stream runs under the main stream: it adds to the communication
    # time where it meets compute, not communication already counted (the union, taking
    # the two hidden streams as independent of each other under the compute)
    side = max(0.0, st.side - side_exposed) * compute / (compute + main_comm)
    hidden = side + st.hidden - side * st.hidden / compute if compute > 0 else 0.0
    per_stage = plan.devices // p
    return StepEstimate(
        step_time_s=step, compute_s=compute, comm_s=exposed + hidden,
        exposed_comm_s=exposed, bubble_s=max(0.0, step - compute - exposed),
        dp_wait_s=side_exposed, critical_stage=crit,
        flops=per_stage * sum(x.flops for x in stages),
        mem_bytes=per_stage * sum(x.mem for x in stages),
        network_energy_J=sum(scale * pr.units[k][1] for k, scale in terms.items()),
        link_count=len(pr.capacity),
        link_terms=tuple((pr.units[k][0], scale) for k, scale in terms.items()))
