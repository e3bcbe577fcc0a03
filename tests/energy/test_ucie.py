"""Die-to-die traffic lands on UCIe edges exactly when a group spans the dies of a package.

On ``chiplet-ucie`` every die has its own scale-up (NVLink5) ports, so inside a node two dies
of different packages talk through the switch and never touch UCIe; dies of one package talk
over the package's 2x2 UCIe mesh (dimension-order routes). Off-node traffic (NICs, hosts)
leaves a package through its gateway die ``c0.0``: a die at mesh coordinates (x, y) first
crosses x + y UCIe hops to reach it, and as many again at the far end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clustersim.collectives import expand
from clustersim.config.yamlio import load_yaml_file
from clustersim.engine import CollectiveCall, Program, simulate
from clustersim.fidelity import build_program
from clustersim.result import StepOutcome, step_energy
from clustersim.experiment.sweep import expand as expand_sweep
from clustersim.network import build_cluster
from clustersim.workload import resolve_model, resolve_plan
from clustersim.step import plan_step

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
S = 64 * 2**20


@pytest.fixture(scope="module")
def node():
    return build_cluster("chiplet-ucie", devices=16)     # 4 packages of 4 dies, one node


@pytest.fixture(scope="module")
def two_nodes():
    return build_cluster("chiplet-ucie", devices=32)


def _tech_bytes(cluster, link_bytes) -> dict[str, float]:
    """Bytes per link technology, for the technologies that carried any."""
    out = {}
    for i, tech in enumerate(cluster.links.techs):
        carried = link_bytes[cluster.links.tech_id == i]
        if carried.any():
            out[tech] = float(carried.sum())
    return out


def _package(cluster, die) -> str:
    return cluster.graph.nodes[die]["package"]


def _all_reduce(cluster, group, size=S):
    p = Program()
    ranks = [p.add_rank(d) for d in group]
    call = p.collective("all_reduce", size, [group], ranks, algorithm="ring")
    for r in ranks:
        p.post(r, call)
    return simulate(p, cluster)


def test_a_package_wide_group_puts_its_bytes_on_ucie_only(node):
    """4 dies (0,0), (1,0), (0,1), (1,1) in ring order: hops of 1, 2, 1 and 2 mesh links."""
    group = node.devices[:4]
    assert len({_package(node, d) for d in group}) == 1
    res = _all_reduce(node, group)
    by_tech = _tech_bytes(node, res.link_bytes)
    assert set(by_tech) == {"ucie-advanced"}
    # a ring all-reduce moves 2(p-1)/p x S per rank and hop; 6 link hops around this ring
    # (bidirectional rings on a mesh split S in two, each direction 6 hops as well)
    assert by_tech["ucie-advanced"] == pytest.approx(2 * 3 / 4 * S * 6, rel=1e-9)
    e = step_energy(node, StepOutcome(res.step_time_s, 0, 0, 0, 0, 0, 0, res.link_bytes),
                    "bf16")
    assert e["energy_link_ucie-advanced_j"] == pytest.approx(
        by_tech["ucie-advanced"] * 8 * 0.3e-12, rel=1e-9)


@pytest.mark.parametrize("die", [0, 3], ids=["gateway-die", "far-die"])
def test_a_group_across_packages_of_one_node_never_touches_ucie(node, die):
    """The data-parallel group of tp=4 (die k of every package) rides the NVLink5 switch:
    every die has its own scale-up ports, gateway or not."""
    group = node.devices[die::4]
    assert len({_package(node, d) for d in group}) == 4
    res = _all_reduce(node, group)
    by_tech = _tech_bytes(node, res.link_bytes)
    assert set(by_tech) == {"nvlink5"}
    assert by_tech["nvlink5"] == pytest.approx(2 * 3 / 4 * S * 4 * 2, rel=1e-9)  # up + down


@pytest.mark.parametrize("die,hops", [(0, 0), (1, 1), (2, 1), (3, 2)],
                         ids=["(0,0)", "(1,0)", "(0,1)", "(1,1)"])
def test_off_node_traffic_crosses_ucie_to_the_gateway_die(two_nodes, die, hops):
    """Die k of package 0 on node 0 and on node 1 (a two-rank ring, S each way): each
    direction crosses ``hops`` = x + y UCIe links to the gateway at both ends, then PCIe5 to
    the NIC and NDR InfiniBand."""
    a, b = two_nodes.devices[die], two_nodes.devices[16 + die]
    res = _all_reduce(two_nodes, [a, b])
    by_tech = _tech_bytes(two_nodes, res.link_bytes)
    assert by_tech.get("ucie-advanced", 0.0) == pytest.approx(2 * S * 2 * hops, rel=1e-9)
    assert by_tech["pcie5"] == pytest.approx(2 * S * 2, rel=1e-9)


def _expected_link_bytes(cluster, program, result) -> np.ndarray:
    """Every collective as its algorithm expands it, on every group of the call, over the
    routes; the step's link bytes must be exactly this (no transfers in these plans)."""
    out = np.zeros(len(cluster.links))
    for call in program.calls.values():
        assert isinstance(call, CollectiveCall)
        phases = expand(cluster, list(call.groups[0]), call.op, call.size_B,
                        result.algorithms[call.id])
        for phase in phases:
            for group in call.groups:
                for s, d, b in zip(phase.src, phase.dst, phase.bytes):
                    links, weights, _ = cluster.route(group[s], group[d])
                    np.add.at(out, links, b * call.repeat * weights)
    return out


