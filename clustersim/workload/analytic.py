"""The ``analytic`` fidelity: a closed-form step time that prices the flow program's work.

The work is the flow program's (:mod:`~clustersim.workload.program`): compute and collectives
from :mod:`~clustersim.workload.stagework`, each collective priced by the collectives layer
(``collective_time_s``, algorithm ``auto``) on the same group family the builder forms, each
send at the flow engine's point-to-point cost. What changes is how they combine. Per stage
``s`` and chunk ``c``, a forward slot is ``F = recv + compute + blocking TP/CP/EP
collectives`` (the receiver waits for every transfer: a call starts when both sides have
posted it), a backward slot ``B`` likewise. With ``k_s`` warm-up forwards (1F1B:
``p - s - 1``; interleaved: ``2(p - s - 1) + (v - 1)p``) the main stream of stage 0 ends at

    T = max_s [ D_s + sum_{r<s} (F_r + B_r) + W_s + max(0, RT_s - (k_s - (v-1)p) F_s) ]

``W_s = m sum_c (F_sc + B_sc)`` plus its own stalls: the first stages' forwards come down,
stage ``s`` runs, the last micro-batch's backwards go back up; ``RT_s``, the round trip
through the stages below, is the wait before ``s``'s first backward (the classic 1F1B bubble
``(p-1)(F+B)`` for equal stages, ``(p-1)(F+B)/v`` per stage time interleaved, Narayanan et
al. SC'21). GPipe is two flow shops: ``sum F + (m-1) max F + sum B + (m-1) max B``. ``D_s``
delays the fill: first forwards waiting for parameter all-gathers (ZeRO-1/2 buckets, ZeRO-3's
first gather). Data parallelism then adds, per stage:

- ZeRO-0/1 gradient buckets reduced on a side stream as the last backward of each chunk
  produces them (``BUCKETS`` per chunk; hybrid sharding adds the across-block all-reduce):
  only what does not fit under the remaining buckets of compute is exposed; without
  ``overlap.grad_reduce`` all of it, on the main stream;
- ZeRO-2's per-micro-batch reduce-scatter, queued behind each backward (exposed when the queue
  outgrows the backwards);
- ZeRO-3: each compute waits for its gather, launched one compute ahead but behind the
  previous backward's reduce-scatter on the one data-parallel stream: ``max(0, gather -
  previous compute - receive)`` after a forward, ``max(0, reduce-scatter + gather - receive)``
  after a backward, counted per transition of the schedule, plus the last reduce-scatter;
- the tied-embedding all-reduce between the first and last stage, the optimizer step, and
  ZeRO-1/2's parameter all-gather after it when ``overlap.param_gather`` is off.

The step ends when the slowest stage's optimizer does. Breakdown as
:func:`clustersim.engine.breakdown.rank_breakdown` defines it for that stage: waits for
side-stream collectives are idle time there (``bubble_s``; ``dp_wait_s`` says how much of it).
Not modelled: contention between concurrent collectives (the flow fidelity's job), and paths
of the pipeline critical path that switch stages several times (a few % on unequal stages).

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

from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache

import numpy as np

from clustersim.workload.mesh import blocks, mesh_for_plan
from clustersim.workload.plan import ParallelPlan
from clustersim.workload.program import _AXES, BUCKETS, _axis_of
from clustersim.workload.stagework import (activation_bytes, chunk_work, dp_comms,
                                           optimizer_work)

__all__ = ["StepEstimate", "estimate_step", "pipeline_span_s", "warmup_forwards"]


@dataclass(frozen=True)
class StepEstimate:
    """One training step, priced in closed form (see the module docstring).

    ``compute_s``, ``comm_s``, ``exposed_comm_s`` and ``bubble_s`` are those of the critical
    stage's rank, as :func:`~clustersim.engine.breakdown.rank_breakdown` defines them;
    ``flops`` and ``mem_bytes`` are totals over every device; ``network_energy_J`` prices
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
    link_terms: tuple = field(repr=False, compare=False)   # ((links, bytes), scale) pairs

    @cached_property
    def network_bytes_by_link(self) -> np.ndarray:
        """Bytes every link of ``cluster.links`` carries in one step (all devices)."""
        out = np.zeros(self.link_count)
        for (links, unit), scale in self.link_terms:
            out[links] += unit * scale
        return out

    def activity(self):
        """The :class:`~clustersim.engine.energy.Activity` of this step, for the energy model."""
        from clustersim.engine.energy import Activity

        return Activity(self.step_time_s, self.flops, self.mem_bytes,
                        self.network_bytes_by_link)


