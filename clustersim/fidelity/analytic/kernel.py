"""The numba kernel of the analytic timeline: templates (:mod:`.templates`) run micro-batch
after micro-batch on every stage at once, with uncontended prices.

Each stage runs its sequence of template instances; an op starts when its stream is free and
what it depends on has ended (ops of its instance, the registers at the instance's start, the
stage's prologue calls). A receive waits until its sender has posted the send (a sender's
transfers on one stream run in order), a paired call (tied embeddings, DualPipe's
mirrored copies) until both of its stages have posted it; the kernel then moves on to another stage. ``timeline_kernel.py_func`` is the same
code, interpreted; the independent plain-Python twin is
:func:`clustersim.fidelity.analytic.timeline.evaluate`, which tests hold equal to this.

>>> import numpy as np
>>> iv = np.array([[0.0, 2.0], [1.0, 3.0], [5.0, 6.0]]); compute = np.array([1, 0, 0])
>>> [float(x) for x in breakdown_kernel(iv[:, 0], iv[:, 1], compute == 1)]
[2.0, 3.0, 2.0]
"""

from __future__ import annotations

import numpy as np

from clustersim._numba import njit

__all__ = ["COMPUTE", "CALL", "RECV", "SEND", "MEET", "LOCAL", "ENTRY", "PROLOGUE",
           "timeline_kernel", "breakdown_kernel", "critical_breakdown_kernel"]

COMPUTE, CALL, RECV, SEND, MEET = 0, 1, 2, 3, 4      # op codes (offloads are calls)
LOCAL, ENTRY, PROLOGUE = 0, 1, 2                     # what a dependency refers to


@njit
def _interval_arrays(seq_ptr, seq_inst, inst_ptr):
    """Room for every op's interval (a receive adds one on the sender: twice the ops)."""
    total = 0
    for k in range(seq_ptr[-1]):
        total += inst_ptr[seq_inst[k] + 1] - inst_ptr[seq_inst[k]]
    n = 2 * total   # left uninitialised: only the first n_iv are written, and returned
    return (np.empty(n), np.empty(n), np.empty(n, dtype=np.int64), np.empty(n, dtype=np.bool_),
            np.empty(n, dtype=np.int64))


@njit
def _stage_state(n_stages, n_regs, max_ops, n_prologue, dep_kind, dep_val):
    """Per stage one row holding its op ends (``local``), entry registers and prologue calls
    side by side, and each dependency's column in it: a dependency is one read at a column
    known in advance (bent for speed: a call per read cost more than the rest of an op)."""
    state = np.zeros((n_stages, max_ops + n_regs + n_prologue + 1))
    local, entry = state[:, :max_ops], state[:, max_ops:max_ops + n_regs]
    pro = state[:, max_ops + n_regs:]
    dep_col = dep_val + np.where(dep_kind == LOCAL, 0, max_ops + np.where(dep_kind == ENTRY, 0,
                                                                          n_regs))
    return state, local, entry, pro, dep_col


@njit
def _exit_instance(s, inst, is_prologue, inst_ptr, inst_exit, reg, local, entry, pro):
    """Stage ``s`` leaves instance ``inst``: its exit registers; a prologue keeps its calls."""
    for r in range(reg.shape[1]):
        x = inst_exit[inst, r]
        reg[s, r] = local[s, x] if x >= 0 else entry[s, -1 - x]
    if is_prologue:
        for q in range(inst_ptr[inst + 1] - inst_ptr[inst]):
            pro[s, q] = local[s, q]


@njit
def _receive(send, key, start, duration, last_send, stage_end):
    """``(start, end, sender)`` of a receive whose send ``send[key]`` (ready time, stage,
    register) has been posted: after the send and after the sender's previous transfer on the
    same register (one link, in order)."""
    sender, sreg = int(send[key, 1]), int(send[key, 2])
    if send[key, 0] > start:
        start = send[key, 0]
    if last_send[sender, sreg] > start:
        start = last_send[sender, sreg]
    end = start + duration
    last_send[sender, sreg] = end
    if end > stage_end[sender]:
        stage_end[sender] = end
    return start, end, sender


