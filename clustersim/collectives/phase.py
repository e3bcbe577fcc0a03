"""A phase: one step of a collective as its algorithm lays it out.

A collective on a group is a list of phases run one after another. A phase is a set of
concurrent transfers between group positions plus the number of sequential algorithm steps it
contains (each pays the per-step latency) and the bytes each rank reduces in it. A pipelined
ring all-reduce is one phase: every rank sends ``2(p-1)/p * S`` to its successor over
``2(p-1)`` steps.

The algorithm modules (ring, tree, rhd, direct, hierarchical, innetwork) build *payload*
phases with :func:`make_phase`; :func:`clustersim.collectives.algorithms.expand` turns them
into wire bytes and records the ``algorithm`` and ``protocol`` they run with, which pricing
reads (the ``label`` is for people and traces only).

>>> ph = make_phase([(0, 1, 8.0), (1, 0, 8.0), (1, 1, 8.0)], steps=1, label="swap")
>>> ph.src.tolist(), ph.dst.tolist(), ph.steps, ph.protocol
([0, 1], [1, 0], 1, 'simple')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Phase", "make_phase"]


@dataclass(frozen=True)
class Phase:
    src: np.ndarray      # int64, positions in the group (0..p-1) of each transfer's sender
    dst: np.ndarray      # int64, receiver positions
    bytes: np.ndarray    # float64, bytes of each transfer
    steps: int           # sequential algorithm steps inside (each pays the per-step latency)
    reduce_bytes: float = 0.0   # bytes each rank reduces in this phase (reduction compute cost)
    label: str = ""             # human-readable: "ring/simple: all_reduce"
    algorithm: str = ""         # the algorithm that laid it out ("" for a payload phase)
    protocol: str = "simple"    # the protocol it runs with: its per-step latency and wire bytes
    launch_s: float = 0.0       # fixed latency paid once before the steps (kernel launch and
                                # protocol set-up, on a collective's first phase only)


def make_phase(pairs, steps: int, reduce_bytes: float = 0.0, label: str = "") -> Phase:
    """A phase from ``[(src, dst, bytes), ...]``; zero-byte and self transfers are dropped."""
    kept = [(s, d, b) for s, d, b in pairs if s != d and b > 0]
    src = np.fromiter((s for s, _, _ in kept), dtype=np.int64, count=len(kept))
    dst = np.fromiter((d for _, d, _ in kept), dtype=np.int64, count=len(kept))
    nbytes = np.fromiter((b for _, _, b in kept), dtype=np.float64, count=len(kept))
    return Phase(src, dst, nbytes, int(steps), float(reduce_bytes), label)
