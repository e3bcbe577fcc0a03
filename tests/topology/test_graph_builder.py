"""``builder: graph``: a hand-written graph that describes exactly what a builder builds must
be the same graph and give the same training step, under both fidelities; bad graphs are one
located line and exit code 2."""

from __future__ import annotations

import json

import networkx as nx
import pytest
import yaml

from clustersim.cli import main
from clustersim.config.experiment import ExperimentConfig
from clustersim.errors import InputError
from clustersim.experiment.scenario import Scenario, check_scenario, run_scenario
from clustersim.network import Cluster, build_cluster
from clustersim.topology import build_graph
from clustersim.topology.graph_yaml import graph_as_yaml_params, graph_topology


def edge_table(G):
    return {(u, v): (d["tech"], d["count"], d["bw_Bps"], d["latency_s"], d["energy_J_per_bit"])
            for u, v, d in G.edges(data=True)}


def write_graph_yaml(path, preset, devices, overrides=None):
    G, _ = build_graph(preset, devices, overrides)
    doc = {"name": f"{preset}-drawn", "description": f"{preset} drawn by hand",
           "builder": "graph", "devices": devices, "params": graph_as_yaml_params(G)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return G


@pytest.mark.parametrize("preset,devices", [
    ("dgx-h100", 16), ("dgx-h100", 256), ("mi300x-node", 16), ("gb200-nvl72", 144),
    ("cxl-memory-pool", 16), ("chiplet-ucie", 32), ("tpu-v4-pod", 128),
    ("tpu-v4-pod", 256)])
def test_drawn_graph_of_a_builder_is_the_same_graph_and_routes(tmp_path, preset, devices):
    # tpu-v4-pod at 256 chips in pods of 4x4x8: two pods joined by the DCN
    overrides = {"pod": [4, 4, 8]} if preset == "tpu-v4-pod" and devices == 256 else None
    path = tmp_path / "drawn.yaml"
    built = write_graph_yaml(path, preset, devices, overrides)
    drawn = build_cluster(str(path))
    assert edge_table(drawn.graph) == edge_table(built)
    assert drawn.devices == list(built.graph["devices"])
    reference = build_cluster(preset, devices, overrides)
    # the same link resources too: stars and two-level trees bundle their planes/uplinks
    assert len(drawn.links.capacity_Bps) == len(reference.links.capacity_Bps)
    assert sorted(type(f).__name__ for f in drawn.router.fabrics.values()) == \
        sorted(type(f).__name__ for f in reference.router.fabrics.values())
    same_level = {"dcn": "scaleout"}   # a drawn graph calls every scale-out level scaleout
    for d in reference.devices:   # attached to the same kinds of fabric, innermost first
        assert [a.level for a in drawn.graph.nodes[d]["attach"]] == \
            [same_level.get(a.level, a.level) for a in reference.graph.nodes[d]["attach"]]
    for a in (reference.devices[0], reference.devices[-1]):
        for b in reference.devices:
            want, got = dict(reference.router.edges(a, b)), dict(drawn.router.edges(a, b))
            assert want.keys() == got.keys(), (a, b)
            for e, w in want.items():
                assert got[e] == pytest.approx(w, rel=1e-12), (a, b, e)


def scenario(topology, fidelity, devices):
    return ExperimentConfig.model_validate({
        "name": "graph-eq", "cluster": {"topology": topology, "devices": devices},
        "model": "llama3-8b", "simulation": {"fidelity": fidelity},
        "training": {"global_batch": devices, "micro_batch": 1,
                     "parallelism": {"tp": 4, "pp": 2, "dp": devices // 8}}})


@pytest.mark.parametrize("preset,fidelity,devices", [
    ("dgx-h100", "analytic", 16), ("dgx-h100", "flow", 16), ("dgx-h100", "analytic", 256),
    ("tpu-v4-pod", "analytic", 64), ("tpu-v4-pod", "flow", 64)])
def test_drawn_graph_gives_the_builders_step_time(tmp_path, preset, fidelity, devices):
    # dgx-h100 at 16 GPUs: NICs on one leaf (a star); at 256: a two-level rail-optimised
    # fat-tree, drawn as plain links and routed by ECMP, SHARP since every switch has it;
    # tpu-v4-pod: chips with coords on a torus, read back as a torus
    path = tmp_path / "drawn.yaml"
    write_graph_yaml(path, preset, devices)
    want = run_scenario(Scenario(0, "built", scenario(preset, fidelity, devices)))
    got = run_scenario(Scenario(0, "drawn", scenario(str(path), fidelity, devices)))
    assert want["status"] == got["status"] == "ok", (want["error"], got["error"])
    assert got["step_time_s"] == pytest.approx(want["step_time_s"], rel=1e-9)
    assert got["energy_j"] == pytest.approx(want["energy_j"], rel=1e-9)


def test_node_link_json_and_graphml_and_python_give_one_graph(tmp_path):
    g = nx.Graph()
    for i in range(4):
        g.add_node(f"g{i}", kind="accelerator", device="h100-sxm-80gb")
    g.add_node("sw", kind="switch", model="nvswitch3")
    for i in range(4):
        g.add_edge(f"g{i}", "sw", technology="nvlink4", count=18)
    (tmp_path / "g.json").write_text(json.dumps(nx.node_link_data(g, edges="links")))
    nx.write_graphml(g, tmp_path / "g.graphml")
    tables = [edge_table(graph_topology(g))]
    for name in ("g.json", "g.graphml"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(
            {"name": "file", "description": "from a file", "builder": "graph", "devices": 4,
             "params": {"file": name}}))
        tables.append(edge_table(build_cluster(str(tmp_path / f"{name}.yaml")).graph))
    assert tables[0] == tables[1] == tables[2]
    c = Cluster.from_graph(graph_topology(g))
    fabric = c.router.shared_fabric("g0", "g1")
    assert fabric.in_network_reduction == "nvls"       # the NVSwitch model says so
    # an experiment on the file-backed topology checks and runs like any preset
    config = ExperimentConfig.model_validate({
        "name": "from-json", "cluster": {"topology": str(tmp_path / "g.json.yaml")},
        "model": "llama3-8b", "simulation": {"fidelity": "analytic"},
        "training": {"global_batch": 4, "parallelism": {"tp": 4}}})
    check_scenario(config)
    row = run_scenario(Scenario(0, "from-json", config))
    assert row["status"] == "ok", row["error"]


GOOD = """name: bad
description: a graph with a mistake
builder: graph
devices: 2
params:
  nodes:
    - {id: g0, kind: accelerator, device: h100-sxm-80gb}
    - {id: g1, kind: accelerator, device: h100-sxm-80gb}
    - {id: sw, kind: switch, model: nvswitch3}
  links:
    - {between: [g0, sw], technology: nvlink4, count: 18}
    - {between: [g1, sw], technology: nvlink4, count: 18}
"""


@pytest.mark.parametrize("old,new,line,words", [
    ("[g1, sw]", "[g1, sx]", 12, ["unknown node 'sx'", "did you mean 'sw'"]),
    ("technology: nvlink4, count: 18}\n    - {between: [g1",
     "technology: nvlnk4, count: 18}\n    - {between: [g1", 11,
     ["unknown link technology 'nvlnk4'", "nvlink4"]),
    ("    - {between: [g1, sw], technology: nvlink4, count: 18}\n", "", 8,
     ["2 pieces", "'g1'", "add a link"]),
    ("devices: 2", "devices: 3", 4, ["lists 2 accelerators", "devices: 2"]),
    ("model: nvswitch3", "model: nvswitch9", 9, ["unknown switch preset 'nvswitch9'"]),
])
def test_bad_graph_is_one_located_line_and_exit_2(tmp_path, capsys, old, new, line, words):
    path = tmp_path / "bad.yaml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(InputError) as err:
        build_cluster(str(path))
    assert f"bad.yaml:{line}:" in str(err.value)
    for w in words:
        assert w in str(err.value)
    assert main(["topology", "show", str(path)]) == 2
    out = capsys.readouterr()
    assert f"bad.yaml:{line}:" in out.err and "Traceback" not in out.err


def test_good_graph_runs(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert main(["topology", "show", str(path)]) == 0


def test_bad_graph_file_names_the_file_and_the_fix(tmp_path):
    g = nx.Graph()
    g.add_node("a", kind="accelerator", device="mi300x")
    g.add_node("b", kind="accelerator", device="mi300x")
    g.add_edge("a", "b", technology="xgmi", count=7)
    (tmp_path / "g.json").write_text(json.dumps(nx.node_link_data(g, edges="links")))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(
        {"name": "t", "description": "d", "builder": "graph", "devices": 2,
         "params": {"file": "g.json"}}))
    with pytest.raises(InputError) as err:
        build_cluster(str(tmp_path / "t.yaml"))
    assert "g.json" in str(err.value) and "unknown link technology 'xgmi'" in str(err.value)
