"""How communication calls become batches of flows on the cluster's links.

A collective call expands (``clustersim.collectives.expand``) into phases over group
positions; every group of the call runs each phase at the same time, so one phase of a call is
one batch of flows. A transfer call is one batch of point-to-point flows. Link capacities are
the calibrated effective capacities, and latencies the calibrated per-step latencies, that the
analytic model uses too, so an uncontended collective costs the same in both fidelities.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from clustersim.engine.program import CollectiveCall, TransferCall
from clustersim.network.flows import FlowSet, flow_set

__all__ = ["CommModel", "BatchSpec"]

BatchSpec = tuple[FlowSet, np.ndarray, float, str]


class CommModel:
    """Expands calls into flow batches on one cluster (caching what repeats)."""

    def __init__(self, cluster, capacity_Bps: np.ndarray | None = None):
        """``capacity_Bps`` defaults to the calibrated effective capacity of every link."""
        if capacity_Bps is None:
            from clustersim.collectives import effective_capacity_Bps

            capacity_Bps = effective_capacity_Bps(cluster)
        self.cluster = cluster
        self.capacity_Bps = capacity_Bps
        self._algorithms: dict = {}
        self._p2p: dict = {}
        self._expanded: dict = {}
        self._pair_flows: dict = {}

    def algorithm(self, call: CollectiveCall) -> str:
        """The algorithm a call runs: as given, or the fastest for its size and groups."""
        if call.algorithm != "auto":
            return call.algorithm
        key = (call.op, call.size_B, call.groups[0], len(call.groups))
        found = self._algorithms.get(key)
        if found is None:
            from clustersim.collectives import select_algorithm

            found = select_algorithm(self.cluster, list(call.groups[0]), call.op, call.size_B,
                                     groups=[list(g) for g in call.groups[1:]])
            self._algorithms[key] = found
        return found

    def batches(self, call: CollectiveCall | TransferCall) -> Iterator[BatchSpec]:
        """``(routes, bytes, latency_s, label)`` for each sequential batch of the call."""
        if isinstance(call, TransferCall):
            yield self._transfer(call)
            return
        # A step repeats the same collective on the same groups many times (every micro-batch):
        # expand and route it once.
        key = (call.op, call.size_B, call.algorithm, call.groups)
        found = self._expanded.get(key)
        if found is None:
            found = self._expand(call)
            self._expanded[key] = found
        for routes, nbytes, latency, label in found:
            yield routes, nbytes * call.repeat, latency * call.repeat, f"{call.label} {label}"

    def _expand(self, call: CollectiveCall) -> list[BatchSpec]:
        from clustersim.collectives import expand, phase_latency_s

        algorithm = self.algorithm(call)
        first = list(call.groups[0])
        out = []
        for phase in expand(self.cluster, first, call.op, call.size_B, algorithm):
            routes, nbytes = [], []
            for group in call.groups:
                for s, d, b in zip(phase.src, phase.dst, phase.bytes):
                    links, weights, _ = self.cluster.route(group[s], group[d])
                    routes.append((links, weights))
                    nbytes.append(b)
            latency = phase_latency_s(self.cluster, first, phase)
            out.append((flow_set(routes), np.asarray(nbytes), latency,
                        f"{algorithm} {phase.label}"))
        return out

    def _p2p_cost(self, src, dst, size_B: float) -> tuple[float, float]:
        """``(wire bytes, latency_s)`` of one point-to-point message: the send_recv
        collective of two devices (protocol, efficiency and per-step latency as calibrated),
        or raw bytes and route latency to a memory endpoint (offload)."""
        key = (self.cluster.router.shared_fabric(src, dst), size_B,
               self.cluster.graph.nodes[dst]["kind"])
        found = self._p2p.get(key)
        if found is None:
            from clustersim.collectives import expand, phase_latency_s, select_algorithm

            kinds = {self.cluster.graph.nodes[n]["kind"] for n in (src, dst)}
            if kinds <= {"accelerator", "die"}:
                algorithm = select_algorithm(self.cluster, [src, dst], "send_recv", size_B)
                [phase] = expand(self.cluster, [src, dst], "send_recv", size_B, algorithm)
                # nccl-tests' send_recv runs both directions; a send is the 0 -> 1 half
                found = (float(phase.bytes[phase.src == 0].sum()),
                         phase_latency_s(self.cluster, [src, dst], phase))
            else:
                found = (size_B, self.cluster.route(src, dst)[2])
            self._p2p[key] = found
        return found

    def _transfer(self, call: TransferCall) -> BatchSpec:
        flows = self._pair_flows.get(call.pairs)
        if flows is None:  # pipeline sends repeat the same pairs every micro-batch
            flows = flow_set([self.cluster.route(src, dst)[:2] for src, dst in call.pairs])
            self._pair_flows[call.pairs] = flows
        wire_B, latency = self._p2p_cost(*call.pairs[0], call.size_B)
        nbytes = np.full(len(flows.lengths), wire_B * call.repeat)
        return flows, nbytes, latency * call.repeat, call.label
