"""Link energy from first principles: a flow of B bytes over a route costs
``B x 8 x sum(weight x J/bit)`` over the route's links, whatever the technology.

The expectation is built in the test from ``cluster.route`` and the link table, then compared
with what the engine recorded (``SimResult.link_bytes``) and with ``step_energy``.
"""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.engine import Program, simulate
from clustersim.network import build_cluster
from clustersim.result import StepOutcome, step_energy

GIB = 2**30


@pytest.fixture(scope="module")
def dgx():
    """Two DGX H100 nodes: NVLink4 inside a node, PCIe5 to the NIC, NDR InfiniBand between."""
    return build_cluster("dgx-h100", devices=16)


def _route_bytes(cluster, src, dst, nbytes: float) -> np.ndarray:
    """Bytes every link carries when ``nbytes`` flow from ``src`` to ``dst``."""
    out = np.zeros(len(cluster.links))
    links, weights, _ = cluster.route(src, dst)
    np.add.at(out, links, nbytes * weights)
    return out


def _energy_by_tech(cluster, link_bytes: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for i in np.nonzero(link_bytes)[0]:
        tech = cluster.links.techs[cluster.links.tech_id[i]]
        out[tech] = out.get(tech, 0.0) + link_bytes[i] * 8 * cluster.links.energy_J_per_bit[i]
    return out


def _network_columns(cluster, link_bytes, step_s: float) -> dict[str, float]:
    e = step_energy(cluster, StepOutcome(step_s, 0.0, 0.0, 0.0, step_s, 0.0, 0.0, link_bytes),
                    "bf16")
    return {k[len("energy_link_"):-2]: v for k, v in e.items()
            if k.startswith("energy_link_")} | {"network": e["energy_network_j"]}


def _transfer(cluster, src, dst, size_B: float):
    p = Program()
    a, b = p.add_rank(src), p.add_rank(dst)
    call = p.transfer([(src, dst)], size_B, participants=(a, b))
    p.post(a, call, stream="p2p", kind="send")
    p.post(b, call, stream="p2p", kind="recv")
    return simulate(p, cluster)


@pytest.mark.parametrize("pair", [(0, 1), (0, 9)], ids=["nvlink-in-node", "ib-across-nodes"])
def test_step_energy_prices_every_recorded_byte_at_its_links_j_per_bit(dgx, pair):
    """Whatever bytes the engine put on the links, the energy is bytes x 8 x J/bit of each
    link, summed per technology, and the technologies add up to the network total."""
    src, dst = dgx.devices[pair[0]], dgx.devices[pair[1]]
    res = _transfer(dgx, src, dst, GIB)
    got = _network_columns(dgx, res.link_bytes, res.step_time_s)
    want = _energy_by_tech(dgx, res.link_bytes)
    assert set(got) - {"network"} == set(want)
    for tech, joules in want.items():
        assert got[tech] == pytest.approx(joules, rel=1e-12)
    assert got["network"] == pytest.approx(sum(want.values()), rel=1e-12)
    # the bytes sit exactly on the route's links, in the route's proportions
    links, weights, _ = dgx.route(src, dst)
    assert set(np.nonzero(res.link_bytes)[0]) == set(links.tolist())
    ratio = res.link_bytes[links] / weights
    assert np.allclose(ratio, ratio[0])


@pytest.mark.parametrize("pair", [(0, 1), (0, 9)], ids=["nvlink-in-node", "ib-across-nodes"])
def test_a_transfer_puts_its_payload_once_on_every_link_of_its_route(dgx, pair):
    """A 1 GiB send (bulk protocol: no wire overhead) costs 1 GiB x 8 x sum of J/bit over its
    route: PCIe5 + 2 x NDR + PCIe5 across nodes, NVLink4 up and down inside a node."""
    src, dst = dgx.devices[pair[0]], dgx.devices[pair[1]]
    res = _transfer(dgx, src, dst, GIB)
    want = _route_bytes(dgx, src, dst, GIB)
    np.testing.assert_allclose(res.link_bytes, want, rtol=1e-12)
    got = _network_columns(dgx, res.link_bytes, res.step_time_s)
    for tech, joules in _energy_by_tech(dgx, want).items():
        assert got[tech] == pytest.approx(joules, rel=1e-12)


def test_cross_node_transfer_energy_by_hand(dgx):
    """The route's technologies as the dgx-h100 preset wires them, priced from links.yaml:
    GPU -> NIC over PCIe5 (10 pJ/bit), NIC -> leaf -> NIC over NDR (48 pJ/bit), NIC -> GPU."""
    links, weights, _ = dgx.route(dgx.devices[0], dgx.devices[9])
    techs = [dgx.links.techs[dgx.links.tech_id[i]] for i in links]
    assert sorted(techs) == ["ib-ndr", "ib-ndr", "pcie5", "pcie5"]
    assert weights.tolist() == [1.0] * 4
    per_byte = 8 * (2 * 10e-12 + 2 * 48e-12)
    assert _energy_by_tech(dgx, _route_bytes(dgx, dgx.devices[0], dgx.devices[9], GIB)) == \
        pytest.approx({"pcie5": GIB * 8 * 2 * 10e-12, "ib-ndr": GIB * 8 * 2 * 48e-12})
    assert per_byte * GIB == pytest.approx(0.996, rel=1e-3)   # ~1 J per GiB across nodes


def test_ring_all_reduce_energy_is_its_ring_hops(dgx):
    """A ring all-reduce of S on p ranks sends 2(p-1)/p x S from every rank to its successor
    (Patarasuk & Yuan 2009). Across nodes NCCL runs one ring per local rank, each carrying
    S/L, channel k visiting each node's ranks rotated by k so that its inter-node hops use
    different rails (collectives/ring.py); on 16 GPUs of two nodes every channel crosses
    InfiniBand twice."""
    S, group = 256 * 2**20, list(dgx.devices)
    p = Program()
    ranks = [p.add_rank(d) for d in group]
    call = p.collective("all_reduce", S, [group], ranks, algorithm="ring")
    for r in ranks:
        p.post(r, call)
    res = simulate(p, dgx)
    n, local = len(group), 8
    nodes = [list(range(i, i + local)) for i in range(0, n, local)]
    orders = [[node[(j + k) % local] for node in nodes for j in range(local)]
              for k in range(local)]
    per_hop = 2 * (n - 1) / n * S / len(orders)
    want = sum(_route_bytes(dgx, group[o[i]], group[o[(i + 1) % n]], per_hop)
               for o in orders for i in range(n))
    np.testing.assert_allclose(res.link_bytes, want, rtol=1e-9)
    got = _network_columns(dgx, res.link_bytes, res.step_time_s)
    want_by_tech = _energy_by_tech(dgx, want)
    assert set(want_by_tech) == {"nvlink4", "pcie5", "ib-ndr"}
    for tech, joules in want_by_tech.items():
        assert got[tech] == pytest.approx(joules, rel=1e-9)
    assert got["network"] == pytest.approx(sum(want_by_tech.values()), rel=1e-9)
    # by hand: each of 8 channels crosses IB twice with S/8 x 30/16, 2 NDR + 2 PCIe5 hops each
    cross = 2 * local * per_hop
    assert want_by_tech["ib-ndr"] == pytest.approx(cross * 2 * 8 * 48e-12)
    assert want_by_tech["pcie5"] == pytest.approx(cross * 2 * 8 * 10e-12)


def test_one_node_ring_is_one_channel_of_nvlink_hops(dgx):
    """Inside one NVSwitch domain a single ring: every GPU sends 2(p-1)/p x S over NVLink4
    up to the switch planes and down to its successor, 2 x 5.5 pJ/bit per byte-bit."""
    S, group = 64 * 2**20, list(dgx.devices[:8])
    p = Program()
    ranks = [p.add_rank(d) for d in group]
    call = p.collective("all_reduce", S, [group], ranks, algorithm="ring")
    for r in ranks:
        p.post(r, call)
    res = simulate(p, dgx)
    got = _network_columns(dgx, res.link_bytes, res.step_time_s)
    assert set(got) == {"nvlink4", "network"}
    assert got["nvlink4"] == pytest.approx(8 * (2 * 7 / 8 * S) * 8 * 2 * 5.5e-12, rel=1e-9)
