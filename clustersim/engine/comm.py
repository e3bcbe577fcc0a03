"""How communication calls become batches of flows on the cluster's links.

A collective call expands (``clustersim.collectives.expand``) into phases over group
positions; every group of the call runs each phase at the same time, so one phase of a call is
one batch of flows. A transfer call is one batch of point-to-point flows. Link capacities are
the calibrated effective capacities, and latencies the calibrated per-step latencies, that the
analytic model uses too, so an uncontended collective costs the same in both fidelities; a
point-to-point message is priced by :func:`p2p_cost` in both.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from clustersim.collectives.algorithms import expand
from clustersim.collectives.cost import effective_capacity_Bps, phase_latency_s
from clustersim.collectives.select import price, select_algorithm
from clustersim.engine.program import CollectiveCall, TransferCall
from clustersim.network.flows import FlowSet, flow_set_csr
from clustersim.network.symmetry import family_class

__all__ = ["CommModel", "BatchSpec", "p2p_cost"]

BatchSpec = tuple[FlowSet, np.ndarray, float, str]


class CommModel:
    """Expands calls into flow batches on one cluster (caching what repeats)."""

    def __init__(self, cluster, capacity_Bps: np.ndarray | None = None,
                 symmetric: bool = True, link_classes: bool | None = None):
        """``capacity_Bps`` defaults to the calibrated effective capacity of every link;
        ``symmetric`` chooses and prices a collective once per class of equivalent group
        families (``simulation.network: symmetric``), else once per family (``exact``);
        ``link_classes`` (default: as ``symmetric``) carries the flows over link classes
        (``RouteTable``: a fat-tree leaf's up- or downlinks as one link of their summed
        capacity, exact for max-min), so the network's arrays extend past the links."""
        self.symmetric = symmetric
        if capacity_Bps is None:
            capacity_Bps = effective_capacity_Bps(cluster)
        self.cluster = cluster
        table = cluster.route_table if (symmetric if link_classes is None
                                        else link_classes) else None
        self.table = table if table is not None and table.ok and table.class_members \
            else None
        self.classes = self.table is not None
        self.capacity_Bps = (self.table.class_capacity(np.asarray(capacity_Bps))
                             if self.classes else capacity_Bps)
        self._algorithms: dict = {}
        self._classes: dict = {}      # a call's groups -> their class (symmetry.family_class)
        self._p2p: dict = {}          # p2p_cost's cache for this cluster
        self._expanded: dict = {}
        self._pair_flows: dict = {}

    def algorithm(self, call: CollectiveCall) -> str:
        """The ``name/protocol`` a call runs: as given when it names a protocol, else the
        fastest for its size and groups (over every algorithm for ``auto``, over the
        protocols of the named algorithm otherwise), exactly as the analytic price picks."""
        if "/" in call.algorithm:
            return call.algorithm
        # one choice per class of equivalent families (every stage's copy of a collective)
        family = self._classes.get(call.groups)
        if family is None:
            family = self._classes[call.groups] = (
                (self.symmetric and family_class(self.cluster, call.groups))
                or (call.groups[0], len(call.groups)))
        key = (call.op, call.size_B, call.algorithm, family)
        found = self._algorithms.get(key)
        if found is None:
            found = str(price(self.cluster, list(call.groups[0]), call.op, [call.size_B],
                              call.algorithm,
                              groups=[list(g) for g in call.groups[1:]],
                              symmetric=self.symmetric)[1][0])
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
        algorithm = self.algorithm(call)
        first = list(call.groups[0])
        out = []
        ranks = self._ranks(call.groups)
        for phase in expand(self.cluster, first, call.op, call.size_B, algorithm):
            # every group's transfers at once, group after group (routing in arrays)
            ptr, links, weights, _ = self.cluster.device_routes(
                ranks[:, phase.src].reshape(-1), ranks[:, phase.dst].reshape(-1),
                self.classes)
            latency = phase_latency_s(self.cluster, first, phase)
            out.append((flow_set_csr(ptr, links, weights), np.tile(phase.bytes, len(ranks)),
                        latency, f"{algorithm} {phase.label}"))
        return out

    def physical(self, per_link: np.ndarray, spread: bool) -> np.ndarray:
        """A per-link statistic of the network's arrays on the cluster's links (link classes
        divided among their links when ``spread``, else repeated on each)."""
        return self.table.physical(per_link, spread) if self.classes else per_link

    def physical_samples(self, samples: list) -> list:
        """Trace samples ``(time, links, utilisation)`` on the cluster's links."""
        if not self.classes:
            return samples
        first, members = self.table.first_class, self.table.class_members
        out = []
        for t, links, util in samples:
            virtual = links >= first
            if virtual.any():
                extra = [members[x - first] for x in links[virtual].tolist()]
                util = np.concatenate([util[~virtual]] + [np.full(len(m), u) for m, u in
                                                          zip(extra, util[virtual])])
                links = np.concatenate([links[~virtual]] + extra)
            out.append((t, links, util))
        return out

    def _ranks(self, groups) -> np.ndarray:
        """``[group, position]`` device ranks of a call's groups (all of one size)."""
        rank_of = self.cluster.rank_of
        if len({len(g) for g in groups}) > 1:
            raise ValueError("a collective call's groups must all have the same size")
        return np.array([[rank_of[m] for m in g] for g in groups], dtype=np.int64)

    def _transfer(self, call: TransferCall) -> BatchSpec:
        flows = self._pair_flows.get(call.pairs)
        if flows is None:  # pipeline sends repeat the same pairs every micro-batch
            ptr, links, weights, _ = self.cluster.routes([a for a, _ in call.pairs],
                                                          [b for _, b in call.pairs],
                                                          self.classes)
            flows = flow_set_csr(ptr, links, weights)
            self._pair_flows[call.pairs] = flows
        wire_B, latency = p2p_cost(self.cluster, *call.pairs[0], call.size_B, self._p2p)
        nbytes = np.full(len(flows.lengths), wire_B * call.repeat)
        return flows, nbytes, latency * call.repeat, call.label