@njit
def _meet(meet, k, s, start, duration):
    """``(start, end)`` of call ``k`` two stages meet on (``meet[k]``: post time, posting
    stage, start, end); ``end < 0`` while stage ``s`` waits for the other: the first to post
    waits, the second runs the call for both."""
    if meet[k, 3] >= 0.0:                        # the call has run
        return meet[k, 2], meet[k, 3]
    if meet[k, 1] < 0:                           # first to post
        meet[k, 0], meet[k, 1] = start, s
        return start, -1.0
    if meet[k, 1] == s:                          # still waiting
        return start, -1.0
    start = max(start, meet[k, 0])               # second: the call runs now
    meet[k, 2], meet[k, 3] = start, start + duration
    return start, start + duration


@njit
def timeline_kernel(seq_ptr, seq_inst, seq_mb, inst_ptr, inst_exit, op_code, op_reg, op_dur,
                    op_key, op_main, dep_ptr, dep_kind, dep_val, n_regs, n_keys, n_meets,
                    max_ops, n_prologue):
    """Per stage, when its last op ends; and every op's interval (start, end, stage, op,
    compute on the main stream or communication), ``ok`` False on a deadlock.

    ``seq_ptr``: stage s runs instances ``seq_inst[seq_ptr[s]:seq_ptr[s+1]]`` for the
    micro-batches ``seq_mb``; instance i's ops are ``inst_ptr[i]:inst_ptr[i+1]`` and its exit
    registers ``inst_exit[i, r]`` (``>= 0``: that op of the instance; ``-1 - r'``: the
    register ``r'`` it started with); op fields per op, dependencies as CSR."""
    n_stages = seq_ptr.shape[0] - 1
    reg = np.zeros((n_stages, n_regs))
    state, local, entry, pro, dep_col = _stage_state(n_stages, n_regs, max_ops, n_prologue,
                                                     dep_kind, dep_val)
    pos, n_iv = seq_ptr[:-1].copy(), 0
    opi = np.zeros(n_stages, dtype=np.int64)
    stage_end = np.zeros(n_stages)
    send = np.full((n_keys, 3), -1.0)          # per key: ready time, stage, register
    last_send = np.zeros((n_stages, n_regs))
    meet = np.full((n_meets + 1, 4), -1.0)     # per call: post time, stage, start, end
    iv_start, iv_end, iv_stage, iv_compute, iv_op = _interval_arrays(seq_ptr, seq_inst, inst_ptr)
    remaining = np.sum(seq_ptr[1:] > seq_ptr[:-1])   # stages with work (entry = reg = 0)
    while remaining > 0:
        progress = False
        for s in range(n_stages):
            # the stage's place in locals, written back when it waits (bent for speed: array
            # elements would be reloaded after every store to an interval array)
            p, o, stop = pos[s], opi[s], seq_ptr[s + 1]
            while p < stop:
                inst = seq_inst[p]
                j = inst_ptr[inst] + o
                if j == inst_ptr[inst + 1]:           # instance done: its exit registers
                    _exit_instance(s, inst, seq_mb[p] == -2, inst_ptr, inst_exit, reg,
                                   local, entry, pro)
                    p, o, progress = p + 1, 0, True
                    if p == stop:
                        remaining -= 1
                    else:
                        for r in range(n_regs):   # a loop, not a slice copy
                            entry[s, r] = reg[s, r]
                    continue
                code, r = op_code[j], op_reg[j]
                start = reg[s, r] if code != SEND else 0.0
                for d in range(dep_ptr[j], dep_ptr[j + 1]):
                    if state[s, dep_col[d]] > start:
                        start = state[s, dep_col[d]]
                if code == SEND:
                    key = op_key[j] + seq_mb[p]
                    send[key, 0], send[key, 1], send[key, 2] = start, s, r
                    o, progress = o + 1, True
                    continue
                if code == RECV:
                    key = op_key[j] + seq_mb[p]
                    if send[key, 0] < 0.0:
                        break                            # the sender has not sent yet
                    start, end, sender = _receive(send, key, start, op_dur[j], last_send,
                                                  stage_end)
                    iv_start[n_iv], iv_end[n_iv], iv_stage[n_iv] = start, end, sender
                    iv_compute[n_iv], iv_op[n_iv] = False, j
                    n_iv += 1
                elif code == MEET:
                    start, end = _meet(meet, op_key[j], s, start, op_dur[j])
                    if end < 0.0:
                        break                            # waiting for the other stage
                else:
                    end = start + op_dur[j]
                local[s, o] = end
                reg[s, r] = end
                if end > stage_end[s]:
                    stage_end[s] = end
                iv_start[n_iv], iv_end[n_iv], iv_stage[n_iv] = start, end, s
                iv_compute[n_iv], iv_op[n_iv] = op_main[j], j
                n_iv += 1
                o, progress = o + 1, True
            pos[s], opi[s] = p, o
        if not progress:   # a deadlock: ok is False
            break
    return (stage_end, iv_start[:n_iv], iv_end[:n_iv], iv_stage[:n_iv], iv_op[:n_iv],
            iv_compute[:n_iv], remaining == 0)


