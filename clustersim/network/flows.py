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

import numpy as np
import simpy

from clustersim.network.maxmin import max_min_rates

__all__ = ["FlowNetwork", "Batch"]

# A flow has finished when less than this many bytes are left (float slack of rate * dt).
_DONE_BYTES = 1e-6


class Batch:
    """Flows that start together; ``done`` fires when the last one has drained."""

    __slots__ = ("ptr", "links", "weights", "remaining", "rate", "done", "uniq", "local",
                 "start_s", "label")

    def __init__(self, routes: Sequence[tuple[np.ndarray, np.ndarray]], nbytes: np.ndarray,
                 done: simpy.Event, label: str = ""):
        lengths = np.fromiter((len(r[0]) for r in routes), dtype=np.int64, count=len(routes))
        self.ptr = np.zeros(len(routes) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.ptr[1:])
        self.links = np.concatenate([r[0] for r in routes]) if routes else np.zeros(0, np.int64)
        self.weights = np.concatenate([r[1] for r in routes]) if routes else np.zeros(0)
        self.remaining = np.asarray(nbytes, dtype=np.float64).copy()
        self.rate = np.zeros(len(routes))
        self.uniq, self.local = np.unique(self.links, return_inverse=True)
        self.done = done
        self.start_s = 0.0
        self.label = label

    def bytes_per_link(self) -> np.ndarray:
        """Bytes this batch puts on each of its links (aligned with ``uniq``)."""
        per_entry = np.repeat(self.remaining, np.diff(self.ptr)) * self.weights
        return np.bincount(self.local, weights=per_entry, minlength=len(self.uniq))


class FlowNetwork:
    """Links with capacities; batches of flows sharing them max-min fairly over time."""

    def __init__(self, env: simpy.Environment, capacity_Bps: np.ndarray, record: bool = False):
        """``record`` keeps ``(time, links, utilisation)`` after every re-share (for traces)."""
        self.env = env
        self.record = record
        self.samples: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.capacity = np.asarray(capacity_Bps, dtype=np.float64)
        m = len(self.capacity)
        self.link_bytes = np.zeros(m)
        self.link_busy_s = np.zeros(m)
        self.link_peak_util = np.zeros(m)
        self.active: list[Batch] = []
        self._last = env.now
        self._version = 0
        self.reshares = 0

    # -- public -------------------------------------------------------------------------
    def start_batch(self, routes: Sequence[tuple[np.ndarray, np.ndarray]], nbytes: np.ndarray,
                    latency_s: float = 0.0, label: str = "") -> simpy.Event:
        """Start flows (``routes[i] = (link indices, weights)``, ``nbytes[i]`` each) after
        ``latency_s``; return the event that fires when all have drained."""
        done = self.env.event()
        batch = Batch(routes, nbytes, done, label)
        np.add.at(self.link_bytes, batch.uniq, batch.bytes_per_link())
        if latency_s > 0:
            self.env.process(self._join_later(batch, latency_s))
        else:
            self._join(batch)
        return done

    # -- internals ----------------------------------------------------------------------
    def _join_later(self, batch: Batch, delay: float):
        yield self.env.timeout(delay)
        self._join(batch)

    def _join(self, batch: Batch) -> None:
        self._advance()
        batch.start_s = self.env.now
        empty = np.diff(batch.ptr) == 0
        batch.remaining[empty] = 0.0  # same-node transfers cost no network time
        if np.all(batch.remaining <= _DONE_BYTES):
            batch.done.succeed()
            return
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
        if self._busy_links is not None:
            self.link_busy_s[self._busy_links] += dt

    _busy_links: np.ndarray | None = None

    def _reshare(self) -> None:
        """Retire drained flows and batches, re-share links, schedule the next completion."""
        still = []
        for b in self.active:
            if np.all(b.remaining <= _DONE_BYTES):
                b.done.succeed()
            else:
                still.append(b)
        self.active = still
        self._version += 1
        if not still:
            self._busy_links = None
            if self.record:
                self.samples.append((self.env.now, np.zeros(0, np.int64), np.zeros(0)))
            return
        self.reshares += 1
        # Compact link space: the kernel's work is proportional to the links in use, not to
        # every link of a 100,000-link cluster.
        uniq, inverse = np.unique(np.concatenate([b.uniq for b in still]), return_inverse=True)
        lengths, locs, weights, live = [], [], [], []
        offset = 0
        for b in still:
            mapped = inverse[offset:offset + len(b.uniq)][b.local]
            offset += len(b.uniq)
            alive = b.remaining > _DONE_BYTES
            live.append(alive)
            per_flow = np.diff(b.ptr)
            lengths.append(per_flow * alive)  # drained flows keep no links
            keep = np.repeat(alive, per_flow)
            locs.append(mapped[keep])
            weights.append(b.weights[keep])
        ptr = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(lengths), out=ptr[1:])
        link = np.concatenate(locs)
        weight = np.concatenate(weights)
        rates = max_min_rates(ptr, link, weight, self.capacity[uniq])
        # hand rates back, note the load on every link in use
        load = np.bincount(link, weights=weight * np.repeat(rates, np.diff(ptr)),
                           minlength=len(uniq))
        util = load / self.capacity[uniq]
        np.maximum.at(self.link_peak_util, uniq, util)
        if self.record:
            self.samples.append((self.env.now, uniq, util))
        self._busy_links = uniq[load > 0]
        start = 0
        next_done = np.inf
        for b, alive in zip(still, live):
            n = len(alive)
            b.rate = np.where(alive, rates[start:start + n], 0.0)
            b.remaining = np.where(alive, b.remaining, 0.0)
            start += n
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
        # flows within float slack of done are done
        for b in self.active:
            b.remaining[b.remaining <= _DONE_BYTES + b.rate * 1e-9] = 0.0  # < 1 ns left
        self._reshare()
