"""Every algorithm moves exactly the data its textbook version moves (payload, simple
protocol): bytes each rank receives over all phases."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.collectives import expand
from clustersim.network import Cluster, build_cluster
from clustersim.topology import torus

S = 1.0e6


def received(phases, p):
    out = np.zeros(p)
    for ph in phases:
        np.add.at(out, ph.dst, ph.bytes)
    return out


@pytest.fixture(scope="module")
def node():
    return build_cluster("dgx-a100", 8)


@pytest.fixture(scope="module")
def two_nodes():
    return build_cluster("dgx-a100", 16)


@pytest.mark.parametrize("algo,per_rank", [
    ("ring", 2 * 7 / 8 * S), ("rhd", 2 * 7 / 8 * S), ("direct", 7 * S)])
def test_all_reduce_receive_volume(node, algo, per_rank):
    got = received(expand(node, node.devices, "all_reduce", S, algo), 8)
    assert np.allclose(got, per_rank)


@pytest.mark.parametrize("algo", ["ring", "rhd", "direct"])
@pytest.mark.parametrize("op", ["all_gather", "reduce_scatter"])
def test_gather_scatter_receive_volume(node, algo, op):
    got = received(expand(node, node.devices, op, S, algo), 8)
    assert np.allclose(got, 7 / 8 * S)


def test_tree_carries_each_half_up_and_down_every_edge(node):
    # two trees of p-1 edges, S/2 each way on each edge
    [ph] = expand(node, node.devices, "all_reduce", S, "tree")
    assert ph.bytes.sum() == pytest.approx(2 * 7 * 2 * S / 2)
    # every rank except a tree's root receives that tree's broadcast half
    assert np.all(received([ph], 8) >= S / 2)


def test_rhd_fold_moves_the_extra_ranks_whole_vectors(node):
    phases = expand(node, node.devices[:6], "all_reduce", S, "rhd")
    got = received(phases, 6)
    core = 2 * 3 / 4 * S
    assert np.allclose(got[[1, 3]], S)           # the folded ranks get the result back
    assert np.allclose(got[[0, 2]], core + S)    # their partners also receive their vectors
    assert np.allclose(got[[4, 5]], core)


def test_hierarchical_volume(two_nodes):
    phases = expand(two_nodes, two_nodes.devices, "all_reduce", S, "hierarchical")
    L, N = 8, 2
    per_rank = 2 * (L - 1) / L * S + 2 * (N - 1) / N * S / L
    assert np.allclose(received(phases, 16), per_rank)


def test_multi_node_ring_volume(two_nodes):
    got = received(expand(two_nodes, two_nodes.devices, "all_reduce", S, "ring"), 16)
    assert np.allclose(got, 2 * 15 / 16 * S)


def test_multidim_volume():
    c = Cluster.from_graph(torus((4, 4)))
    phases = expand(c, c.devices, "all_reduce", S, "multidim")
    assert np.allclose(received(phases, 16), 2 * 15 / 16 * S)
    ag = expand(c, c.devices, "all_gather", S, "multidim")
    assert np.allclose(received(ag, 16), 15 / 16 * S)


def test_nvls_sends_and_receives_the_buffer():
    c = build_cluster("dgx-h100", 8)
    [ph] = expand(c, c.devices, "all_reduce", S, "nvls")
    # wire bytes = payload x efficiency(nvlink4) / efficiency(nvls)
    from clustersim.collectives import default_calibration
    cal = default_calibration()
    factor = cal.tech("nvlink4").efficiency / cal.in_network["nvls"]
    assert np.allclose(received([ph], 8), S * factor)


def test_skewed_all_to_all_keeps_totals(node):
    [ph] = expand(node, node.devices, "all_to_all", S, "direct", skew=4.0)
    sent = np.zeros(8)
    np.add.at(sent, ph.src, ph.bytes)
    # each rank keeps its own share locally: what leaves plus the diagonal is S
    from clustersim.collectives import all_to_all_matrix
    m = all_to_all_matrix(8, S, 4.0)
    assert np.allclose(sent + np.diag(m), S)
