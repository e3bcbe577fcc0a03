"""A Program: per simulated rank, ops on streams with dependencies.

Ops are compute (a duration and the FLOPs and bytes behind it), or a post of a communication
*call*: a collective (one op, every group it launches) or a transfer (point-to-point sends
and one-sided memory traffic such as offload). A call starts when every participant has
posted it, so a send waits for its receive, and a collective for its last member.

In ``representative`` mode one simulated rank stands for a whole class of identical ranks
(``RankInfo.stands_for``), and each call lists every group or pair of the class, so the
network carries all concurrent flows while the engine runs one process per class.

>>> p = Program()
>>> r0, r1 = p.add_rank("gpu0"), p.add_rank("gpu1")
>>> a = p.compute(r0, 1e-3, label="fwd")
>>> call = p.transfer([("gpu0", "gpu1")], 1e6, participants=(r0, r1))
>>> s = p.post(r0, call, stream="p2p", deps=(a,), kind="send")
>>> r = p.post(r1, call, stream="p2p", kind="recv")
>>> len(p.ops), p.ops[s].deps
(3, (0,))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["RankInfo", "Op", "CollectiveCall", "TransferCall", "Program"]


@dataclass
class RankInfo:
    """A simulated rank: the device it runs on and how many real ranks it stands for."""

    index: int
    device: Any
    stands_for: int = 1
    label: str = ""


@dataclass
class Op:
    id: int
    rank: int
    stream: str
    kind: str                  # compute | collective | send | recv | transfer
    deps: tuple[int, ...] = ()
    duration_s: float = 0.0    # compute only
    flops: float = 0.0         # compute only: FLOPs executed (energy, HFU)
    mem_bytes: float = 0.0     # compute only: bytes moved to/from device memory
    call: int | None = None    # communication ops: the call they post
    category: str = ""         # for breakdowns: fwd, bwd, optimizer, tp, dp, pp, ep, cp, offload
    label: str = ""


@dataclass
class CollectiveCall:
    id: int
    op: str                                  # all_reduce, all_gather, ...
    size_B: float                            # per group, nccl-tests convention
    groups: tuple[tuple[Any, ...], ...]      # every group this call runs concurrently
    participants: tuple[int, ...]            # simulated ranks that post it
    algorithm: str = "auto"
    repeat: int = 1                          # identical back-to-back collectives merged
    label: str = ""


@dataclass
class TransferCall:
    id: int
    pairs: tuple[tuple[Any, Any], ...]       # (source node, destination node) flows
    size_B: float                            # per pair
    participants: tuple[int, ...]
    repeat: int = 1
    label: str = ""


def _tuples(rows) -> tuple[tuple, ...]:
    """Rows as a tuple of tuples; one already in that form is kept as it is (builders share
    one per family across every micro-batch's call, and the engine caches by it). Only the
    first row is checked: a stray list further on fails loudly when the engine hashes it."""
    if type(rows) is tuple and (not rows or type(rows[0]) is tuple):
        return rows
    return tuple(tuple(r) for r in rows)


@dataclass
class Program:
    ranks: list[RankInfo] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    calls: dict[int, CollectiveCall | TransferCall] = field(default_factory=dict)

    def add_rank(self, device: Any, stands_for: int = 1, label: str = "") -> int:
        self.ranks.append(RankInfo(len(self.ranks), device, stands_for, label))
        return len(self.ranks) - 1

    def _add(self, **kwargs) -> int:
        op = Op(id=len(self.ops), **kwargs)
        for d in op.deps:
            if not 0 <= d < op.id:
                raise ValueError(f"op {op.id} ({op.label}) depends on unknown op {d}")
        self.ops.append(op)
        return op.id

    def compute(self, rank: int, duration_s: float, deps: tuple[int, ...] = (),
                stream: str = "compute", flops: float = 0.0, mem_bytes: float = 0.0,
                category: str = "", label: str = "") -> int:
        """Add a compute op; returns its id."""
        if duration_s < 0:
            raise ValueError(f"negative duration for {label}")
        return self._add(rank=rank, stream=stream, kind="compute", deps=tuple(deps),
                         duration_s=duration_s, flops=flops, mem_bytes=mem_bytes,
                         category=category, label=label)

    def collective(self, op: str, size_B: float, groups, participants, algorithm: str = "auto",
                   repeat: int = 1, label: str = "") -> int:
        """Register a collective call; ranks then ``post`` it. Returns the call id."""
        cid = len(self.calls)
        self.calls[cid] = CollectiveCall(cid, op, float(size_B), _tuples(groups),
                                         tuple(participants), algorithm, repeat, label)
        return cid

    def transfer(self, pairs, size_B: float, participants, repeat: int = 1,
                 label: str = "") -> int:
        """Register a transfer call (sends, or one-sided memory traffic). Returns its id."""
        cid = len(self.calls)
        self.calls[cid] = TransferCall(cid, _tuples(pairs), float(size_B),
                                       tuple(participants), repeat, label)
        return cid

    def post(self, rank: int, call: int, stream: str = "comm", deps: tuple[int, ...] = (),
             kind: str | None = None, category: str = "", label: str = "") -> int:
        """The op by which ``rank`` takes part in ``call``; it ends when the call ends."""
        c = self.calls[call]
        if rank not in c.participants:
            raise ValueError(f"rank {rank} is not a participant of call {call} ({c.label})")
        kind = kind or ("collective" if isinstance(c, CollectiveCall) else "transfer")
        return self._add(rank=rank, stream=stream, kind=kind, deps=tuple(deps), call=call,
                         category=category, label=label or c.label)

    def append(self, other: Program, ranks: list[int] | None = None,
               after: dict[int, tuple[int, ...]] | None = None, label: str = "") -> list[int]:
        """Append ``other``'s ops and calls, renumbered; returns where its ranks went.

        ``ranks`` maps each of ``other``'s ranks to one of this program's (a next step of a
        job on the same ranks); None adds them as new ranks, labelled ``label: ...``. The
        first op of each (rank, stream) of ``other`` also waits for the ops ``after`` lists
        for the rank it lands on (the end of that rank's previous step). Calls stay among ``other``'s ranks: programs
        appended side by side never rendezvous with each other.

        >>> job = Program()
        >>> r = job.add_rank("gpu0")
        >>> _ = job.compute(r, 1.0)
        >>> both = Program()
        >>> both.append(job, label="a"), both.append(job, label="b"), both.ranks[1].label
        ([0], [1], 'b: ')
        """
        if ranks is None:
            ranks = [self.add_rank(r.device, r.stands_for, f"{label}: {r.label}")
                     for r in other.ranks]
        op0, call0 = len(self.ops), len(self.calls)
        for call in other.calls.values():
            self.calls[call.id + call0] = replace(
                call, id=call.id + call0, participants=tuple(ranks[p] for p in call.participants))
        after = after or {}
        started: set = set()
        for op in other.ops:
            deps = tuple(d + op0 for d in op.deps)
            if (op.rank, op.stream) not in started:
                started.add((op.rank, op.stream))
                deps += tuple(after.get(ranks[op.rank], ()))
            self.ops.append(replace(op, id=op.id + op0, rank=ranks[op.rank], deps=deps,
                                    call=None if op.call is None else op.call + call0))
        return ranks