def warmup_forwards(schedule: str, stage: int, stages: int, microbatches: int,
                    chunks: int = 1) -> int:
    """Forwards stage ``stage`` runs before its first backward, as
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
    backward slots of chunk ``c`` on stage ``s`` (receive, compute and blocking collectives);
    ``stall_s[s]`` one-off waits of stage ``s``, ``delay_s[s]`` the delay of its first forward
    (non-decreasing in ``s``), ``drain_bwd_s[s]`` the last backward when it differs.

    >>> pipeline_span_s("1f1b", [[1.0]] * 4, [[2.0]] * 4, 8)   # (m + p - 1)(F + B)
    33.0
    >>> pipeline_span_s("1f1b-interleaved", [[0.5, 0.5]] * 4, [[1.0, 1.0]] * 4, 8)
    28.5
    """
    p, v, m = len(fwd_s), len(fwd_s[0]), microbatches
    stall_s = stall_s or [0.0] * p
    delay_s = delay_s or [0.0] * p
    drain = drain_bwd_s or [b[0] for b in bwd_s]
    if schedule == "gpipe":
        f = [x[0] for x in fwd_s]
        b = [x[0] for x in bwd_s]
        return (delay_s[-1] + sum(f) + (m - 1) * max(f) + sum(drain) + (m - 1) * max(b)
                + max(stall_s))
    best = fill = 0.0
    below = [0.0] * (p + 1)   # round trip through the stages after s, last chunk
    for s in range(p - 1, -1, -1):
        below[s] = below[s + 1] + fwd_s[s][v - 1] + bwd_s[s][v - 1]
    for s in range(p):
        own = fwd_s[s]
        work = m * sum(own[c] + bwd_s[s][c] for c in range(v)) + stall_s[s]
        ahead = max(0, warmup_forwards(schedule, s, p, m, v) - (v - 1) * p) * own[v - 1]
        trip = below[s + 1] + delay_s[-1] - delay_s[s]
        best = max(best, delay_s[s] + fill + work + max(0.0, trip - ahead))
        fill += fwd_s[s][0] + drain[s]
    return best


# ------------------------------------------------------------------ groups the builder forms

def _mesh_key(plan: ParallelPlan) -> tuple:
    mesh = mesh_for_plan(plan)
    return mesh.order, mesh.shape


