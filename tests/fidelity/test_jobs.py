"""Several jobs on one fabric against first principles.

The fabric: four one-GPU nodes, one 400 Gb/s NDR NIC each, on a two-level fat-tree of radix-4
switches (two leaves of two NICs; clustersim.topology.fattree gives a leaf radix/2 = 2 ports
down and 2 / r up, so r = 2 leaves one uplink to the spine, r = 1 two). Each job is
data-parallel over two nodes with its gradient all-reduce after the backward (no overlap),
so its step is compute + all-reduce:

- jobs on {0, 1} and {2, 3}: each job's traffic stays under its own leaf, no link is shared,
  so the slowdown is exactly 1;
- jobs interleaved, {0, 2} and {1, 3}, at 2:1: every flow of job A from leaf 0 to leaf 1
  shares leaf 0's one uplink with its twin of job B (the jobs are identical, so their flows
  start and stop together). Max-min fairness gives each flow min over its route of
  capacity / (weight x flows on the link); the step grows by the bytes A sends over that
  route times (1 / shared rate - 1 / alone rate), and nothing else changes;
- the same at 1:1: two uplinks carry two flows, nothing slows.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from clustersim.cli.main import main
from clustersim.collectives.cost import effective_capacity_Bps
from clustersim.config.experiment import SimulationConfig, TrainingConfig
from clustersim.config.yamlio import load_yaml
from clustersim.errors import InputErrors
from clustersim.experiment.scenario import Scenario, run_scenario
from clustersim.experiment.sweep import expand
from clustersim.fidelity.jobs import JobStep, simulate_jobs
from clustersim.network import build_cluster
from clustersim.step import plan_step
from clustersim.workload import ModelSpec, resolve_plan

# small enough that the gradient all-reduce (2 layers, 32k vocabulary: ~0.1 GB) dominates
MODEL = ModelSpec(name="tiny", layers=2, hidden=1024, heads=8, vocab=32000, seq_len=512)
TRAINING = TrainingConfig(global_batch=2, overlap={"grad_reduce": False})
FLOW = SimulationConfig()


def fabric(oversubscription: float, per_node: int = 1, nodes: int = 4, radix: int = 4):
    return build_cluster("dgx-h100", per_node * nodes, {
        "devices_per_node": per_node, "scale_out.nics_per_node": per_node,
        "scale_out.radix": radix, "scale_out.levels": 2, "scale_up.domain_size": per_node,
        "scale_out.oversubscription": oversubscription, "scale_out.rail_optimized": False})


def job(cluster, name, indices, training=TRAINING, model=MODEL):
    view = cluster.on_devices([cluster.devices[i] for i in indices])
    plan = resolve_plan(training, model, len(indices))
    return JobStep(name, plan_step(model, plan, view, training), view)


def test_jobs_under_their_own_leaves_do_not_slow_each_other():
    cluster = fabric(2)
    a, b = simulate_jobs([job(cluster, "a", [0, 1]), job(cluster, "b", [2, 3])], cluster, FLOW)
    assert a.alone.exposed_comm_s > 2 * a.alone.compute_s   # all-reduce-bound
    assert a.slowdown == 1.0 and b.slowdown == 1.0
    assert a.shared.step_time_s == a.alone.step_time_s


def _rate(cluster, route, flows_on) -> float:
    """Max-min rate of one flow on ``route`` when link l carries flows_on(l) equal flows."""
    links, weights, _ = route
    capacity = effective_capacity_Bps(cluster)
    return min(capacity[l] / (w * flows_on(l)) for l, w in zip(links, weights))


def test_interleaved_jobs_share_the_oversubscribed_uplink_as_max_min_predicts():
    cluster = fabric(2)
    a, b = simulate_jobs([job(cluster, "a", [0, 2]), job(cluster, "b", [1, 3])], cluster, FLOW)
    d = cluster.devices
    route_a, route_b = cluster.route(d[0], d[2]), cluster.route(d[1], d[3])
    theirs = set(route_b[0].tolist())
    alone = _rate(cluster, route_a, lambda l: 1)
    shared = _rate(cluster, route_a, lambda l: 2 if l in theirs else 1)
    assert shared == pytest.approx(alone / 2)   # the uplink: one port for two flows
    uplink = next(l for l in route_a[0] if l in theirs)
    sent_B = a.alone.link_bytes[uplink]          # every byte A sends from leaf 0 to leaf 1
    expected = a.alone.step_time_s + sent_B * (1 / shared - 1 / alone)
    assert a.shared.step_time_s == pytest.approx(expected, rel=1e-9)
    assert a.shared.compute_s == pytest.approx(a.alone.compute_s, rel=1e-12)
    assert b.slowdown == pytest.approx(a.slowdown, rel=1e-9) and a.slowdown > 1.5


def test_interleaved_jobs_on_a_full_bisection_tree_do_not_slow_each_other():
    cluster = fabric(1)
    a, b = simulate_jobs([job(cluster, "a", [0, 2]), job(cluster, "b", [1, 3])], cluster, FLOW)
    assert a.slowdown == pytest.approx(1.0, rel=1e-9)
    assert b.slowdown == pytest.approx(1.0, rel=1e-9)


def test_representative_ranks_and_every_rank_agree_with_neighbours():
    """Four nodes of four GPUs (a radix-8 leaf per node, two uplinks at 2:1); each job holds
    two GPUs of every node, tp=2 inside the node and dp=4 across: a representative rank's
    calls carry every group of its job's placement (2 data-parallel groups, 4 tensor ones)."""
    cluster = fabric(2, per_node=4, radix=8)
    training = TrainingConfig(global_batch=8, parallelism={"tp": 2},
                              overlap={"grad_reduce": False})
    a = [n * 4 + i for n in range(4) for i in (0, 1)]
    b = [n * 4 + i for n in range(4) for i in (2, 3)]
    jobs = [job(cluster, "a", a, training), job(cluster, "b", b, training)]
    rep = simulate_jobs(jobs, cluster, FLOW)
    every = simulate_jobs(jobs, cluster, SimulationConfig(ranks="all"))
    for r, e in zip(rep, every):
        assert r.shared.step_time_s == pytest.approx(e.shared.step_time_s, rel=1e-9)
        assert r.alone.step_time_s == pytest.approx(e.alone.step_time_s, rel=1e-9)
    assert rep[0].slowdown > 1.0


