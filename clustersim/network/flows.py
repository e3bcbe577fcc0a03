"""The flow-level network: concurrent transfers share links max-min fairly, re-shared by the
numba kernel whenever a flow starts or ends, inside a SimPy environment.

Transfers arrive in **batches** (a collective phase across every group of its class, or a
point-to-point send across every pipeline pair): all flows of a batch start together after the
batch's latency, and the batch's event fires when its last flow has drained.

Max-min fairness decomposes exactly over the connected components of the flow-link graph:
batches that share no link, directly or through others, cannot change each other's rates. So
a start or an end re-shares only the component it touches (tensor-parallel collectives in
different nodes never wait for each other's arithmetic). Each batch keeps its own completion
timer; a re-share bumps its version, and a timer that wakes up under an old version does
nothing (lazy cancellation, no interrupts).

Per-link statistics: bytes carried (known when a batch is created: every flow delivers all its
bytes, split over its route by the route's weights), busy time (time with a non-zero load) and
peak utilisation (load over capacity at any instant). Links get a *compact* index the first
time a flow uses them, so the work is proportional to the links in use.

>>> import simpy, numpy as np
>>> env = simpy.Environment()
>>> net = FlowNetwork(env, capacity_Bps=np.array([10.0]))
>>> two = [(np.array([0]), np.array([1.0]))] * 2          # two flows on link 0
>>> done = net.start_batch(two, np.array([10.0, 10.0]), latency_s=0.0)
>>> env.run(done); env.now                                  # each gets 5 B/s: 2 s
2.0
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import simpy

from clustersim.network.maxmin import max_min_rates

__all__ = ["FlowNetwork", "Batch", "FlowSet", "flow_set", "flow_set_csr"]

# A flow has finished when less than this many bytes, or 1 ns of transfer, are left.
_DONE_BYTES = 1e-6
_DONE_SECONDS = 1e-9


class FlowSet(NamedTuple):
    """Routes of several flows as flat arrays: links per flow, link indices, weights, and
    the distinct links with each entry's index among them (computed once, reused by every
    batch that runs these routes)."""

    lengths: np.ndarray
    links: np.ndarray
    weights: np.ndarray
    uniq: np.ndarray
    local: np.ndarray


def flow_set(routes: Sequence[tuple[np.ndarray, np.ndarray]]) -> FlowSet:
    """Flatten ``[(link indices, weights), ...]`` into a FlowSet (build once, reuse often)."""
    lengths = np.fromiter((len(r[0]) for r in routes), dtype=np.int64, count=len(routes))
    links = np.concatenate([r[0] for r in routes]) if routes else np.zeros(0, np.int64)
    weights = np.concatenate([r[1] for r in routes]) if routes else np.zeros(0)
    links = links.astype(np.int64, copy=False)
    uniq, local = np.unique(links, return_inverse=True)
    return FlowSet(lengths, links, weights, uniq, local)


def flow_set_csr(ptr: np.ndarray, links: np.ndarray, weights: np.ndarray) -> FlowSet:
    """A FlowSet from CSR routes (``Cluster.routes``): flow ``f`` on ``links[ptr[f]:ptr[f+1]]``."""
    links = np.asarray(links, dtype=np.int64)
    uniq, local = np.unique(links, return_inverse=True)
    return FlowSet(np.diff(ptr).astype(np.int64), links, np.asarray(weights, np.float64),
                   uniq, local.reshape(-1))


class Batch:
    """Flows that start together; ``done`` fires when the last one has drained."""

    __slots__ = ("id", "lengths", "links", "weights", "uniq", "local", "remaining", "rate",
                 "done", "label", "t_last", "version")

    def __init__(self, bid: int, lengths: np.ndarray, uniq: np.ndarray, local: np.ndarray,
                 weights: np.ndarray, nbytes: np.ndarray, done: simpy.Event, label: str = ""):
        self.id = bid
        self.lengths = lengths          # links per flow
        self.uniq = uniq                # compact links this batch touches, sorted
        self.local = local              # each route entry's index into uniq
        self.links = uniq[local]        # compact link index of every route entry
        self.weights = weights
        self.remaining = np.asarray(nbytes, dtype=np.float64).copy()
        self.rate = np.zeros(len(lengths))
        self.done = done
        self.label = label
        self.t_last = 0.0
        self.version = 0

    def advance(self, now: float) -> None:
        """Drain every flow up to ``now`` at its current rate; clear float dust."""
        dt = now - self.t_last
        if dt > 0:
            self.remaining -= self.rate * dt
        self.t_last = now
        self.remaining[self.remaining <= _DONE_BYTES + self.rate * _DONE_SECONDS] = 0.0


class FlowNetwork:
    """Links with capacities; batches of flows sharing them max-min fairly over time."""

    def __init__(self, env: simpy.Environment, capacity_Bps: np.ndarray, record: bool = False):
        """``record`` keeps ``(time, links, utilisation)`` of every link whose load changes
        (for traces: each sample updates the links it names)."""
        self.env = env
        self.record = record
        self.samples: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.capacity = np.asarray(capacity_Bps, dtype=np.float64)
        self._compact_of = np.full(len(self.capacity), -1, dtype=np.int64)
        self._used: list[int] = []                     # compact index -> link
        self._cap = np.zeros(64)
        self._bytes = np.zeros(64)
        self._busy = np.zeros(64)
        self._peak = np.zeros(64)
        self._load = np.zeros(64)                      # current load of every compact link
        self._since = np.zeros(64)                     # when that load was set
        self._count = np.zeros(64, dtype=np.int64)    # active batches on every compact link
        self.active: dict[int, Batch] = {}
        self._ids = itertools.count()
        self.reshares = 0

    # -- statistics in full link space ------------------------------------------------------
    def _full(self, compact: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.capacity))
        n = len(self._used)
        out[np.asarray(self._used, dtype=np.int64)] = compact[:n]
        return out

    @property
    def link_bytes(self) -> np.ndarray:
        return self._full(self._bytes)

    @property
    def link_busy_s(self) -> np.ndarray:
        return self._full(self._busy)

    @property
    def link_peak_util(self) -> np.ndarray:
        return self._full(self._peak)

    # -- public -------------------------------------------------------------------------
    def start_batch(self, flows: FlowSet | Sequence[tuple[np.ndarray, np.ndarray]],
                    nbytes: np.ndarray, latency_s: float = 0.0, label: str = "") -> simpy.Event:
        """Start flows (a FlowSet, or routes ``[(link indices, weights), ...]``) carrying
        ``nbytes[i]`` each after ``latency_s``; return the event that fires when all have
        drained."""
        done = self.env.event()
        if not isinstance(flows, FlowSet):
            flows = flow_set(flows)
        nbytes = np.where(flows.lengths == 0, 0.0, np.asarray(nbytes, dtype=np.float64))
        # the batch's distinct links in compact ids, sorted (re-sharing searches them)
        uniq = self._compact(flows.uniq)
        order = np.argsort(uniq, kind="stable")
        if np.any(order != np.arange(len(order))):  # map to sorted compact ids
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            uniq, local = uniq[order], rank[flows.local]
        else:
            local = flows.local
        batch = Batch(next(self._ids), flows.lengths, uniq, local, flows.weights, nbytes, done,
                      label)
        np.add.at(self._bytes, batch.links, np.repeat(nbytes, flows.lengths) * flows.weights)
        if latency_s > 0:  # a bare timeout with a callback: cheaper than a process
            self.env.timeout(latency_s).callbacks.append(lambda _: self._join(batch))
        else:
            self._join(batch)
        return done

    # -- internals ----------------------------------------------------------------------
    def _compact(self, links: np.ndarray) -> np.ndarray:
        new = np.unique(links[self._compact_of[links] < 0])
        if len(new):
            start = len(self._used)
            self._compact_of[new] = np.arange(start, start + len(new))
            self._used.extend(new.tolist())
            if len(self._used) > len(self._cap):
                grow = max(len(self._used), 2 * len(self._cap))
                for name in ("_cap", "_bytes", "_busy", "_peak", "_load", "_since", "_count"):
                    old = getattr(self, name)
                    fresh = np.zeros(grow, dtype=old.dtype)
                    fresh[:len(old)] = old
                    setattr(self, name, fresh)
            self._cap[start:start + len(new)] = self.capacity[new]
        return self._compact_of[links]

    def _join(self, batch: Batch) -> None:
        if np.all(batch.remaining <= _DONE_BYTES):
            batch.done.succeed()
            return
        batch.t_last = self.env.now
        self.active[batch.id] = batch
        self._count[batch.uniq] += 1
        self._reshare(self._component(batch))

    def _component(self, batch: Batch) -> list[Batch]:
        """Every active batch that shares links with ``batch``, directly or transitively."""
        if np.all(self._count[batch.uniq] == 1):
            return [batch]  # the common case: nobody else on its links
        mark = np.zeros(len(self._used), dtype=np.bool_)
        mark[batch.uniq] = True
        todo, rest = [batch], [b for b in self.active.values() if b is not batch]
        grew = True
        while grew:
            grew = False
            for other in rest:
                if mark[other.uniq].any():
                    mark[other.uniq] = True
                    todo.append(other)
                    grew = True
            rest = [b for b in rest if b not in todo] if grew else rest
        return todo

    def _reshare(self, component: list[Batch]) -> None:
        """Drain, retire finished batches, and re-share the links of one component."""
        now = self.env.now
        single = len(component) == 1
        touched = component[0].uniq if single else np.unique(
            np.concatenate([b.uniq for b in component]))
        alive = []
        for b in component:
            b.advance(now)
            if np.all(b.remaining <= 0.0):
                del self.active[b.id]
                self._count[b.uniq] -= 1
                b.version += 1
                b.done.succeed()
            else:
                alive.append(b)
        self.reshares += 1
        new_load = np.zeros(len(touched))
        if alive:
            lengths, links, weights, live = [], [], [], []
            for b in alive:
                flowing = b.remaining > 0.0
                live.append(flowing)
                keep = np.repeat(flowing, b.lengths)
                lengths.append(b.lengths * flowing)
                links.append(b.links[keep])
                weights.append(b.weights[keep])
            counts = np.concatenate(lengths)
            ptr = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=ptr[1:])
            if single:
                local = component[0].local if live[0].all() else \
                    np.searchsorted(touched, links[0])
            else:
                local = np.searchsorted(touched, np.concatenate(links))
            weight = np.concatenate(weights)
            rates = max_min_rates(ptr, local, weight, self._cap[touched])
            new_load = np.bincount(local, weights=weight * np.repeat(rates, counts),
                                   minlength=len(touched))
            start = 0
            for b, flowing in zip(alive, live):
                n = len(b.lengths)
                b.rate = np.where(flowing, rates[start:start + n], 0.0)
                start += n
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = float(np.min(np.where(flowing, b.remaining / b.rate, np.inf)))
                b.version += 1
                if np.isfinite(t):
                    timer = self.env.timeout(t)
                    timer.callbacks.append(self._waker(b, b.version))
        # link statistics: close the interval of the old load, open the new one
        busy = self._load[touched] > 0
        self._busy[touched[busy]] += now - self._since[touched[busy]]
        self._load[touched] = new_load
        self._since[touched] = now
        util = new_load / self._cap[touched]
        self._peak[touched] = np.maximum(self._peak[touched], util)
        if self.record:
            self.samples.append((now, np.asarray(self._used)[touched], util))

    def _waker(self, batch: Batch, version: int):
        def wake(_event) -> None:
            if version != batch.version or batch.id not in self.active:
                return  # superseded by a later re-share of its component
            self._reshare(self._component(batch))

        return wake
