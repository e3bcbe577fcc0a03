"""Acceptance tests of the flow engine on collective programs (issue "Discrete-event engine and
flow-level network with contention"):

- an uncontended collective costs the same in the flow model as in the analytic kernels;
- more bandwidth on a link never slows a program whose calls run one at a time, while
  concurrent calls can be slowed by it (max-min fairness is not monotone; a hand-computed
  case below);
- every byte a program sends is on the links its routes cross, and flows are conserved at
  every node.

Training steps through the engine: tests/fidelity.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.collectives import collective_time_s, expand, valid_algorithms
from clustersim.engine import Program, simulate
from clustersim.engine.comm import CommModel
from clustersim.network import Cluster, build_cluster
from clustersim.network.flows import flow_set
from clustersim.network import Cluster, build_cluster
from clustersim.topology import torus

GiB, MiB, KiB = 2.0**30, 2.0**20, 2.0**10
OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


@pytest.fixture(scope="module")
def clusters():
    return {("dgx-h100", 8): build_cluster("dgx-h100", devices=8),
            ("dgx-h100", 16): build_cluster("dgx-h100", devices=16),
            ("dgx-a100", 64): build_cluster("dgx-a100", devices=64),
            ("tpu-v4-pod", 64): build_cluster("tpu-v4-pod", devices=64)}


def one_call(group, op: str, size_B: float, algorithm: str) -> Program:
    """One simulated rank standing for the whole group, posting one collective."""
    p = Program()
    r = p.add_rank(group[0], stands_for=len(group))
    call = p.collective(op, size_B, [list(group)], participants=(r,), algorithm=algorithm)
    p.post(r, call)
    return p


def group_of(cluster, which: str) -> list:
    d = cluster.devices
    return {"all": list(d), "half": list(d[: len(d) // 2]), "straddle": list(d[3:13]),
            "rail": list(d[::8]), "line": list(d[:4])}[which]


# -- flow = analytic when nothing else runs ---------------------------------------------

UNCONTENDED = [
    # (topology, devices, group, op, size, algorithm)
    ("dgx-h100", 8, "all", "all_reduce", 64 * KiB, "ring/ll"),
    ("dgx-h100", 8, "all", "all_reduce", GiB, "ring/simple"),
    ("dgx-h100", 8, "all", "all_reduce", GiB, "nvls/simple"),
    ("dgx-h100", 8, "all", "all_reduce", MiB, "tree/simple"),
    ("dgx-h100", 8, "half", "all_gather", GiB, "ring/simple"),
    ("dgx-h100", 8, "all", "reduce_scatter", 64 * KiB, "ring/ll"),
    ("dgx-h100", 8, "all", "all_to_all", 256 * MiB, "direct/simple"),
    ("dgx-h100", 8, "all", "all_reduce", 4 * KiB, "auto"),
    ("dgx-h100", 16, "all", "all_reduce", GiB, "ring/simple"),
    ("dgx-h100", 16, "all", "all_reduce", 64 * KiB, "tree/ll"),
    ("dgx-h100", 16, "all", "all_reduce", 256 * MiB, "hierarchical/simple"),
    ("dgx-h100", 16, "straddle", "all_gather", GiB, "ring/simple"),
    ("dgx-h100", 16, "all", "reduce_scatter", 16 * MiB, "direct/simple"),
    ("dgx-h100", 16, "all", "all_to_all", GiB, "direct/simple"),
    ("dgx-h100", 16, "all", "all_to_all", 4 * KiB, "auto"),
    ("dgx-a100", 64, "all", "all_reduce", GiB, "ring/simple"),
    ("dgx-a100", 64, "all", "all_reduce", 32 * KiB, "auto"),
    ("dgx-a100", 64, "rail", "all_reduce", 256 * MiB, "ring/simple"),
    ("dgx-a100", 64, "all", "all_gather", 256 * MiB, "ring/simple"),
    ("dgx-a100", 64, "all", "reduce_scatter", GiB, "auto"),
    ("dgx-a100", 64, "all", "all_to_all", 64 * MiB, "direct/simple"),
    ("tpu-v4-pod", 64, "all", "all_reduce", GiB, "multidim/simple"),
    ("tpu-v4-pod", 64, "all", "all_reduce", GiB, "ring/simple"),
    ("tpu-v4-pod", 64, "all", "all_gather", 8 * KiB, "multidim/ll"),
    ("tpu-v4-pod", 64, "line", "reduce_scatter", 64 * MiB, "ring/simple"),
    ("tpu-v4-pod", 64, "all", "all_to_all", 16 * MiB, "direct/simple"),
    ("tpu-v4-pod", 64, "line", "all_reduce", 4 * KiB, "auto"),
]


@pytest.mark.parametrize("topology,devices,group,op,size,algorithm", UNCONTENDED)
def test_an_uncontended_collective_costs_the_same_in_both_fidelities(
        clusters, topology, devices, group, op, size, algorithm):
    cluster = clusters[(topology, devices)]
    members = group_of(cluster, group)
    analytic = collective_time_s(cluster, members, op, size, algorithm)
    flow = simulate(one_call(members, op, size, algorithm), cluster)
    assert flow.step_time_s == pytest.approx(analytic, rel=0.03)
    if algorithm == "auto":  # both fidelities pick the algorithm the same way
        chosen = flow.algorithms[0]
        assert collective_time_s(cluster, members, op, size, chosen) == \
            pytest.approx(analytic, rel=1e-12)


def test_a_bare_algorithm_name_costs_the_same_in_both_fidelities(clusters):
    cluster = clusters[("dgx-h100", 8)]
    members = cluster.devices
    analytic = collective_time_s(cluster, members, "all_reduce", 64 * KiB, "ring")
    flow = simulate(one_call(members, "all_reduce", 64 * KiB, "ring"), cluster)
    assert flow.step_time_s == pytest.approx(analytic, rel=0.03)


# -- more bandwidth --------------------------------------------------------------------

def raw_comm(cluster, capacity_Bps=None) -> CommModel:
    """Raw link capacities (no calibrated efficiency), everything else as by default."""
    return CommModel(cluster, capacity_Bps=cluster.links.capacity_Bps.copy()
                     if capacity_Bps is None else capacity_Bps)


SMALL = {"dgx-h100": build_cluster("dgx-h100", devices=16),
         "torus-4x4": Cluster.from_graph(torus((4, 4), link="ici-v4"))}


@st.composite
def sequential_programs(draw):
    """A few ranks running compute, sends and collectives (any algorithm valid on the group,
    simple protocol), each op waiting for every op of the previous step: one call at a time."""
    name = draw(st.sampled_from(sorted(SMALL)))
    cluster = SMALL[name]
    n = draw(st.integers(2, 6))
    devices = [cluster.devices[i] for i in draw(st.lists(
        st.integers(0, len(cluster.devices) - 1), min_size=n, max_size=n, unique=True))]
    p = Program()
    ranks = [p.add_rank(d) for d in devices]
    previous: tuple[int, ...] = ()
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["compute", "send", "collective"]))
        if kind == "compute":
            r = draw(st.sampled_from(ranks))
            previous = (p.compute(r, draw(st.floats(1e-6, 1e-3)), deps=previous),)
        elif kind == "send":
            a, b = draw(st.lists(st.sampled_from(ranks), min_size=2, max_size=2, unique=True))
            call = p.transfer([(devices[a], devices[b])], draw(st.floats(1e3, 1e9)), (a, b))
            previous = (p.post(a, call, stream="p2p", deps=previous, kind="send"),
                        p.post(b, call, stream="p2p", deps=previous, kind="recv"))
        else:
            members = draw(st.lists(st.sampled_from(ranks), min_size=2, max_size=n,
                                    unique=True))
            group = [devices[m] for m in members]
            op = draw(st.sampled_from(OPS))
            algorithm = draw(st.sampled_from(valid_algorithms(cluster, group, op)))
            call = p.collective(op, draw(st.floats(1e3, 1e9)), [group], members,
                                algorithm=f"{algorithm}/simple")
            previous = tuple(p.post(m, call, deps=previous) for m in members)
    return name, p


@settings(max_examples=60, deadline=None, derandomize=True)
@given(sequential_programs(), st.integers(0, 10**6), st.floats(1.01, 10.0))
def test_more_bandwidth_never_slows_a_program_of_one_call_at_a_time(case, pick, factor):
    """Each batch then has the network to itself and its flows carry equal bytes (the simple
    protocol's phases), the case tests/network/test_flow_properties.py checks; compute and
    latencies do not depend on capacity, so the step is a sum of non-increasing terms."""
    name, program = case
    cluster = SMALL[name]
    base = simulate(program, cluster, raw_comm(cluster))
    used = np.flatnonzero(base.link_bytes)
    if not len(used):
        return
    capacity = cluster.links.capacity_Bps.copy()
    capacity[used[pick % len(used)]] *= factor
    faster = simulate(program, cluster, raw_comm(cluster, capacity))
    assert faster.step_time_s <= base.step_time_s * (1 + 1e-9)


class ExactTransfers(CommModel):
    """Raw capacities; a send carries exactly its bytes, with no software latency."""

    def __init__(self, cluster, capacity_Bps=None):
        super().__init__(cluster, capacity_Bps=cluster.links.capacity_Bps.copy()
                         if capacity_Bps is None else capacity_Bps)

    def _transfer(self, call):
        flows = flow_set([self.cluster.route(s, d)[:2] for s, d in call.pairs])
        return flows, np.full(len(flows.lengths), call.size_B * call.repeat), 0.0, call.label


def test_more_bandwidth_can_slow_a_program_of_concurrent_calls():
    """Max-min fairness is not monotone in capacity. On a ring of 8 chips (45 GB/s links),
    c0 sends 9 GB to c2 (f1, over c0->c1->c2) and twice 9 GB to c1 (f3, f4); c1 sends 3 GB
    to c2 (f2), after which c2 computes for 1 s.

    As built: c0->c1 carries f1, f3, f4 at 15 GB/s each; on c1->c2 f2 takes the other
    30 GB/s and ends at 0.1 s: the step ends at 1.1 s. With c0->c1 at 135 GB/s, f1 is no
    longer held back there: it and f2 split c1->c2 at 22.5 GB/s each, f2 ends at 0.1333 s,
    and the step at 1.1333 s."""
    cluster = Cluster.from_graph(torus((8,), link="ici-v4"))
    c0, c1, c2 = cluster.devices[:3]
    p = Program()
    r0, r1, r2 = (p.add_rank(d) for d in (c0, c1, c2))
    f1 = p.transfer([(c0, c2)], 9e9, (r0, r2), label="f1")
    f34 = p.transfer([(c0, c1), (c0, c1)], 9e9, (r0, r1), label="f3 f4")
    f2 = p.transfer([(c1, c2)], 3e9, (r1, r2), label="f2")
    for call, (a, b), stream in ((f1, (r0, r2), "a"), (f34, (r0, r1), "b")):
        p.post(a, call, stream=stream)
        p.post(b, call, stream=stream)
    p.post(r1, f2, stream="c")
    received = p.post(r2, f2, stream="c")
    p.compute(r2, 1.0, deps=(received,))
    base = simulate(p, cluster, ExactTransfers(cluster))
    capacity = cluster.links.capacity_Bps.copy()
    capacity[cluster.links.edge_index[(c0, c1)]] *= 3
    boosted = simulate(p, cluster, ExactTransfers(cluster, capacity))
    assert base.step_time_s == pytest.approx(3e9 / 30e9 + 1.0)
    assert boosted.step_time_s == pytest.approx(3e9 / 22.5e9 + 1.0)


# -- bytes are conserved -----------------------------------------------------------------

def expected_edge_bytes(cluster, program, result) -> tuple[dict, dict, dict]:
    """Bytes on every directed edge from the calls' own routes (``Router.edges``), and the
    bytes each node sent and received."""
    on_edge: dict = defaultdict(float)
    sent: dict = defaultdict(float)
    received: dict = defaultdict(float)

    def add(src, dst, nbytes):
        sent[src] += nbytes
        received[dst] += nbytes
        for edge, weight in cluster.router.edges(src, dst):
            on_edge[edge] += nbytes * weight

    for cid, call in program.calls.items():
        if hasattr(call, "pairs"):
            for src, dst in call.pairs:
                add(src, dst, call.size_B * call.repeat)
            continue
        for group in call.groups:
            for phase in expand(cluster, list(group), call.op, call.size_B,
                                result.algorithms[cid]):
                for s, d, b in zip(phase.src, phase.dst, phase.bytes):
                    add(group[s], group[d], b * call.repeat)
    return on_edge, sent, received


def mixed_program(cluster) -> Program:
    """Sends and collectives of several kinds, some concurrent, some repeated."""
    d = cluster.devices
    p = Program()
    ranks = [p.add_rank(x) for x in d[:16]]
    half = d[:8]
    ar = p.collective("all_reduce", 64 * MiB, [half], ranks[:8], repeat=2)
    ag = p.collective("all_gather", 16 * MiB, [d[:16]], ranks, algorithm="ring/simple")
    a2a = p.collective("all_to_all", 8 * MiB, [d[4:12]], ranks[4:12], algorithm="direct/ll")
    for r in ranks[:8]:
        p.post(r, ar, stream="tp")
    for r in ranks:
        p.post(r, ag, stream="dp")
    for r in ranks[4:12]:
        p.post(r, a2a, stream="ep")
    for k, (a, b) in enumerate([(0, 9), (3, 12), (15, 2), (8, 0)]):
        call = p.transfer([(d[a], d[b])], 32 * MiB, (ranks[a], ranks[b]), repeat=1 + k % 2)
        p.post(ranks[a], call, stream=f"send{k}")
        p.post(ranks[b], call, stream=f"recv{k}")
    return p


@pytest.mark.parametrize("topology,devices", [("dgx-h100", 16), ("tpu-v4-pod", 64)])
def test_link_bytes_are_the_flows_bytes_times_their_route_weights(clusters, topology,
                                                                  devices):
    cluster = clusters[(topology, devices)]
    program = mixed_program(cluster)
    result = simulate(program, cluster, ExactTransfers(cluster))
    on_edge, sent, received = expected_edge_bytes(cluster, program, result)
    expected = np.zeros(len(cluster.links))
    for edge, nbytes in on_edge.items():  # parallel bundled edges share one link
        expected[cluster.links.edge_index[edge]] += nbytes
    assert np.allclose(result.link_bytes, expected, rtol=1e-9, atol=1e-3)
    # routes are paths: every node passes on what it receives, except senders and receivers
    balance: dict = defaultdict(float)
    for (u, v), nbytes in on_edge.items():
        balance[u] -= nbytes
        balance[v] += nbytes
    for node in set(balance) | set(sent) | set(received):
        assert balance[node] == pytest.approx(received[node] - sent[node], abs=1e-3)


def test_every_chip_and_optical_switch_conserves_bytes_on_the_simulated_links(clusters):
    # on the torus every directed edge is its own link, so link_bytes can be read per edge
    cluster = clusters[("tpu-v4-pod", 64)]
    program = mixed_program(cluster)
    result = simulate(program, cluster, ExactTransfers(cluster))
    _, sent, received = expected_edge_bytes(cluster, program, result)
    ici = [(u, v) for u, v, t in cluster.graph.edges(data="tech") if t == "ici-v4"]
    assert len({cluster.links.edge_index[e] for e in ici}) == len(ici)
    balance: dict = defaultdict(float)
    for u, v in ici:
        nbytes = result.link_bytes[cluster.links.edge_index[(u, v)]]
        balance[u] -= nbytes
        balance[v] += nbytes
    assert sum(sent.values()) > 0
    for node in cluster.graph.nodes:
        assert balance[node] == pytest.approx(received[node] - sent[node], abs=1e-3)