@lru_cache(maxsize=1024)
def _families(mesh_key: tuple, axis: str, block: str, block_size: int) -> dict:
    """Stage -> the builder's family of rank groups for ``axis`` (``block``: all, inner or
    across of hybrid sharding): every group of the stage, in mesh order (``Mesh.groups``,
    vectorised). The tied-embedding family (first with last stage) sits under stage 0."""
    order, shape = mesh_key
    n = int(np.prod(shape))
    grid = np.arange(n).reshape(shape[::-1])         # dims outermost first
    dim = {a: len(order) - 1 - i for i, a in enumerate(order)}
    stride = int(np.prod(shape[:order.index("pp")]))
    pp = shape[order.index("pp")]
    if axis == "tied":
        groups = [[r, r + (pp - 1) * stride] for r in range(n) if (r // stride) % pp == 0]
    else:
        inside = sorted(dim[a] for a in _AXES[axis])
        rest = [d for d in range(len(order)) if d not in inside]
        groups = grid.transpose(rest + inside).reshape(n // int(np.prod(
            [shape[order.index(a)] for a in _AXES[axis]])), -1).tolist()
    if block != "all":
        split = [blocks(g, block_size) for g in groups]
        groups = [b for inner, across in split for b in (inner if block == "inner" else across)]
    out: dict[int, list] = {}
    for g in groups:
        out.setdefault((g[0] // stride) % pp, []).append(g)
    return out


def _block_size(plan: ParallelPlan, axis: str) -> int:
    """The builder's hybrid-sharding block: shard_group (x cp for data-parallel axes)."""
    width = 1
    sizes = dict(zip(*_mesh_key(plan)))
    for a in _AXES.get(axis, ()):
        width *= sizes[a]
    return min(width, plan.shard_group * (plan.cp if axis in ("dp", "edp") else 1))


# ------------------------------------------------------------------ prices on one cluster

class _Pricer:
    """Everything that repeats in a sweep on one cluster: group families, the candidate
    algorithms' profiles of each (family, op), prices per size, link-byte vectors, hops."""

    def __init__(self, cluster):
        from clustersim.collectives import effective_capacity_Bps

        self.cluster = cluster
        self.mem_bw = cluster.memory_bw_Bps(cluster.devices[0])
        self.capacity = effective_capacity_Bps(cluster)
        self.J_per_B = cluster.links.energy_J_per_bit * 8.0
        self.groups: dict = {}
        self.curves: dict = {}
        self.prices: dict = {}
        self.units: dict = {}
        self.hops: dict = {}
        self.pairs: dict = {}
        self.p2p: dict = {}
        self.chunks: dict = {}
        self.stages: dict = {}

    def family(self, key: tuple) -> list:
        found = self.groups.get(key)
        if found is None:
            mesh_key, axis, block, size, stage = key
            ranks = _families(mesh_key, axis, block, size).get(stage, [[0]])
            devices = self.cluster.devices
            found = [[devices[r] for r in g] for g in ranks]
            self.groups[key] = found
        return found

    def price(self, key: tuple, op: str, size: float) -> tuple:
        """``(seconds, link unit)`` of ``op`` of ``size`` bytes on family ``key``, as
        ``collective_time_s(cluster, family[0], op, size, groups=family)`` prices it."""
        hit = self.prices.get((key, op, size))
        if hit is not None:
            return hit
        family = self.family(key)
        if len(family[0]) < 2:
            found = (0.0, None)
        else:
            curves = self.curves.get((key, op))
            if curves is None:
                curves = self._curves(family, op)
                self.curves[(key, op)] = curves
            best, name = float("inf"), None
            for algorithm, rows in curves:
                t = 0.0
                for fixed, coef, rate, rcoef, rbw in rows:
                    x, r = coef * size / rate, rcoef * size / rbw
                    t += fixed + (x if x > r else r)
                if t < best:
                    best, name = t, algorithm
            found = (best, self._unit((key, op, name), family, op, name))
        self.prices[(key, op, size)] = found
        return found

    def _curves(self, family, op):
        from clustersim.collectives.cost import profile
        from clustersim.collectives.select import candidates

        out = []
        for name in candidates(self.cluster, family[0], op, "auto"):
            pr = profile(self.cluster, family, op, name)
            out.append((name, [(float(st * a), float(c), float(r), float(rc), float(rb))
                               for st, a, c, r, rc, rb in zip(pr.steps, pr.alpha_s, pr.coef,
                                                               pr.rate_Bps, pr.reduce_coef,
                                                               pr.reduce_Bps)]))
        return out

    def _unit(self, key, family, op, algorithm):
        """Link bytes per byte of size, phase by phase as the flow engine lays the call out
        (the first group's expansion on every group of the family); returns ``key``."""
        if key not in self.units:
            from clustersim.collectives import expand

            links, weights = [], []
            for phase in expand(self.cluster, family[0], op, 1.0, algorithm):
                for group in family:
                    for s, d, b in zip(phase.src, phase.dst, phase.bytes):
                        lk, w, _ = self.cluster.route(group[s], group[d])
                        links.append(lk)
                        weights.append(w * b)
            self.units[key] = self._sparse(links, weights)
        return key

    def _sparse(self, links, weights):
        if not links:
            return (np.zeros(0, np.int64), np.zeros(0)), 0.0
        lk = np.concatenate(links)
        idx, inv = np.unique(lk, return_inverse=True)
        unit = np.bincount(inv, weights=np.concatenate(weights), minlength=len(idx))
        return (idx, unit), float(unit @ self.J_per_B[idx])

    def hop(self, mesh_key: tuple, src: int, dst: int, size: float) -> tuple:
        """``(seconds, link unit, wire bytes per pair)`` of every rank of stage ``src`` sending
        ``size`` bytes to its peer on stage ``dst`` at once (``CommModel._p2p_cost`` and
        max-min rates of the batch, as the flow engine runs it)."""
        key = (mesh_key, src, dst, size)
        found = self.hops.get(key)
        if found is None:
            pairs, rate, unit = self._pairs(mesh_key, src, dst)
            wire, latency = self._p2p_cost(*pairs[0], size)
            found = (latency + (wire / rate if rate > 0 else 0.0), unit, wire)
            self.hops[key] = found
        return found

    def _pairs(self, mesh_key, src, dst):
        key = ("hop", mesh_key, src, dst)
        found = self.pairs.get(key)
        if found is None:
            from clustersim.network.maxmin import max_min_rates

            order, shape = mesh_key
            stride = int(np.prod(shape[:order.index("pp")]))
            devices = self.cluster.devices
            pairs = [(devices[src * stride + i], devices[dst * stride + i])
                     for i in range(stride)]
            routes = [self.cluster.route(a, b)[:2] for a, b in pairs]
            ptr = np.cumsum([0] + [len(lk) for lk, _ in routes])
            links = np.concatenate([lk for lk, _ in routes])
            rates = max_min_rates(ptr, links, np.concatenate([w for _, w in routes]),
                                  self.capacity)
            slowest = float(rates.min()) if len(rates) else float("inf")
            self.units[key] = self._sparse([lk for lk, _ in routes], [w for _, w in routes])
            found = (pairs, slowest if np.isfinite(slowest) else 0.0, key)
            self.pairs[key] = found
        return found

    def _p2p_cost(self, src, dst, size: float) -> tuple[float, float]:
        """``(wire bytes, latency_s)``: the send_recv collective of two devices, as
        ``clustersim.engine.comm.CommModel._p2p_cost`` prices one message."""
        key = (self.cluster.router.shared_fabric(src, dst), size)
        found = self.p2p.get(key)
        if found is None:
            from clustersim.collectives import expand, phase_latency_s, select_algorithm

            algorithm = select_algorithm(self.cluster, [src, dst], "send_recv", size)
            [phase] = expand(self.cluster, [src, dst], "send_recv", size, algorithm)
            found = (float(phase.bytes.sum()), phase_latency_s(self.cluster, [src, dst], phase))
            self.p2p[key] = found
        return found


    # Stage work, shared across stages and scenarios: the stagework functions read only these
    # fields of the plan, so one canonical plan per (shape, layers, first/last) stands for all
    # (tests check that the canonical answers equal the real ones).
    def chunk(self, model, plan: ParallelPlan, vstage: int, precision: str, recompute: str):
        """``chunk_work`` of virtual stage ``vstage``."""
        n = len(plan.stage_layers)
        layers, index = _canonical(plan.stage_layers[vstage], vstage == 0, vstage == n - 1)
        key = (model, plan.tp, plan.sp, plan.cp, plan.ep, plan.zero, plan.micro_batch,
               plan.seq_len, layers, precision, recompute)
        found = self.chunks.get(key)
        if found is None:
            canon = ParallelPlan(tp=plan.tp, pp=len(layers), cp=plan.cp, ep=plan.ep,
                                 sp=plan.sp, zero=plan.zero, micro_batch=plan.micro_batch,
                                 seq_len=plan.seq_len, stage_layers=layers)
            found = self.chunks[key] = chunk_work(model, canon, index, self.cluster.device,
                                                  precision, recompute, self.mem_bw)
        return found

    def stage(self, model, plan: ParallelPlan, stage: int, precision: str, optimizer: str):
        """``(optimizer_work, dp_comms)`` of physical ``stage``."""
        layers, index = _canonical(plan.layers_on_stage(stage), stage == 0,
                                   stage == plan.pp - 1)
        key = (model, plan.tp, plan.dp, plan.cp, plan.ep, plan.sp, plan.zero, plan.shard_group,
               plan.micro_batch, plan.seq_len, layers, precision, optimizer)
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
    """Stage layers and index of a plan whose stage ``index`` has ``layers`` and is first /
    last as asked (the first holds the embedding, the last the output layer)."""
    if first:
        return ((layers,), 0) if last else ((layers, 1), 0)
    return ((1, layers), 1) if last else ((1, layers, 1), 1)


_PRICERS: dict = {}


def _pricer(cluster) -> _Pricer:
    hit = _PRICERS.get(id(cluster))
    if hit is None or hit.cluster is not cluster:
        if len(_PRICERS) > 64:
            _PRICERS.clear()
        hit = _PRICERS[id(cluster)] = _Pricer(cluster)
    return hit


# ------------------------------------------------------------------ the step

class _Stage:
    """Per-stage prices: slots per chunk, side-stream work, and what the breakdown needs."""

    __slots__ = ("f", "b", "cf", "cb", "F", "B", "agF", "agB", "rs", "mb_rs", "gather_done",
                 "bucket", "blocking_reduce", "post_gather", "tied", "opt", "flops", "mem",
                 "side_s", "recv_s", "send_s")


def estimate_step(model, plan: ParallelPlan, cluster, training) -> StepEstimate:
    """Price one training step of ``model`` under ``plan`` on ``cluster`` in closed form: the
    work of :func:`~clustersim.workload.program.build_program`, combined as the module
    docstring says."""
    if len(cluster.devices) < plan.devices:
        raise ValueError(f"the plan needs {plan.devices} devices, the cluster has "
                         f"{len(cluster.devices)}")
    pr = _pricer(cluster)
    p, v, m = plan.pp, plan.virtual_stages, plan.num_microbatches
    precision, overlap = training.precision, training.overlap
    mesh_key = _mesh_key(plan)
    sizes = dict(zip(*mesh_key))
    hybrid = plan.zero >= 1 and plan.shard_group < plan.dp
    dp_block = "inner" if hybrid else "all"
    terms: dict = {}
    block_sizes: dict = {}

    def call(axis, block, stage, op, size, times):
        """Seconds of one collective; ``times`` such calls go to the link bytes."""
        if block == "all":
            bsize = 0
        else:
            bsize = block_sizes.get(axis)
            if bsize is None:
                width = int(np.prod([sizes[a] for a in _AXES[axis]]))
                bsize = block_sizes[axis] = min(width, plan.shard_group * (
                    plan.cp if axis in ("dp", "edp") else 1))
        t, unit = pr.price((mesh_key, axis, block, bsize, stage), op, size)
        if unit is not None and times:
            terms[unit] = terms.get(unit, 0.0) + size * times
        return t

    # pipeline hops: into stage s from the previous (forward) and the next stage (backward)
    act_B = activation_bytes(model, plan, precision)
    t_in_f, t_in_b = [0.0] * p, [0.0] * p
    for s in range(p if p > 1 else 0):
        for into, src, count in ((t_in_f, (s - 1) % p, v if s > 0 else v - 1),
                                 (t_in_b, (s + 1) % p, v if s < p - 1 else v - 1)):
            if count:
                t, unit, wire = pr.hop(mesh_key, src, s, act_B)
                into[s] = t
                terms[unit] = terms.get(unit, 0.0) + wire * m * count

    stages = []
    for s in range(p):
        st = _Stage()
        works = [pr.chunk(model, plan, c * p + s, precision, training.recompute)
                 for c in range(v)]
        here = sum(w.layers for w in works)
        opt, comms = pr.stage(model, plan, s, precision, training.optimizer)
        st.f, st.b = [w.fwd.seconds for w in works], [w.bwd.seconds for w in works]
        st.cf, st.cb, st.agF, st.agB, st.rs, st.mb_rs = ([0.0] * v for _ in range(6))
        for c, w in enumerate(works):
            for kind, chunk_comms in ((0, w.fwd_comms), (1, w.bwd_comms)):
                for comm in chunk_comms:
                    axis = _axis_of(comm)
                    if comm.prefetched or comm.name.startswith("zero3") or (
                            plan.zero == 2 and comm.axis == "dp"):
                        t = comm.count * call(axis, dp_block, s, comm.op, comm.bytes,
                                              m * comm.count)
                        slot = (st.agB if kind else st.agF) if comm.prefetched else st.rs
                    else:
                        t = comm.count * call(axis, "all", s, comm.op, comm.bytes,
                                              m * comm.count)
                        slot = st.cb if kind else st.cf
                    slot[c] += t
            for comm in comms["microbatch"]:
                st.mb_rs[c] += call(_axis_of(comm), "all", s, comm.op,
                                    comm.bytes * w.layers / here, m)
        step_comms = comms["step"]
        gathers = [c for c in step_comms if c.op == "all_gather"]
        reduces = [c for c in step_comms if c.op != "all_gather" and c.axis != "pp"]
        # ZeRO-1/2 parameter all-gather: buckets from the step's start, or after the optimizer
        st.gather_done, clock = [], 0.0
        for c, w in enumerate(works):
            done = []
            for g in (gathers if overlap.param_gather else ()):
                t = call(_axis_of(g), dp_block, s, g.op, g.bytes * w.layers / here / BUCKETS,
                         BUCKETS)
                for _ in range(BUCKETS if t > 0 else 0):
                    clock += t
                    done.append(clock)
            st.gather_done.append(done)
        st.post_gather = 0.0 if overlap.param_gather else sum(
            call(_axis_of(g), dp_block, s, g.op, g.bytes, 1) for g in gathers)
        # gradient buckets of each chunk's last backward (ZeRO-0/1), hybrid across-blocks
        st.bucket = [0.0] * v
        for c, w in enumerate(works):
            for r in reduces:
                size = r.bytes * w.layers / here / BUCKETS
                st.bucket[c] += call(_axis_of(r), dp_block, s, r.op, size, BUCKETS)
                if hybrid:
                    st.bucket[c] += call(_axis_of(r), "across", s, "all_reduce",
                                         size / block_sizes[_axis_of(r)], BUCKETS)
        st.blocking_reduce = 0.0 if overlap.grad_reduce else BUCKETS * sum(st.bucket)
        st.tied = sum(call("tied", "all", 0, c.op, c.bytes, 1 if s == 0 else 0)
                      for c in step_comms if c.axis == "pp")
        st.opt = opt.seconds
        st.flops = m * sum(w.fwd.flops + w.bwd.flops for w in works) + opt.flops
        st.mem = m * sum(w.fwd.bytes + w.bwd.bytes for w in works) + opt.bytes
        has_prev = [s > 0 or c > 0 for c in range(v)]
        has_next = [s < p - 1 or c < v - 1 for c in range(v)]
        st.F = [st.f[c] + st.cf[c] + (t_in_f[s] if has_prev[c] else 0.0) for c in range(v)]
        st.B = [st.b[c] + st.cb[c] + (t_in_b[s] if has_next[c] else 0.0) for c in range(v)]
        st.recv_s = m * sum(st.F[c] + st.B[c] - st.f[c] - st.b[c] - st.cf[c] - st.cb[c]
                            for c in range(v))
        st.send_s = m * sum((t_in_f[(s + 1) % p] if has_next[c] else 0.0)
                            + (t_in_b[(s - 1) % p] if has_prev[c] else 0.0) for c in range(v))
        st.side_s = (clock + m * sum(st.mb_rs[c] + st.agF[c] + st.agB[c] + st.rs[c]
                                     for c in range(v))
                     + (BUCKETS * sum(st.bucket) if overlap.grad_reduce else 0.0) + st.tied)
        stages.append(st)
    return _combine(plan, training, stages, t_in_f, pr, terms)


def _gate(st: _Stage, c: int, start: float, zero: int) -> float:
    """When the first forward of chunk ``c`` ends if its compute may start at ``start``: its
    pieces wait for the chunk's parameter buckets (ZeRO-1/2), or the whole compute for the
    step's first gather (ZeRO-3)."""
    done, x = st.gather_done[c], start
    if done:
        piece = st.f[c] / BUCKETS
        for i in range(BUCKETS):
            x = max(x, done[i]) + piece
    else:
        x = max(x, st.agF[0] if zero >= 3 and c == 0 else 0.0) + st.f[c]
    return x + st.cf[c]


def _queue_end(end: float, n: int, k: int, r: float, cool: float, steady: float,
               free: float) -> float:
    """When a server free from ``free`` finishes ``n`` jobs of ``r`` s released as
    backwards end: the last ``k`` every ``cool`` s up to ``end``, the rest every ``steady`` s
    before them (the latest of ``release_j + r x jobs from j on``, segment by segment)."""
    best, after, last = free + n * r, 0.0, end
    for count, gap in ((min(k, n), cool), (n - min(k, n), steady)):
        if count:
            span = (count - 1) * gap
            best = max(best, last + r + after if gap >= r else last - span + count * r + after)
            after += count * r
            last -= span + gap
    return best


def _combine(plan, training, stages, t_in_f, pr, terms) -> StepEstimate:
    p, v, m = plan.pp, plan.virtual_stages, plan.num_microbatches
    overlap = training.overlap
    F, B, drain, stall, wait = [], [], [], [0.0] * p, [0.0] * p
    for s, st in enumerate(stages):
        # ZeRO-3: each compute's wait for its gather, by transition of the schedule
        k, n = warmup_forwards(plan.schedule, s, p, m, v), m * v
        ff, fb, bf, bb = (k, n - k, n - k - 1, k) if k < n else (n - 1, 1, 0, n - 1)
        ag_f, ag_b, rs = sum(st.agF) / v, sum(st.agB) / v, sum(st.rs) / v
        body_f = sum(st.f[c] + st.cf[c] for c in range(v)) / v
        recv_f = sum(st.F[c] - st.f[c] - st.cf[c] for c in range(v)) / v
        recv_b = sum(st.B[c] - st.b[c] - st.cb[c] for c in range(v)) / v
        e_ff, e_fb = max(0.0, ag_f - body_f - recv_f), max(0.0, ag_b - body_f - recv_b)
        e_bf, e_bb = max(0.0, rs + ag_f - recv_f), max(0.0, rs + ag_b - recv_b)
        waits = ff * e_ff + fb * e_fb + bf * e_bf + bb * e_bb
        wait[s] += waits
        F.append([x + e_bf for x in st.F])
        B.append([x + e_fb for x in st.B])
        stall[s] += waits - m * v * (e_bf + e_fb) + st.blocking_reduce
        drain.append(B[s][0] + (0.0 if overlap.grad_reduce else BUCKETS * st.bucket[0]))
    # the fill: first forwards waiting for their parameters delay every stage after
    delay, gated, natural = [0.0] * p, 0.0, 0.0
    for s, st in enumerate(stages):
        hop = t_in_f[s] if s > 0 else 0.0
        end = _gate(st, 0, gated + hop, plan.zero)
        wait[s] += end - gated - hop - st.f[0] - st.cf[0]
        gated, natural = end, natural + hop + st.f[0] + st.cf[0]
        delay[s] = gated - natural
        for c in range(1, v):   # later chunks' first forwards (interleaved)
            start = gated + (c * p - 1) * sum(F[s]) / v + t_in_f[s]
            late = _gate(st, c, start, plan.zero) - start - st.f[c] - st.cf[c]
            stall[s] += late
            wait[s] += late
    span = pipeline_span_s(plan.schedule, F, B, m, stall, delay, drain)
    # data-parallel tails, the tied embeddings, the optimizer
    ready, main_end, above = [0.0] * p, [0.0] * p, 0.0
    for s, st in enumerate(stages):
        me = main_end[s] = span - above
        above += drain[s]
        dp_end = st.gather_done[-1][-1] if st.gather_done[-1] else 0.0
        if plan.zero >= 3:
            dp_end = max(dp_end, me + st.rs[0])
        if any(st.mb_rs):
            dp_end = _queue_end(me, m * v, warmup_forwards(plan.schedule, s, p, m, v),
                                sum(st.mb_rs) / v, sum(B[s]) / v, sum(F[s] + B[s]) / v, dp_end)
        if overlap.grad_reduce and any(st.bucket):
            before = 0.0
            for c in range(v):   # chunk c's last backward: before it, chunks < c's cool-down
                piece, started = st.b[c] / BUCKETS, me - st.b[c] - st.cb[c] - p * before
                before += B[s][c]
                st_c = [started + (i + 1) * piece for i in range(BUCKETS)]
                st.gather_done.append(st_c)   # release times, replayed below in chunk order
            for c in range(v - 1, -1, -1):
                for release in st.gather_done[v + c]:
                    dp_end = max(dp_end, release) + st.bucket[c]
            del st.gather_done[v:]
        ready[s] = max(me, dp_end)
    if p > 1 and stages[0].tied:
        ready[0] = ready[-1] = max(ready[0], ready[-1]) + stages[0].tied
    ends = [ready[s] + st.opt + st.post_gather for s, st in enumerate(stages)]
    step = max(ends)
    crit = ends.index(step)
    st = stages[crit]
    compute = m * sum(st.f[c] + st.b[c] for c in range(v)) + st.opt
    exposed = (m * sum(st.cf[c] + st.cb[c] for c in range(v)) + st.recv_s + st.blocking_reduce
               + st.post_gather)
    per_stage = plan.devices // p
    units = pr.units
    return StepEstimate(
        step_time_s=step, compute_s=compute, comm_s=exposed + st.send_s + st.side_s,
        exposed_comm_s=exposed, bubble_s=max(0.0, step - compute - exposed),
        dp_wait_s=wait[crit] + ready[crit] - main_end[crit], critical_stage=crit,
        flops=per_stage * sum(x.flops for x in stages),
        mem_bytes=per_stage * sum(x.mem for x in stages),
        network_energy_J=sum(scale * units[k][1] for k, scale in terms.items()),
        link_count=len(pr.capacity),
        link_terms=tuple((units[k][0], scale) for k, scale in terms.items()))
