"""The analytic step: every stage priced (:mod:`~clustersim.workload.analytic.stage`), the
pipeline span (:mod:`~clustersim.workload.analytic.pipeline`), then the fill, the
side-stream tails, the tied embeddings and the optimizer, combined into one
:class:`StepEstimate` (the derivation is in :mod:`clustersim.workload.analytic`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from clustersim.workload.analytic.pipeline import pipeline_span_s, warmup_forwards
from clustersim.workload.analytic.pricer import pricer_for
from clustersim.workload.analytic.stage import StagePrices, stage_prices
from clustersim.workload.groups import block_size
from clustersim.workload.mesh import mesh_for_plan
from clustersim.workload.plan import ParallelPlan
from clustersim.workload.stagework import BUCKETS, activation_bytes

__all__ = ["StepEstimate", "estimate_step"]


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


def estimate_step(model, plan: ParallelPlan, cluster, training) -> StepEstimate:
    """One training step of ``model`` under ``plan`` on ``cluster``, priced in closed form:
    the work of :func:`~clustersim.workload.program.build_program` (same stage work, same
    collectives on the same groups), combined as :mod:`clustersim.workload.analytic` derives."""
    if len(cluster.devices) < plan.devices:
        raise ValueError(f"the plan needs {plan.devices} devices, the cluster has "
                         f"{len(cluster.devices)}")
    if training.offload.optimizer != "none":
        from clustersim.errors import InputError

        raise InputError(f"training.offload.optimizer: {training.offload.optimizer!r} is not "
                         "modelled by the analytic fidelity; use simulation.fidelity: flow")
    pr = pricer_for(cluster)
    p, v, m = plan.pp, plan.virtual_stages, plan.num_microbatches
    mesh = mesh_for_plan(plan)
    mesh_key = (mesh.order, mesh.shape)
    terms: dict = {}    # link unit -> bytes it scales by
    # the builder's hybrid-sharding blocks: shard_group data-parallel ranks (x cp)
    block = {a: block_size(plan, a, mesh) for a in ("dp", "edp")}

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
    stages = [stage_prices(pr, model, plan, training, s, call, block, t_in_f, t_in_b)
              for s in range(p)]
    return _combine(plan, training, stages, pr, terms)


def _first_forward_end(st: StagePrices, c: int, start: float) -> float:
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
        side += st.across   # hybrid FSDP: after every other data-parallel collective
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
