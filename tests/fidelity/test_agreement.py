"""The two fidelities read one step plan: on the engine with every call at its uncontended
price they are the same computation, so they must agree exactly; with the flow network they
differ only by contention between concurrent calls."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.collectives import collective_time_s
from clustersim.config.experiment import SimulationConfig, TrainingConfig
from clustersim.engine import CollectiveCall, simulate
from clustersim.engine.comm import CommModel, p2p_cost
from clustersim.fidelity import build_program, estimate_step, simulate_flow
from clustersim.fidelity.placement import stage_rank_groups
from clustersim.network import build_cluster
from clustersim.network.flows import flow_set
from clustersim.network.maxmin import max_min_rates
from clustersim.result.breakdown import critical_breakdown
from clustersim.step import plan_step
from clustersim.workload import Infeasible, ModelSpec, get_model, resolve_plan

LLAMA = get_model("llama3-8b")
SLOW = {"scale_out.bandwidth": "5 GB/s"}
FLOW, ANALYTIC = SimulationConfig(), SimulationConfig(fidelity="analytic")


@pytest.fixture(scope="module")
def clusters():
    cache = {}

    def get(devices, overrides=None, topology="dgx-h100"):
        key = (topology, devices, tuple(sorted((overrides or {}).items())))
        if key not in cache:
            cache[key] = build_cluster(topology, devices=devices, overrides=overrides or {})
        return cache[key]
    return get


def step_of(cluster, model, global_batch, parallelism, **training):
    t = TrainingConfig(global_batch=global_batch, parallelism=parallelism, **training)
    return plan_step(model, resolve_plan(t, model, len(cluster.devices)), cluster, t)


class Uncontended(CommModel):
    """Every call one latency-only batch at its uncontended price: the engine, minus the
    network, so only the step plan's order and dependencies decide the times."""

    def batches(self, call):
        if isinstance(call, CollectiveCall):
            groups = [list(g) for g in call.groups]
            seconds = collective_time_s(self.cluster, groups[0], call.op, call.size_B,
                                        groups=groups[1:]) * call.repeat
        else:
            routes = [self.cluster.route(a, b)[:2] for a, b in call.pairs]
            rates = max_min_rates(np.cumsum([0] + [len(lk) for lk, _ in routes]),
                                  np.concatenate([lk for lk, _ in routes]),
                                  np.concatenate([w for _, w in routes]), self.capacity_Bps)
            wire, latency = p2p_cost(self.cluster, *call.pairs[0], call.size_B, self._p2p)
            seconds = latency + wire / float(rates.min())
        yield flow_set([]), np.zeros(0), seconds, call.label


def uncontended(step, cluster):
    program = build_program(step, cluster)
    result = simulate(program, cluster, comm=Uncontended(cluster))
    compute, comm = {}, {}
    for op in program.ops:
        start, end = float(result.op_start_s[op.id]), float(result.op_end_s[op.id])
        if op.kind == "compute":
            if op.stream == "compute":
                compute.setdefault(op.rank, []).append((start, end))
        else:
            comm.setdefault(op.rank, []).append(
                (max(start, result.call_start_s.get(op.call, start)), end))
    ends = [max(result.op_end_s[op.id] for op in program.ops if op.rank == r)
            for r in range(len(program.ranks))]
    return result.step_time_s, critical_breakdown(ends, compute, comm)


CASES = [   # devices, parallelism, cluster overrides, other training keys
    (16, {"tp": 8}, {}, {}),                                                 # tp only
    (16, {"tp": 4, "pp": 2}, {}, {}),                                        # tp + pp 1f1b
    (16, {"tp": 2, "pp": 4, "schedule": "1f1b-interleaved", "virtual_stages": 2}, {}, {}),
    (16, {"tp": 2, "pp": 2, "schedule": "gpipe"}, {}, {}),
    (32, {"tp": 8, "zero": 1}, {}, {}),                                      # dp across nodes
    (32, {"tp": 8, "zero": 3}, {}, {}),
    (16, {"tp": 1}, {}, {}),                                                 # 16-way dp
    (64, {"tp": 4, "pp": 2, "sp": True, "zero": 1}, {}, {}),
    (32, {"tp": 8, "zero": 1, "shard_group": 2}, SLOW, {}),                  # hybrid sharding
    (32, {"tp": 8, "zero": 2}, SLOW, {}),
    (32, {"tp": 8, "zero": 3}, SLOW, {}),
    (32, {"tp": 4, "zero": 3, "shard_group": 2}, SLOW, {}),                  # hybrid FSDP
    (32, {"tp": 4, "pp": 2, "zero": 1}, SLOW, {}),
    (16, {"tp": 4, "pp": 2, "sp": True}, {}, {"overlap": {"tp_comm": True}}),  # TP under GEMMs
    (32, {"tp": 8}, SLOW, {"overlap": {"grad_reduce": False, "param_gather": False}}),
    (16, {"tp": 2, "pp": 4, "schedule": "zb-h1"}, {}, {}),                  # zero bubble
    (16, {"tp": 4, "pp": 2, "schedule": "zb-h2"}, {}, {}),
    (32, {"tp": 4, "pp": 2, "zero": 1, "schedule": "zb-h1"}, SLOW, {}),
    (32, {"tp": 2, "pp": 2, "zero": 3, "schedule": "zb-h1"}, SLOW, {}),
    (16, {"tp": 2, "pp": 4, "schedule": "dualpipe"}, {}, {}),                # bidirectional
    (32, {"tp": 4, "pp": 2, "zero": 1, "schedule": "dualpipe"}, SLOW, {}),
]
IDS = [f"{d}-{p}-{'slow' if o else 'ndr'}-{t}" for d, p, o, t in CASES]