def test_a_short_neighbour_loops_until_the_primary_step_ends():
    cluster = fabric(2)
    big = ModelSpec(name="big", layers=8, hidden=1024, heads=8, vocab=32000, seq_len=512)
    a, b = simulate_jobs([job(cluster, "a", [0, 2], model=big), job(cluster, "b", [1, 3])],
                         cluster, FLOW)
    assert b.steps >= 2
    assert b.steps * b.shared.step_time_s >= a.shared.step_time_s
    assert a.slowdown > 1.0


EXPERIMENT = """\
name: jobs-check
cluster:
  topology: dgx-h100
  devices: 32
model: llama3-8b
training: {{global_batch: 16, parallelism: {{tp: 8}}}}
jobs:
  - name: neighbour
    model: llama3-8b
    training: {{global_batch: 16, parallelism: {{tp: {tp}}}}}
    placement: {placement}
output: {{plots: false}}
"""
JOBS_LINE, TRAINING_LINE, PLACEMENT_LINE = 7, 10, 11


@pytest.mark.parametrize("placement, message, line", [
    ("{first: 24, count: 16}", r"placement holds devices 24\.\.39, past the cluster's 32",
     PLACEMENT_LINE),
    ("{first: 8, count: 16, block: 8, stride: 4}", r"stride \(4\) must be at least block",
     PLACEMENT_LINE),
    ("{first: 0, count: 32}", r"the jobs hold all 32 devices", JOBS_LINE),
    ("{first: 16, count: 12}", r"on 12 devices: tp x pp x cp = 8 x 1 x 1 = 8 does not",
     TRAINING_LINE),
])
def test_bad_placements_are_bad_input_at_their_line(tmp_path, capsys, placement, message,
                                                    line):
    path = tmp_path / "experiment.yaml"
    path.write_text(EXPERIMENT.format(placement=placement, tp=8))
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--executor", "serial"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert re.search(rf"experiment\.yaml:{line}:", err), err


def test_overlapping_jobs_name_each_other():
    text = EXPERIMENT.format(placement="{first: 0, count: 16}", tp=8).replace(
        "output:", "placement: {first: 8, count: 16}\noutput:")
    with pytest.raises(InputErrors, match=r"experiment.yaml:12:\d+: placement overlaps job "
                       r"'neighbour' on 8 devices \(first: device 8\)"):
        expand(load_yaml(text, "experiment.yaml"))


def test_the_analytic_fidelity_prices_each_job_alone_and_says_so():
    text = EXPERIMENT.format(placement="{first: 16, count: 16}", tp=8).replace(
        "output:", "simulation: {fidelity: analytic}\noutput:")
    [scenario] = expand(load_yaml(text, "experiment.yaml")).scenarios
    row = run_scenario(scenario)
    assert row["status"] == "ok", row["error"]
    assert row["job_contention"].startswith("none") and "fidelity: flow" in row["job_contention"]
    assert row["slowdown_vs_alone"] is None and row["jobs.neighbour.slowdown_vs_alone"] is None
    assert row["step_time_s"] == row["step_time_alone_s"]
    assert row["devices"] == 16


def test_the_flow_row_is_the_primary_on_its_devices():
    text = EXPERIMENT.format(placement="{first: 16, count: 16}", tp=8)
    [scenario] = expand(load_yaml(text, "experiment.yaml")).scenarios
    row = run_scenario(Scenario(0, "x", scenario.config))
    assert row["status"] == "ok", row["error"]
    assert row["devices"] == 16 and row["jobs.neighbour.steps"] >= 2
    # one DGX H100 pair per job, both on the rail-optimised NDR tree, which is full bisection
    assert row["slowdown_vs_alone"] == pytest.approx(1.0, abs=1e-9)
    assert np.isfinite(row["step_time_alone_s"])


def test_a_swept_placement_is_blamed_at_the_sweep_value():
    text = EXPERIMENT.format(placement="{first: 16, count: 16}", tp=8).replace(
        "output:", "sweep:\n  cases:\n    - {label: far, jobs.0.placement: {first: 24, count: 16}}"
        "\n    - {label: fine, jobs.0.placement: {first: 8, count: 16}}\noutput:")
    sweep = expand(load_yaml(text, "experiment.yaml"))
    [bad], [good] = sweep.invalid, sweep.scenarios
    assert re.match(r"experiment\.yaml:14:\d+: jobs\[0\] \('neighbour'\): placement holds "
                    r"devices 24\.\.39", bad.error), bad.error
    assert good.config.jobs[0].placement.indices()[0] == 8
    assert good.swept["jobs.0.placement"] == {"first": 8, "count": 16}
