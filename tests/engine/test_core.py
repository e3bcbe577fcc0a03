"""The SimPy engine on hand-checkable programs: timings, overlap, deadlock, symmetry."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.engine import Deadlock, Program, simulate
from clustersim.engine.comm import CommModel
from clustersim.hardware import get_link
from clustersim.network import build_cluster


class RawComm(CommModel):
    """Raw link capacities and no software latency: times are bytes / bandwidth."""

    def __init__(self, cluster):
        super().__init__(cluster, capacity_Bps=cluster.links.capacity_Bps.copy())

    def _transfer(self, call):
        routes = [self.cluster.route(s, d)[:2] for s, d in call.pairs]
        return routes, np.full(len(routes), call.size_B * call.repeat), 0.0, call.label


@pytest.fixture(scope="module")
def dgx():
    return build_cluster("dgx-h100", devices=16)


def test_compute_streams_overlap_and_dependencies_serialise(dgx):
    p = Program()
    r = p.add_rank(dgx.devices[0])
    a = p.compute(r, 1.0)
    p.compute(r, 2.0, stream="other")           # overlaps with a
    p.compute(r, 0.5, deps=(a,), stream="third")  # waits for a
    res = simulate(p, dgx, RawComm(dgx))
    assert res.step_time_s == pytest.approx(2.0)
    assert res.op_start_s[2] == pytest.approx(1.0)


def test_send_waits_for_its_receive_and_takes_bytes_over_bandwidth(dgx):
    # GPU 0 of node 0 -> GPU 0 of node 1: one NDR NIC each way, 50 GB/s
    src, dst = dgx.devices[0], dgx.devices[8]
    p = Program()
    a, b = p.add_rank(src), p.add_rank(dst)
    late = p.compute(b, 1e-3)
    call = p.transfer([(src, dst)], 50e6, participants=(a, b), label="act")
    p.post(a, call, kind="send")
    p.post(b, call, kind="recv", deps=(late,))
    res = simulate(p, dgx, RawComm(dgx))
    # the slowest link on the way is the NDR port (PCIe 5 x16 to the NIC is faster)
    bottleneck = min(get_link("ib-ndr").bw_Bps, get_link("pcie5").bw_Bps)
    assert res.step_time_s == pytest.approx(1e-3 + 50e6 / bottleneck)


def test_an_unmatched_send_is_a_deadlock_naming_the_ranks(dgx):
    p = Program()
    a, b = p.add_rank(dgx.devices[0], label="stage 0"), p.add_rank(dgx.devices[8])
    call = p.transfer([(dgx.devices[0], dgx.devices[8])], 1e6, participants=(a, b),
                      label="send activations")
    p.post(a, call, kind="send")
    p.compute(b, 1e-3)  # rank 1 never posts its receive
    with pytest.raises(Deadlock) as err:
        simulate(p, dgx, RawComm(dgx))
    text = str(err.value)
    assert "rank 0 (stage 0)" in text and "[1]" in text and "send activations" in text


def test_two_sends_on_one_nic_share_it(dgx):
    # GPUs 0 and 1 of node 0 both send to node 1 over NIC 0 and NIC 1: independent rails,
    # so each takes bytes / 50 GB/s; two sends from GPU 0 share its NIC and take twice as long.
    p = Program()
    r = p.add_rank(dgx.devices[0])
    q = p.add_rank(dgx.devices[8])
    for k in range(2):
        call = p.transfer([(dgx.devices[0], dgx.devices[8])], 50e6, participants=(r, q))
        p.post(r, call, stream=f"s{k}")
        p.post(q, call, stream=f"s{k}")
    res = simulate(p, dgx, RawComm(dgx))
    assert res.step_time_s == pytest.approx(2 * 50e6 / 50e9)


def pipeline_program(cluster, stages: int, width: int, representative: bool,
                     microbatches: int = 4) -> Program:
    """`stages` pipeline stages of `width` data-parallel ranks each, sending activations
    forward after every compute: symmetric across the width."""
    p = Program()
    devices = cluster.devices
    dev = lambda s, w: devices[s * width + w]  # noqa: E731
    if representative:
        ranks = [[p.add_rank(dev(s, 0), stands_for=width)] * width for s in range(stages)]
    else:
        ranks = [[p.add_rank(dev(s, w)) for w in range(width)] for s in range(stages)]
    last = {}
    for m in range(microbatches):
        for s in range(stages):
            members = range(1) if representative else range(width)
            for w in members:
                deps = (last[(s, w, "recv", m)],) if (s, w, "recv", m) in last else ()
                last[(s, w, m)] = p.compute(ranks[s][w], 1e-4 * (1 + s), deps=deps)
            if s + 1 < stages:
                pairs_sets = [[(dev(s, w), dev(s + 1, w)) for w in range(width)]] \
                    if representative else [[(dev(s, w), dev(s + 1, w))] for w in range(width)]
                for i, pairs in enumerate(pairs_sets):
                    sender, receiver = ranks[s][i], ranks[s + 1][i]
                    call = p.transfer(pairs, 20e6, participants=(sender, receiver))
                    p.post(sender, call, stream="send", deps=(last[(s, i, m)],))
                    last[(s + 1, i, "recv", m)] = p.post(receiver, call, stream="compute")
    return p


@pytest.mark.parametrize("stages,width", [(2, 8), (4, 16), (8, 8)])
def test_representative_and_all_ranks_agree_on_symmetric_programs(stages, width):
    cluster = build_cluster("dgx-h100", devices=stages * width)
    rep = simulate(pipeline_program(cluster, stages, width, True), cluster, RawComm(cluster))
    full = simulate(pipeline_program(cluster, stages, width, False), cluster, RawComm(cluster))
    assert rep.step_time_s == pytest.approx(full.step_time_s, rel=0.01)
    assert rep.link_bytes.sum() == pytest.approx(full.link_bytes.sum())


def test_a_shared_p2p_cache_prices_each_route_as_its_own():
    """A pair across the spine pays more hops than one under a leaf: a price cache shared by
    every call of a cluster must not hand one pair's latency to the other (issue 17: results
    depended on what was priced first)."""
    from clustersim.engine.comm import p2p_cost  # noqa: local, beside its one use
    from clustersim.network import build_cluster  # noqa: as above
    cluster = build_cluster("dgx-h100", devices=1024)
    near, far = cluster.devices[8], cluster.devices[1000]
    alone = [p2p_cost(cluster, cluster.devices[0], d, 2**20) for d in (near, far)]
    assert alone[1][1] > alone[0][1]
    cache: dict = {}
    for order in ((far, near), (near, far)):
        got = {d: p2p_cost(cluster, cluster.devices[0], d, 2**20, cache) for d in order}
        assert [got[near], got[far]] == alone
