"""Chrome / Perfetto trace of a simulation: one track per rank and stream, and counters for
the busiest links' utilisation over time. Open the JSON in https://ui.perfetto.dev.

>>> from clustersim.engine.program import Program
>>> from clustersim.engine.core import simulate
>>> from clustersim.network import build_cluster
>>> c = build_cluster("dgx-h100", devices=8)
>>> p = Program(); r = p.add_rank(c.devices[0], label="stage 0")
>>> _ = p.compute(r, 1e-3, label="fwd")
>>> events = trace_events(simulate(p, c, record_links=True), c)
>>> [e["name"] for e in events if e["ph"] == "X"]
['fwd']
"""

from __future__ import annotations

import numpy as np

__all__ = ["trace_events"]


def trace_events(result, cluster, max_links: int = 16) -> list[dict]:
    """Trace events (Chrome JSON format, times in microseconds)."""
    program = result.program
    events: list[dict] = []
    threads: dict[tuple[int, str], int] = {}
    for rank in program.ranks:
        name = rank.label or str(rank.device)
        if rank.stands_for > 1:
            name += f" (x{rank.stands_for})"
        events.append({"ph": "M", "name": "process_name", "pid": rank.index,
                       "args": {"name": f"rank {rank.index}: {name}"}})
    for op in program.ops:
        tid = threads.setdefault((op.rank, op.stream), len(threads))
        start, end = result.op_start_s[op.id], result.op_end_s[op.id]
        events.append({"ph": "X", "name": op.label or op.kind, "cat": op.category or op.kind,
                       "pid": op.rank, "tid": tid, "ts": start * 1e6,
                       "dur": max(0.0, end - start) * 1e6,
                       "args": {"kind": op.kind, **({"flops": op.flops} if op.flops else {})}})
    for (rank, stream), tid in threads.items():
        events.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid,
                       "args": {"name": stream}})
    # link counters: the busiest links by bytes, on their own pseudo-process
    busiest = np.argsort(-result.link_bytes)[:max_links]
    busiest = [int(l) for l in busiest if result.link_bytes[l] > 0]
    links_pid = len(program.ranks)
    events.append({"ph": "M", "name": "process_name", "pid": links_pid,
                   "args": {"name": "links (utilisation)"}})
    wanted = set(busiest)
    for t, links, util in result.link_samples:  # each sample updates the links it names
        for l, u_now in zip(links.tolist(), util.tolist()):
            if l in wanted:
                u, v = cluster.links.edges[l]
                events.append({"ph": "C", "name": f"{u}->{v}", "pid": links_pid,
                               "ts": t * 1e6, "args": {"util": round(u_now, 4)}})
    return events