def _scenario(config):
    c = build_cluster(config.cluster.topology, config.cluster.devices, config.cluster.overrides)
    model = resolve_model(config.model)
    plan = resolve_plan(config.training, model, len(c.devices))
    program = build_program(plan_step(model, plan, c, config.training), c)
    return c, program, simulate(program, c)


@pytest.fixture(scope="module")
def ucie_cases():
    """experiments/ucie-chiplets.yaml: tp=4 inside each package, and its tp=1 case (one die
    per package: data parallelism across packages, no die-to-die links at all)."""
    exp = expand_sweep(load_yaml_file(EXPERIMENTS / "ucie-chiplets.yaml"))
    return {s.swept["case"]: _scenario(s.config) for s in exp.scenarios}


def test_tp4_inside_a_package_puts_the_tensor_parallel_traffic_on_ucie(ucie_cases):
    c, program, res = ucie_cases["4 dies UCIe advanced"]
    np.testing.assert_allclose(res.link_bytes, _expected_link_bytes(c, program, res),
                               rtol=1e-9)
    by_tech = _tech_bytes(c, res.link_bytes)
    assert by_tech["ucie-advanced"] > 0 and by_tech["nvlink5"] > 0
    # which collectives put bytes on UCIe: the tensor-parallel ones (groups inside one
    # package), never the data-parallel ones (die k of every package, over NVLink5)
    for call in program.calls.values():
        inside = all(len({_package(c, d) for d in g}) == 1 for g in call.groups)
        spans = all(len({_package(c, d) for d in g}) == len(g) for g in call.groups)
        assert inside or spans, call.label
        one = Program()
        ranks = [one.add_rank(d) for g in call.groups for d in g]
        solo = one.collective(call.op, call.size_B, call.groups, ranks,
                              algorithm=res.algorithms[call.id])
        for r in ranks:
            one.post(r, solo)
        alone = _tech_bytes(c, simulate(one, c).link_bytes)
        assert ("ucie-advanced" in alone) == inside, call.label


def test_tp1_across_packages_puts_nothing_on_die_to_die_links(ucie_cases):
    c, program, res = ucie_cases["monolithic equivalent"]
    assert not any(t.startswith("ucie") for t in c.links.techs)
    assert set(_tech_bytes(c, res.link_bytes)) == {"nvlink5"}


def test_tp1_over_dies_crosses_ucie_only_between_ring_neighbours_of_one_package():
    """tp=1 on the 16 dies themselves: the data-parallel ring visits the dies in rank order,
    so 3 of every 4 hops stay inside a package (on UCIe) and the fourth crosses NVLink5. Every
    UCIe byte is accounted for by those intra-package hops."""
    exp = expand_sweep(load_yaml_file(EXPERIMENTS / "ucie-chiplets.yaml"))
    base = exp.scenarios[0].config
    config = base.model_copy(update={"training": base.training.model_copy(update={
        "parallelism": base.training.parallelism.model_copy(update={"tp": 1, "sp": False})})})
    c, program, res = _scenario(config)
    expected = _expected_link_bytes(c, program, res)
    np.testing.assert_allclose(res.link_bytes, expected, rtol=1e-9)
    ucie = c.links.tech_id == c.links.techs.index("ucie-advanced")
    assert res.link_bytes[ucie].sum() > 0
    for i in np.nonzero(res.link_bytes * ucie)[0]:
        u, v = c.links.edges[i]
        assert _package(c, u) == _package(c, v)