def p2p_cost(cluster, src, dst, size_B: float, cache: dict | None = None
             ) -> tuple[float, float]:
    """``(wire bytes, latency_s)`` of one point-to-point message of ``size_B`` bytes from
    ``src`` to ``dst``: between two devices, the send half of the calibrated ``send_recv``
    collective (protocol, efficiency and per-step latency as nccl-tests measured them); to or
    from a memory endpoint (offload), the raw bytes and the route's latency.

    A message's latency depends on its route (a pair under one leaf switch pays fewer hops
    than one across the spine), so ``cache`` (a dict the caller keeps for one cluster) holds
    one price per pair and size: pipeline sends repeat every micro-batch between the same
    pairs. (Keyed by fabric alone, a cross-spine pair took the same-leaf price of whichever
    pair was priced first, so results depended on what ran before.)

    >>> from clustersim.network import build_cluster
    >>> cluster = build_cluster("dgx-h100", devices=16)
    >>> wire_B, latency_s = p2p_cost(cluster, cluster.devices[0], cluster.devices[8], 2**20)
    >>> wire_B, round(latency_s * 1e6, 2)   # node 0 to node 1, over the NDR fabric (LL128)
    (1139756.5217391304, 18.83)
    """
    G = cluster.graph
    if src not in G or dst not in G:
        missing = src if src not in G else dst
        raise ValueError(f"p2p_cost: {missing!r} is not a node of the cluster")
    key = (src, dst, size_B)
    found = None if cache is None else cache.get(key)
    if found is None:
        found = _p2p_cost(cluster, src, dst, size_B)
        if cache is not None:
            cache[key] = found
    return found


def _p2p_cost(cluster, src, dst, size_B: float) -> tuple[float, float]:
    """The price :func:`p2p_cost` caches."""
    kinds = {cluster.graph.nodes[n]["kind"] for n in (src, dst)}
    if kinds <= {"accelerator", "die"}:
        algorithm = select_algorithm(cluster, [src, dst], "send_recv", size_B)
        [phase] = expand(cluster, [src, dst], "send_recv", size_B, algorithm)
        # nccl-tests' send_recv runs both directions; a send is the 0 -> 1 half
        return (float(phase.bytes[phase.src == 0].sum()),
                phase_latency_s(cluster, [src, dst], phase))
    return (size_B, cluster.route(src, dst)[2])