@pytest.mark.parametrize("devices,parallelism,overrides,training", CASES, ids=IDS)
def test_the_analytic_fidelity_is_the_engine_at_uncontended_prices(
        clusters, devices, parallelism, overrides, training):
    cluster = clusters(devices, overrides)
    step = step_of(cluster, LLAMA, 2 * devices, parallelism, **training)
    analytic = estimate_step(step, cluster, ANALYTIC)
    step_s, parts = uncontended(step, cluster)
    assert analytic.step_time_s == pytest.approx(step_s, rel=1e-9)
    for key, value in parts.items():
        assert getattr(analytic, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("devices,parallelism,overrides,training", CASES, ids=IDS)
def test_flow_and_analytic_differ_only_by_contention(clusters, devices, parallelism,
                                                     overrides, training):
    cluster = clusters(devices, overrides)
    step = step_of(cluster, LLAMA, 2 * devices, parallelism, **training)
    flow, analytic = simulate_flow(step, cluster, FLOW), estimate_step(step, cluster, ANALYTIC)
    # contention can only delay a call, never speed one up
    assert analytic.step_time_s <= flow.step_time_s * (1 + 1e-9)
    assert analytic.step_time_s == pytest.approx(flow.step_time_s, rel=0.03)
    for key in ("compute_s", "exposed_comm_s", "bubble_s", "comm_s"):
        assert abs(getattr(analytic, key) - getattr(flow, key)) <= 0.05 * flow.step_time_s
    # the same work: FLOPs and memory traffic of every compute op, bytes on every link
    assert analytic.flops == pytest.approx(flow.flops, rel=1e-9)
    assert analytic.mem_bytes == pytest.approx(flow.mem_bytes, rel=1e-9)
    np.testing.assert_allclose(analytic.link_bytes, flow.link_bytes, rtol=1e-9, atol=1.0)


TINY = ModelSpec("tiny", layers=8, hidden=1024, heads=8, vocab=4096, seq_len=512,
                 tied_embeddings=True)


@st.composite
def plans(draw):
    pp = draw(st.sampled_from((1, 2, 4)))
    schedule = draw(st.sampled_from(("1f1b", "gpipe", "1f1b-interleaved", "zb-h1", "zb-h2",
                                     "dualpipe") if pp > 1 else ("1f1b",)))
    parallelism = {"tp": draw(st.sampled_from((1, 2, 4))), "pp": pp, "schedule": schedule,
                   "zero": draw(st.integers(0, 3)), "sp": draw(st.booleans())}
    if schedule == "1f1b-interleaved":
        parallelism["virtual_stages"] = 2
    if draw(st.booleans()):
        parallelism["shard_group"] = 2
    overlap = {k: draw(st.booleans()) for k in ("grad_reduce", "param_gather", "tp_comm")}
    return parallelism, overlap, draw(st.sampled_from((8, 16)))


@settings(max_examples=40, deadline=None)
@given(plans())
def test_both_fidelities_read_every_plan_the_same_way(clusters, case):
    parallelism, overlap, global_batch = case
    cluster = clusters(32, SLOW)
    try:
        step = step_of(cluster, TINY, global_batch, parallelism, overlap=overlap)
    except Infeasible:
        return
    analytic = estimate_step(step, cluster, ANALYTIC)
    assert analytic.step_time_s == pytest.approx(uncontended(step, cluster)[0], rel=1e-9)


def test_optimizer_offload_is_priced_by_both(clusters):
    cluster = clusters(8, topology="cxl-memory-pool")
    for where in ("cxl", "host"):
        step = step_of(cluster, LLAMA, 8, {"tp": 8}, offload={"optimizer": where})
        analytic = estimate_step(step, cluster, ANALYTIC)
        assert analytic.step_time_s == pytest.approx(uncontended(step, cluster)[0], rel=1e-9)
        flow = simulate_flow(step, cluster, FLOW)
        assert analytic.step_time_s == pytest.approx(flow.step_time_s, rel=0.03)


@pytest.mark.parametrize("model,devices,parallelism,seq_len", [
    ("llama3-8b", 16, {"tp": 4, "pp": 2, "zero": 1, "shard_group": 2}, None),
    ("gpt3-175b", 32, {"tp": 8, "pp": 4}, 2048),                       # tied embeddings
    ("mixtral-8x7b", 16, {"tp": 2, "ep": 2, "pp": 2, "zero": 3, "shard_group": 2}, 4096),
    ("mixtral-8x7b", 16, {"tp": 2, "ep": 2, "cp": 2, "zero": 2}, 4096)])
def test_every_collective_runs_on_the_groups_of_its_family(clusters, model, devices,
                                                           parallelism, seq_len):
    """The flow program's groups are, call by call, one family of one stage as the analytic
    fidelity prices it: the two fidelities cannot disagree on who talks to whom."""
    cluster = clusters(devices)
    model = get_model(model)
    step = step_of(cluster, model, 2 * devices, parallelism, seq_len=seq_len)
    rank = {d: r for r, d in enumerate(cluster.devices)}
    program = build_program(step, cluster)
    calls = [c for c in program.calls.values() if isinstance(c, CollectiveCall)]
    assert calls
    families = set()
    for stage in step.stages:
        for slot in stage.slots:
            items = list(slot.calls) + list(slot.receive_calls)
            for piece in slot.pieces:
                items += list(piece.prefetch) + list(piece.then)
            families |= {(c.family, stage.stage) for c in items}
        families |= {(c.family, stage.stage) for c in stage.prologue + stage.epilogue
                     if hasattr(c, "family")}
    expected = [[list(g) for g in stage_rank_groups(step.plan, f, s)] for f, s in families]
    for call in calls:
        assert [[rank[d] for d in g] for g in call.groups] in expected, call.label


PLANS = [
    # (devices, parallelism, global batch, micro-batch)
    (8, {"tp": 8}, 8, 1),
    (16, {"tp": 4, "pp": 2, "schedule": "1f1b"}, 16, 1),
    (32, {"tp": 8, "pp": 2, "schedule": "1f1b"}, 32, 1),
    (32, {"tp": 8, "zero": 1}, 32, 1),
    (64, {"tp": 4, "pp": 2, "zero": 1}, 64, 2),
]


@pytest.mark.parametrize("devices,parallelism,global_batch,micro_batch", PLANS)
def test_representative_and_all_ranks_agree_on_training_steps(clusters, devices, parallelism,
                                                              global_batch, micro_batch):
    cluster = clusters(devices)
    step = step_of(cluster, TINY, global_batch, parallelism, micro_batch=micro_batch)
    rep = simulate_flow(step, cluster, SimulationConfig(ranks="representative"))
    full = simulate_flow(step, cluster, SimulationConfig(ranks="all"))
    assert len(build_program(step, cluster, representative=False).ranks) == devices
    assert rep.step_time_s == pytest.approx(full.step_time_s, rel=0.01)
    # the representative's calls carry every group of its class: the same traffic
    assert np.allclose(rep.link_bytes, full.link_bytes, rtol=1e-9, atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(plans())
def test_the_timeline_kernel_is_its_plain_python_twin(clusters, case):
    """The numba template machine and the coroutine evaluation of the lowering agree."""
    from clustersim.fidelity.analytic.timeline import evaluate

    parallelism, overlap, global_batch = case
    cluster = clusters(32, SLOW)
    try:
        step = step_of(cluster, TINY, global_batch, parallelism, overlap=overlap)
    except Infeasible:
        return
    kernel = estimate_step(step, cluster, ANALYTIC)
    twin = evaluate(step, cluster)
    assert kernel.step_time_s == pytest.approx(max(twin.stage_end_s), rel=1e-12)
    parts = critical_breakdown(twin.stage_end_s, twin.compute, twin.comm)
    for key, value in parts.items():
        assert getattr(kernel, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("schedule", ["zb-h1", "dualpipe"])
def test_moe_pipelines_are_read_alike_by_both(clusters, schedule):
    """Expert all-to-alls in zero-bubble slots and in DualPipe's forward-backward pairs
    (where they run beside the compute): the engine at uncontended prices is the analytic
    fidelity; the flow network differs by contention only."""
    cluster = clusters(16)
    step = step_of(cluster, get_model("mixtral-8x7b"), 32,
                   {"tp": 2, "ep": 2, "pp": 2, "schedule": schedule}, seq_len=4096)
    analytic = estimate_step(step, cluster, ANALYTIC)
    assert analytic.step_time_s == pytest.approx(uncontended(step, cluster)[0], rel=1e-9)
    flow = simulate_flow(step, cluster, FLOW)
    assert analytic.step_time_s <= flow.step_time_s * (1 + 1e-9)
    assert analytic.step_time_s == pytest.approx(flow.step_time_s, rel=0.03)
    beside = {c.dep == "overlapped" for s in step.stages for slot in s.slots
              for c in slot.calls if c.family.axis == "ep"}
    assert beside == ({True, False} if schedule == "dualpipe" else {False})
