"""Collectives at scale against first principles: a 1 GiB all-reduce on DGX H100 nodes keeps
its bus bandwidth from 16 to 4,096 GPUs (the bytes per NIC do not grow with the node count),
never beats the NIC-bound lower bound on the time, and a ring's latency is the sum of the hops
its ranks really take: 2(N-1) network steps and 2(p-N) NVLink steps for N nodes of p ranks.
"""

from __future__ import annotations

import pytest

from clustersim.collectives import collective_time_s, default_calibration, expand
from clustersim.collectives.cost import phase_latency_s
from clustersim.hardware.catalog import get_link
from clustersim.network import build_cluster

GiB = 2.0**30


def busbw_GBps(devices: int, algorithm: str = "auto") -> float:
    c = build_cluster("dgx-h100", devices)
    t = collective_time_s(c, c.devices, "all_reduce", GiB, algorithm)
    return 2 * (devices - 1) / devices * GiB / t / 1e9


@pytest.fixture(scope="module")
def figures():
    return {n: busbw_GBps(n) for n in (16, 1024, 4096)}


def test_1024_gpus_keep_the_bus_bandwidth(figures):
    assert figures[1024] >= 300
    assert figures[1024] >= 0.85 * figures[16]


def test_4096_within_10_percent_of_1024(figures):
    assert abs(figures[4096] / figures[1024] - 1) <= 0.10


@pytest.mark.parametrize("devices", [1024, 4096])
def test_never_beats_the_nic_bound(figures, devices):
    # every node must send at least 2(N-1)/N of the buffer over its 8 NDR NICs (raw rate)
    nodes = devices // 8
    nic_Bps = 8 * get_link("ib-ndr").bw_Bps
    bound = nic_Bps * (devices - 1) / devices * nodes / (nodes - 1) / 1e9
    assert figures[devices] <= bound


def test_ring_latency_counts_network_and_nvlink_steps():
    c = build_cluster("dgx-h100", 64)
    cal = default_calibration()
    [ph] = expand(c, c.devices, "all_reduce", 1.0, "ring/simple")
    p, nodes = 64, 8
    nvl = cal.tech("nvlink4").hop_simple_s + c.route(c.devices[0], c.devices[1])[2]
    net = cal.categories["scale-out"].hop_simple_s + c.route(c.devices[0], c.devices[8])[2]
    launch = cal.launch("simple")   # the host-side launch is counted for nccl-tests only
    # 2(p-1) steps; per channel a ring crosses N node boundaries and p-N NVLink hops
    expected = launch + 2 * (p - 1) * (nodes * net + (p - nodes) * nvl) / p
    assert phase_latency_s(c, c.devices, ph) == pytest.approx(expected, rel=1e-9)
    # and it grows with the network steps, not with ranks x one constant
    assert nvl < net