@njit
def breakdown_kernel(start, end, compute):
    """``(compute_s, comm_s, exposed_comm_s)`` of one rank's intervals: the union of its
    compute, the union of its communication, and the part of the latter no compute covers."""
    order = np.argsort(start)
    c_lo, c_hi = np.empty(len(start)), np.empty(len(start))
    m_lo, m_hi = np.empty(len(start)), np.empty(len(start))
    nc = nm = 0
    for k in order:
        lo, hi = start[k], end[k]
        if hi <= lo:
            continue
        if compute[k]:
            if nc and lo <= c_hi[nc - 1]:
                c_hi[nc - 1] = max(c_hi[nc - 1], hi)
            else:
                c_lo[nc], c_hi[nc] = lo, hi
                nc += 1
        else:
            if nm and lo <= m_hi[nm - 1]:
                m_hi[nm - 1] = max(m_hi[nm - 1], hi)
            else:
                m_lo[nm], m_hi[nm] = lo, hi
                nm += 1
    compute_s = 0.0
    for i in range(nc):
        compute_s += c_hi[i] - c_lo[i]
    comm_s = 0.0
    for i in range(nm):
        comm_s += m_hi[i] - m_lo[i]
    covered = 0.0
    i = k = 0
    while i < nc and k < nm:
        lo, hi = max(c_lo[i], m_lo[k]), min(c_hi[i], m_hi[k])
        if hi > lo:
            covered += hi - lo
        if c_hi[i] < m_hi[k]:
            i += 1
        else:
            k += 1
    return compute_s, comm_s, comm_s - covered


@njit
def critical_breakdown_kernel(critical, start, end, stage, op, compute, op_on_sms):
    """``(compute_s, comm_s, exposed_comm_s, sm_comm_s, sm_exposed_s)`` of stage
    ``critical``: :func:`breakdown_kernel` of its intervals, and of its compute with the
    communication that runs on SMs (``op_on_sms`` per op) alone. One pass here, not boolean
    masks over every stage's intervals in numpy (they cost as much as the timeline)."""
    n = 0
    for k in range(stage.shape[0]):
        n += stage[k] == critical
    lo, hi, is_c = np.empty(n), np.empty(n), np.empty(n, dtype=np.bool_)
    sm_lo, sm_hi, sm_c = np.empty(n), np.empty(n), np.empty(n, dtype=np.bool_)
    i = m = 0
    for k in range(stage.shape[0]):
        if stage[k] != critical:
            continue
        lo[i], hi[i], is_c[i] = start[k], end[k], compute[k]
        i += 1
        if compute[k] or op_on_sms[op[k]]:
            sm_lo[m], sm_hi[m], sm_c[m] = start[k], end[k], compute[k]
            m += 1
    compute_s, comm_s, exposed = breakdown_kernel(lo, hi, is_c)
    _, sm_s, sm_exposed = breakdown_kernel(sm_lo[:m], sm_hi[:m], sm_c[:m])
    return compute_s, comm_s, exposed, sm_s, sm_exposed
