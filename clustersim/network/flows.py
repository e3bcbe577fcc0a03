"""The flow-level network: concurrent transfers share links max-min fairly, re-shared by the
numba kernel whenever a flow starts or ends, inside a SimPy environment.

Transfers arrive in **batches** (a collective phase across every group of its class, or a
point-to-point send across every pipeline pair): all flows of a batch start together after the
batch's latency, and the batch's event fires when its last flow has drained. Completion timers
are never interrupted: each re-share bumps a version number and a timer that wakes up under an
old version does nothing (lazy cancellation).

Per-link statistics: bytes carried (known when a batch is created: every flow delivers all its
bytes, split over its route by the route's weights), busy time (time with a non-zero load) and
peak utilisation (load over capacity at any instant).

For speed, links get a *compact* index the first time a flow uses them: the kernel and the
statistics work on the links in use, not on every link of a 100,000-link cluster.

>>> import simpy, numpy as np
>>> env = simpy.Environment()
>>> net = FlowNetwork(env, capacity_Bps=np.array([10.0]))
>>> two = [(np.array([0]), np.array([1.0]))] * 2          # two flows on link 0
>>> done = net.start_batch(two, np.array([10.0, 10.0]), latency_s=0.0)
>>> env.run(done); env.now                                  # each gets 5 B/s: 2 s
2.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import simpy

from clustersim.network.maxmin import max_min_rates

__all__ = ["FlowNetwork", "Batch", "FlowSet", "flow_set"]

# A flow has finished when less than this many bytes are left (float slack of rate * dt).
_DONE_BYTES = 1e-6


class FlowSet(NamedTuple):
    """Routes of several flows as flat arrays (links per flow, link indices, weights)."""

    lengths: np.ndarray
    links: np.ndarray
    weights: np.ndarray


def flow_set(routes: Sequence[tuple[np.ndarray, np.ndarray]]) -> FlowSet:
    """Flatten ``[(link indices, weights), ...]`` into a FlowSet (build once, reuse often)."""
    lengths = np.fromiter((len(r[0]) for r in routes), dtype=np.int64, count=len(routes))
    links = np.concatenate([r[0] for r in routes]) if routes else np.zeros(0, np.int64)
    weights = np.concatenate([r[1] for r in routes]) if routes else np.zeros(0)
    return FlowSet(lengths, links.astype(np.int64, copy=False), weights)


class Batch:
    """Flows that start together; ``done`` fires when the last one has drained."""

    __slots__ = ("lengths", "links", "weights", "remaining", "rate", "done", "label", "whole")

    def __init__(self, lengths: np.ndarray, links: np.ndarray, weights: np.ndarray,
                 nbytes: np.ndarray, done: simpy.Event, label: str = ""):
        self.lengths = lengths          # links per flow
        self.links = links              # compact link index of every route entry
        self.weights = weights
        self.remaining = np.asarray(nbytes, dtype=np.float64).copy()
        self.rate = np.zeros(len(lengths))
        self.done = done
        self.label = label
        self.whole = True               # no flow has finished yet: no masking needed


class FlowNetwork:
    """Links with capacities; batches of flows sharing them max-min fairly over time."""

    def __init__(self, env: simpy.Environment, capacity_Bps: np.ndarray, record: bool = False):
        """``record`` keeps ``(time, links, utilisation)`` after every re-share (for traces)."""
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
        self._busy_now = np.zeros(0, dtype=np.int64)   # compact links with load right now
        self.active: list[Batch] = []
        self._last = env.now
        self._version = 0
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
        lengths, links, weights = flows
        nbytes = np.where(lengths == 0, 0.0, np.asarray(nbytes, dtype=np.float64))
        batch = Batch(lengths, self._compact(links), weights, nbytes, done, label)
        np.add.at(self._bytes, batch.links, np.repeat(nbytes, lengths) * weights)
        if latency_s > 0:
            self.env.process(self._join_later(batch, latency_s))
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
                for name in ("_cap", "_bytes", "_busy", "_peak"):
                    old = getattr(self, name)
                    fresh = np.zeros(grow)
                    fresh[:len(old)] = old
                    setattr(self, name, fresh)
            self._cap[start:start + len(new)] = self.capacity[new]
        return self._compact_of[links]

    def _join_later(self, batch: Batch, delay: float):
        yield self.env.timeout(delay)
        self._join(batch)

    def _join(self, batch: Batch) -> None:
        self._advance()
        if np.all(batch.remaining <= _DONE_BYTES):
            batch.done.succeed()
            return
        batch.whole = bool(np.all(batch.remaining > _DONE_BYTES))
        self.active.append(batch)
        self._reshare()

    def _advance(self) -> None:
        """Drain every active flow up to now and account link busy time."""
        dt = self.env.now - self._last
        self._last = self.env.now
        if dt <= 0 or not self.active:
            return
        for b in self.active:
            b.remaining -= b.rate * dt
        self._busy[self._busy_now] += dt

    def _reshare(self) -> None:
        """Retire drained batches, re-share links, schedule the next completion."""
        still = []
        for b in self.active:
            if np.all(b.remaining <= _DONE_BYTES):
                b.done.succeed()
            else:
                if b.whole and np.any(b.remaining <= _DONE_BYTES):
                    b.whole = False
                still.append(b)
        self.active = still
        self._version += 1
        if not still:
            self._busy_now = np.zeros(0, dtype=np.int64)
            if self.record:
                self.samples.append((self.env.now, np.zeros(0, np.int64), np.zeros(0)))
            return
        self.reshares += 1
        lengths, links, weights = [], [], []
        for b in still:
            if b.whole:
                lengths.append(b.lengths)
                links.append(b.links)
                weights.append(b.weights)
            else:  # drained flows keep no links
                alive = b.remaining > _DONE_BYTES
                keep = np.repeat(alive, b.lengths)
                lengths.append(b.lengths * alive)
                links.append(b.links[keep])
                weights.append(b.weights[keep])
        counts = np.concatenate(lengths)
        ptr = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        link = np.concatenate(links)
        weight = np.concatenate(weights)
        n_used = len(self._used)
        rates = max_min_rates(ptr, link, weight, self._cap[:n_used])
        load = np.bincount(link, weights=weight * np.repeat(rates, counts), minlength=n_used)
        util = load / self._cap[:n_used]
        np.maximum(self._peak[:n_used], util, out=self._peak[:n_used])
        self._busy_now = np.flatnonzero(load > 0)
        if self.record:
            self.samples.append((self.env.now, np.asarray(self._used)[self._busy_now],
                                 util[self._busy_now]))
        start = 0
        next_done = np.inf
        for b in still:
            n = len(b.lengths)
            r = rates[start:start + n]
            start += n
            if b.whole:
                b.rate = r
                t = b.remaining / r
            else:
                alive = b.remaining > _DONE_BYTES
                b.rate = np.where(alive, r, 0.0)
                b.remaining = np.where(alive, b.remaining, 0.0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = np.where(alive, b.remaining / b.rate, np.inf)
            next_done = min(next_done, float(t.min()))
        if np.isfinite(next_done):
            self.env.process(self._wake(next_done, self._version))

    def _wake(self, delay: float, version: int):
        yield self.env.timeout(delay)
        if version != self._version:
            return  # superseded by a later re-share
        self._advance()
        for b in self.active:  # flows with less than 1 ns of data left are done
            b.remaining[b.remaining <= _DONE_BYTES + b.rate * 1e-9] = 0.0
        self._reshare()
