"""The largest presets build as their papers and reference architectures describe them.

Every expected number is derived here from first principles (links per GPU, fat-tree levels,
torus cuts), never read back from the builder's output:

- a 16,384-GPU DGX H100 cluster (2,048 nodes): 18 NVLink4 per GPU (DGX H100 user guide), one
  400 Gb/s NDR port per GPU on a non-blocking rail-optimised fat-tree of 64-port Quantum-2
  switches, which needs three levels beyond 64 x 32 = 2,048 ports (Al-Fares et al. 2008);
- the 4,096-chip TPU v4 pod: a 16x16x16 torus of 4x4x4 cubes whose face links pass through 48
  optical circuit switches (Jouppi et al., ISCA 2023).

Building the 16,384-GPU graph takes a few seconds: those tests are marked ``slow``.
"""

from __future__ import annotations

import math

import pytest

from clustersim.hardware import get_link, get_switch
from clustersim.network import build_cluster
from clustersim.network.metrics import bisection_bandwidth, links_by_technology

GPUS = 16384
GPUS_PER_NODE = 8
NVLINK_PER_GPU = 18                    # DGX H100 user guide
CHIPS = 4096
TORUS = (16, 16, 16)
CUBE = (4, 4, 4)


def physical_links(cluster) -> dict[str, int]:
    """Physical links per technology (both directions of a link counted once)."""
    return {row["technology"]: row["links"] for row in links_by_technology(cluster)}


def count_between(cluster, tech: str, kind_a: str, kind_b: str) -> int:
    """Physical links of ``tech`` joining a node of ``kind_a`` to one of ``kind_b`` (each
    physical link is two directed edges, one each way)."""
    G = cluster.graph
    directed = 0
    for u, v, d in G.edges(data=True):
        if d["tech"] == tech and {G.nodes[u]["kind"], G.nodes[v]["kind"]} == {kind_a, kind_b}:
            directed += d["count"]
    return directed // 2


@pytest.fixture(scope="module")
def dgx():
    return build_cluster("dgx-h100", devices=GPUS)


@pytest.fixture(scope="module")
def pod():
    return build_cluster("tpu-v4-pod", devices=CHIPS)


# -- 16,384 H100 -------------------------------------------------------------------------

@pytest.mark.slow
def test_dgx_h100_cluster_has_every_gpu_node_and_nic(dgx):
    kinds = {}
    for _, kind in dgx.graph.nodes(data="kind"):
        kinds[kind] = kinds.get(kind, 0) + 1
    nodes = GPUS // GPUS_PER_NODE
    assert len(dgx.devices) == GPUS and kinds["accelerator"] == GPUS
    assert kinds["nic"] == GPUS                      # one ConnectX-7 per GPU
    assert kinds["host"] == nodes
    assert dgx.graph.graph["nodes"] == nodes


@pytest.mark.slow
def test_dgx_h100_nvlink4_links_are_18_per_gpu(dgx):
    assert physical_links(dgx)["nvlink4"] == NVLINK_PER_GPU * GPUS
    assert count_between(dgx, "nvlink4", "accelerator", "switch") == NVLINK_PER_GPU * GPUS


@pytest.mark.slow
def test_dgx_h100_ndr_ports_one_per_gpu_and_three_non_blocking_levels(dgx):
    radix = get_switch("quantum2-ndr").ports
    # two levels hold radix * radix/2 ports; more need a third
    assert GPUS > radix * radix // 2
    levels = 3
    assert dgx.graph.graph["fabrics"]["scaleout"].levels == levels
    # the NIC level has one port per GPU; a non-blocking tree carries as many links up from
    # every level as enter it from below
    assert count_between(dgx, "ib-ndr", "nic", "switch") == GPUS
    assert physical_links(dgx)["ib-ndr"] == levels * GPUS
    # leaves: half their ports down, so GPUS / (radix / 2) of them
    leaves = [n for n, d in dgx.graph.nodes(data=True) if d.get("tier") == "leaf"]
    assert len(leaves) == GPUS // (radix // 2)


@pytest.mark.slow
def test_dgx_h100_pcie_joins_every_gpu_to_its_host_and_its_nic(dgx):
    assert count_between(dgx, "pcie5", "accelerator", "host") == GPUS
    assert count_between(dgx, "pcie5", "accelerator", "nic") == GPUS
    assert physical_links(dgx)["pcie5"] == 2 * GPUS


@pytest.mark.slow
def test_dgx_h100_bisection_is_half_the_gpus_at_one_ndr_port(dgx):
    # non-blocking: any half of the GPUs reaches the other half at full injection rate
    assert bisection_bandwidth(dgx) == pytest.approx(GPUS / 2 * get_link("ib-ndr").bw_Bps,
                                                     rel=1e-9)


# -- 4,096-chip TPU v4 pod -----------------------------------------------------------------

def test_tpu_v4_pod_is_a_16_cubed_torus_of_4096_chips(pod):
    assert len(pod.devices) == CHIPS == math.prod(TORUS)
    assert tuple(pod.graph.graph["fabrics"]["torus:0"].dims) == TORUS


def test_tpu_v4_pod_ici_links_with_optical_switches(pod):
    torus_links = len(TORUS) * CHIPS                  # 6 neighbours per chip, 2 chips a link
    # a ring of 16 crosses a cube face every 4 chips: a quarter of the links are optical,
    # and each is two segments (chip -> OCS -> chip)
    optical = sum(CHIPS // c for c in CUBE)
    assert optical == 64 * 6 * 16 // 2                # 64 cubes, 6 faces of 16 links, 2 ends
    assert count_between(pod, "ici-v4", "accelerator", "optical_switch") == 2 * optical
    assert count_between(pod, "ici-v4", "accelerator", "accelerator") == torus_links - optical
    assert physical_links(pod)["ici-v4"] == torus_links + optical
    ocs = [n for n, k in pod.graph.nodes(data="kind") if k == "optical_switch"]
    # one OCS per dimension and face position (Jouppi et al. 2023: 48)
    assert len(ocs) == len(TORUS) * CUBE[0] * CUBE[1] == 48
    for chip in pod.devices[:64]:
        links = [d["count"] for _, _, d in pod.graph.out_edges(chip, data=True)
                 if d["tech"] == "ici-v4"]
        assert sum(links) == 6


def test_tpu_v4_pod_bisection_is_twice_the_cross_section(pod):
    # cutting across the longest dimension L severs N / L rings, each twice (wrap-around)
    expected = 2 * CHIPS / max(TORUS) * get_link("ici-v4").bw_Bps
    assert bisection_bandwidth(pod) == pytest.approx(expected, rel=1e-9)
