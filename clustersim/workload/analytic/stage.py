"""One pipeline stage in the analytic model: the collectives its work posts, each priced and
assigned to what it delays (a slot's blocking time, the TP stream, the side stream, ...),
and the stage's slots and side-stream work derived from those prices (:class:`StagePrices`).

The calls are placed as :func:`~clustersim.workload.program.build_program` places them, on
the groups of :mod:`~clustersim.workload.groups`; identical stages (same layers, same prices)
share one derivation.
"""

from __future__ import annotations

from clustersim.workload.analytic.pipeline import warmup_forwards
from clustersim.workload.groups import axis_of, hybrid_sharded, sharded_block
from clustersim.workload.memory import stage_parameters
from clustersim.workload.ops import element_bytes
from clustersim.workload.stagework import (BUCKETS, ZERO3_PIECES, ZERO3_PREFIX,
                                           p2p_gather_bytes)

__all__ = ["StagePrices", "stage_prices"]


class StagePrices:
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
                 "side", "recv", "hidden", "early", "pieces", "wf", "wb", "recv_f", "recv_b",
                 "across")


# What a priced collective adds to: per chunk, the slot's blocking time (forward, backward),
# overlapped TP (forward, backward), ZeRO-3 gathers (forward, backward) and reduce-scatters,
# ZeRO-2's per micro-batch, parameter buckets, gradient buckets; per stage, parameters
# gathered after the optimizer, the tied embeddings, the receive's all-gather, hybrid
# FSDP's all-reduce across blocks.
(_CF, _CB, _TF, _TB, _AGF, _AGB, _RS, _MB, _PB, _GB, _POST, _TIED, _RECV, _ACROSS) = range(14)


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
    hybrid, dp_block = hybrid_sharded(plan), sharded_block(plan)
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
                calls.append((slot, c, axis_of(comm), dp_block if side else "all", comm.op,
                              comm.bytes, comm.count, comm.count, 0))
        share = w.layers / here
        for comm in comms["microbatch"]:
            calls.append((_MB, c, axis_of(comm), "all", comm.op, comm.bytes * share, 1, 1, 0))
        for g in (gathers if training.overlap.param_gather else ()):
            calls.append((_PB, c, axis_of(g), dp_block, g.op, g.bytes * share / BUCKETS, 1,
                          0, BUCKETS))
        for r in reduces:
            size = r.bytes * share / BUCKETS
            calls.append((_GB, c, axis_of(r), dp_block, r.op, size, 1, 0, BUCKETS))
            if hybrid:   # scaled by the block size when priced
                calls.append((_GB, c, axis_of(r), "across", "all_reduce", size, 1, 0, BUCKETS))
    for g in (() if training.overlap.param_gather else gathers):
        calls.append((_POST, 0, axis_of(g), dp_block, g.op, g.bytes, 1, 0, 1))
    for t in comms["step"]:
        if t.axis == "pp":
            calls.append((_TIED, 0, "tied", "all", t.op, t.bytes, 1, 0, 1))
    if plan.zero >= 3 and hybrid:   # scaled by the block size when priced
        size = stage_parameters(model, plan, s).dense * element_bytes(training.precision)[0]
        calls.append((_ACROSS, 0, "dp", "across", "all_reduce", size, 1, 0, 1))
    gather_B = p2p_gather_bytes(model, plan, training.precision) if plan.pp > 1 else 0.0
    if gather_B:
        receives = 2 * v - (s == 0) - (s == plan.pp - 1)
        calls.append((_RECV, 0, "tp", "all", "all_gather", gather_B, 1, receives, 0))
    found = pr.templates[key] = (works, opt, tuple(calls))
    return found


def stage_prices(pr, model, plan, training, s, call, block, t_in_f, t_in_b) -> StagePrices:
    """Stage ``s``'s :class:`StagePrices`: its calls priced by ``call(axis, block kind, stage,
    op, bytes, times)`` (which also adds their link bytes), ``block`` the hybrid-sharding
    block size per axis, ``t_in_f``/``t_in_b`` every stage's receive times; stages with the
    same work and prices share one derivation (cached on the pricer ``pr``)."""
    p, v, m = plan.pp, plan.virtual_stages, plan.num_microbatches
    works, opt, calls = _template(pr, model, plan, training, s)
    prices = []
    for slot, c, axis, kind, op, size, count, per_mb, per_step in calls:
        if kind == "across":   # a block's shard
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


def _derive(plan, training, s, works, opt, calls, prices, t_in_f, t_in_b) -> StagePrices:
    """A stage's slots and side-stream work from its prices (shared by identical stages)."""
    p, v, m = plan.pp, plan.virtual_stages, plan.num_microbatches
    overlap = training.overlap
    acc = [[0.0] * v for _ in range(14)]
    done = [[] for _ in range(v)]   # parameter buckets, queued from the step's start
    clock = 0.0
    for (slot, c, *_), t in zip(calls, prices):
        acc[slot][c] += t
        if slot == _PB:
            for _ in range(BUCKETS if t > 0 else 0):
                clock += t
                done[c].append(clock)
    st = StagePrices()
    st.f, st.b = [w.fwd.seconds for w in works], [w.bwd.seconds for w in works]
    st.ag_f, st.ag_b, st.rs, st.mb_rs, st.bucket = (acc[x] for x in (_AGF, _AGB, _RS, _MB, _GB))
    st.gathered, st.gather_main, st.tied = done, acc[_POST][0], acc[_TIED][0]
    st.across = acc[_ACROSS][0]
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
               + (BUCKETS * sum(st.bucket) if overlap.grad_reduce else 0.0) + st.tied
               + st.across)
    return st
