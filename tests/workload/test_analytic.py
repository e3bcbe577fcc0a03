"""The analytic fidelity: the same work as the flow program, combined in closed form.

Checked against the flow fidelity computed here (uncontended collectives within 3%, whole
steps of small scenarios within 10%), against an exact replay of the pipeline schedules, and
against first principles (free communication, the 1F1B bubble, interleaving, bandwidth).
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from clustersim.collectives import collective_time_s
from clustersim.config.experiment import TrainingConfig
from clustersim.engine import simulate
from clustersim.engine.breakdown import critical_rank, rank_breakdown
from clustersim.topology import build_cluster
from clustersim.workload import ModelSpec, get_model, resolve_plan
from clustersim.workload.analytic import (_families, _mesh_key, _pricer, estimate_step,
                                          pipeline_span_s)
from clustersim.workload.groups import MESH_AXES_OF
from clustersim.workload.mesh import Mesh, blocks
from clustersim.workload.program import build_program
from clustersim.workload.schedules import (next_virtual_stage, previous_virtual_stage,
                                           schedule)
from clustersim.workload.stagework import chunk_work, dp_comms, optimizer_work

LLAMA = get_model("llama3-8b")
SLOW = {"scale_out.bandwidth": "5 GB/s"}


@pytest.fixture(scope="module")
def clusters():
    cache = {}

    def get(devices, overrides=None):
        key = (devices, tuple(sorted((overrides or {}).items())))
        if key not in cache:
            cache[key] = build_cluster("dgx-h100", devices=devices, overrides=overrides or {})
        return cache[key]
    return get


def both(cluster, model, global_batch, parallelism, **training):
    """The analytic estimate, the flow result, its critical rank's breakdown and program."""
    t = TrainingConfig(global_batch=global_batch, parallelism=parallelism, **training)
    plan = resolve_plan(t, model, len(cluster.devices))
    est = estimate_step(model, plan, cluster, t)
    program = build_program(model, plan, cluster, t)
    flow = simulate(program, cluster)
    return est, flow, rank_breakdown(flow, critical_rank(flow)), program


# ------------------------------------------------------------------ against the flow fidelity

def test_uncontended_collective_dominated_step_agrees_within_3_percent(clusters):
    # 16 GB of gradients all-reduced across two nodes on 5 GB/s NICs, blocking, after
    # 256-token micro-batches
    est, flow, parts, _ = both(clusters(16, SLOW), LLAMA, 16, {"tp": 1}, seq_len=256,
                               overlap={"grad_reduce": False})
    assert parts["exposed_comm_s"] > 0.8 * flow.step_time_s
    assert est.step_time_s == pytest.approx(flow.step_time_s, rel=0.03)
    assert est.exposed_comm_s == pytest.approx(parts["exposed_comm_s"], rel=0.03)


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
]


@pytest.mark.parametrize("devices,parallelism,overrides,training", CASES,
                         ids=[f"{d}-{p}-{'slow' if o else 'ndr'}-{t}" for d, p, o, t in CASES])
def test_full_steps_agree_with_the_flow_fidelity(clusters, devices, parallelism, overrides,
                                                 training):
    cluster = clusters(devices, overrides)
    est, flow, parts, program = both(cluster, LLAMA, 2 * devices, parallelism, **training)
    step = flow.step_time_s
    assert est.step_time_s == pytest.approx(step, rel=0.10)
    for key in ("compute_s", "exposed_comm_s", "bubble_s", "comm_s"):
        assert abs(getattr(est, key) - parts[key]) <= 0.10 * step, key
    # the same work: FLOPs and memory traffic of every compute op, bytes on every link
    stands = [r.stands_for for r in program.ranks]
    ops = [op for op in program.ops if op.kind == "compute"]
    assert est.flops == pytest.approx(sum(op.flops * stands[op.rank] for op in ops), rel=1e-9)
    assert est.mem_bytes == pytest.approx(sum(op.mem_bytes * stands[op.rank] for op in ops),
                                          rel=1e-9)
    np.testing.assert_allclose(est.network_bytes_by_link, flow.link_bytes, rtol=1e-9, atol=1.0)
    assert est.network_energy_J == pytest.approx(
        float(flow.link_bytes @ cluster.links.energy_J_per_bit) * 8, rel=1e-9)


def test_tied_embeddings_are_summed_between_first_and_last_stage(clusters):
    cluster = clusters(32)
    est, flow, parts, _ = both(cluster, get_model("gpt3-175b"), 16, {"tp": 8, "pp": 4},
                               seq_len=2048)
    assert est.step_time_s == pytest.approx(flow.step_time_s, rel=0.03)
    np.testing.assert_allclose(est.network_bytes_by_link, flow.link_bytes, rtol=1e-9, atol=1.0)


def test_the_three_parts_sum_to_the_step(clusters):
    t = TrainingConfig(global_batch=64, parallelism={"tp": 4, "pp": 4, "zero": 1})
    est = estimate_step(LLAMA, resolve_plan(t, LLAMA, 64), clusters(64), t)
    assert est.compute_s + est.exposed_comm_s + est.bubble_s == pytest.approx(est.step_time_s)
    assert est.comm_s >= est.exposed_comm_s >= est.dp_wait_s >= 0


# ------------------------------------------------------------------ the same groups and prices

@pytest.mark.parametrize("sizes,placement", [
    ({"tp": 2, "cp": 1, "ep": 1, "dp": 2, "pp": 2}, ("tp", "cp", "ep", "dp", "pp")),
    ({"tp": 2, "cp": 2, "ep": 2, "dp": 3, "pp": 2}, ("dp", "tp", "pp", "cp", "ep")),
    ({"tp": 1, "cp": 1, "ep": 4, "dp": 2, "pp": 3}, ("pp", "ep", "tp", "dp", "cp"))])
def test_families_are_the_mesh_groups_of_each_stage(sizes, placement):
    mesh = Mesh(sizes, placement)
    key = (mesh.order, mesh.shape)
    stage = lambda g: mesh.coords(g[0])["pp"]  # noqa: E731
    for axis, axes in MESH_AXES_OF.items():
        if axis == "pp":
            continue
        groups = mesh.groups(axes)
        for block, size in (("all", 0), ("inner", 2), ("across", 2)):
            if block != "all" and len(groups[0]) % size:
                continue
            expect = groups if block == "all" else [
                b for g in groups for b in blocks(g, size)[block == "across"]]
            found = _families(key, axis, block, size)
            assert found == {s: [g for g in expect if stage(g) == s]
                             for s in sorted({stage(g) for g in expect})}


def test_prices_are_the_collective_layers(clusters):
    cluster = clusters(32)
    t = TrainingConfig(global_batch=32, parallelism={"tp": 4, "pp": 2})
    plan = resolve_plan(t, LLAMA, 32)
    pr = _pricer(cluster)
    for axis, stage, size in (("tp", 1, 3e7), ("dp", 0, 2.5e9), ("dp", 1, 1e3)):
        family = pr.family((_mesh_key(plan), axis, "all", 0, stage))
        assert pr.price((_mesh_key(plan), axis, "all", 0, stage), "all_reduce", size)[0] == \
            pytest.approx(collective_time_s(cluster, family[0], "all_reduce", size,
                                            groups=family), rel=1e-12)


@pytest.mark.parametrize("model,parallelism,seq_len", [
    ("llama3-8b", {"tp": 2, "pp": 4, "schedule": "1f1b-interleaved", "virtual_stages": 2,
                   "stage_layers": [3, 5, 4, 4, 4, 4, 5, 3]}, None),
    ("gpt3-175b", {"tp": 8, "pp": 4, "zero": 1, "sp": True}, None),
    ("mixtral-8x7b", {"tp": 2, "ep": 2, "pp": 2, "zero": 3, "shard_group": 2}, 4096),
    ("llama3-8b", {"tp": 4, "cp": 2, "zero": 2}, 8192),
    ("gpt3-175b", {"tp": 8, "pp": 4, "stage_layers": [1, 47, 47, 1]}, 2048)])   # 1 == 1
def test_canonical_stage_work_is_the_real_stage_work(clusters, model, parallelism, seq_len):
    cluster = clusters(16)
    model = get_model(model)
    t = TrainingConfig(global_batch=64, seq_len=seq_len, parallelism=parallelism)
    plan = resolve_plan(t, model, 16 if parallelism.get("tp") != 8 else 32)
    pr, bw = _pricer(cluster), cluster.memory_bw_Bps(cluster.devices[0])
    for vs in range(len(plan.stage_layers)):
        assert pr.chunk(model, plan, vs, t) == chunk_work(
            model, plan, vs, cluster.device, "bf16", "none", bw, attention=t.attention)
    for s in range(plan.pp):
        assert pr.stage(model, plan, s, "bf16", "adam") == (
            optimizer_work(model, plan, s, cluster.device, "bf16", "adam", bw),
            dp_comms(model, plan, s, "bf16"))


# ------------------------------------------------------------------ first principles

def test_one_device_is_microbatches_times_forward_and_backward_plus_optimizer(clusters):
    cluster = clusters(8)
    t = TrainingConfig(global_batch=4, parallelism={})
    plan = resolve_plan(t, LLAMA, 1)
    bw = cluster.memory_bw_Bps(cluster.devices[0])
    w = chunk_work(LLAMA, plan, 0, cluster.device, "bf16", "none", bw)
    opt = optimizer_work(LLAMA, plan, 0, cluster.device, "bf16", "adam", bw)
    est = estimate_step(LLAMA, plan, cluster, t)
    assert est.step_time_s == pytest.approx(4 * (w.fwd.seconds + w.bwd.seconds) + opt.seconds,
                                            rel=1e-12)
    assert est.comm_s == est.exposed_comm_s == est.bubble_s == 0.0


# eight equal layers, a 128-token vocabulary: the first and last stage weigh what the others
# do; wide enough that sending activations costs ~0.3% of a stage's compute
EVEN = ModelSpec("even", layers=8, hidden=8192, heads=64, vocab=128, seq_len=4096)


def _even(cluster, microbatches, **parallelism):
    t = TrainingConfig(global_batch=microbatches, parallelism={"pp": 4, **parallelism})
    return estimate_step(EVEN, resolve_plan(t, EVEN, 4), cluster, t)


@pytest.mark.parametrize("m", [4, 8, 16])
def test_1f1b_bubble_is_p_minus_1_over_m_plus_p_minus_1(clusters, m):
    cluster = clusters(8)
    est = _even(cluster, m)
    plan = resolve_plan(TrainingConfig(global_batch=m, parallelism={"pp": 4}), EVEN, 4)
    optimizer = optimizer_work(EVEN, plan, 0, cluster.device, "bf16", "adam",
                               cluster.memory_bw_Bps(cluster.devices[0])).seconds
    assert est.bubble_s / (est.step_time_s - optimizer) == pytest.approx(3 / (m + 3), rel=0.03)


def test_interleaving_divides_the_bubble_by_the_chunks(clusters):
    plain = _even(clusters(8), 8)
    interleaved = _even(clusters(8), 8, schedule="1f1b-interleaved", virtual_stages=2)
    assert plain.bubble_s / interleaved.bubble_s == pytest.approx(2.0, rel=0.1)
    assert interleaved.step_time_s < plain.step_time_s


@pytest.mark.parametrize("parallelism", [{"tp": 8, "zero": 1}, {"tp": 4, "pp": 2},
                                         {"tp": 2, "pp": 2, "zero": 3},
                                         {"tp": 8, "zero": 2, "shard_group": 2}])
def test_more_data_parallel_bandwidth_never_slows_a_step(parallelism):
    t = TrainingConfig(global_batch=64, parallelism=parallelism)
    plan = resolve_plan(t, LLAMA, 32)
    steps = [estimate_step(LLAMA, plan, build_cluster(
        "dgx-h100", devices=32, overrides={"scale_out.bandwidth": f"{bw} GB/s"}), t).step_time_s
        for bw in (3.125, 6.25, 12.5, 25, 50, 100)]
    assert all(a >= b - 1e-12 for a, b in zip(steps, steps[1:]))
    assert steps[0] > steps[-1]


def test_closed_form_pipeline_of_equal_stages():
    assert pipeline_span_s("1f1b", [[1.0]] * 8, [[2.0]] * 8, 16) == pytest.approx(23 * 3.0)
    assert pipeline_span_s("gpipe", [[1.0]] * 8, [[2.0]] * 8, 16) == pytest.approx(23 * 3.0)
    # interleaved: (m v + p - 1) chunk slots
    assert pipeline_span_s("1f1b-interleaved", [[0.25] * 4] * 8, [[0.5] * 4] * 8, 16) == \
        pytest.approx((16 * 4 + 7) * 0.75)


def _replay(name, p, m, v, fwd, bwd):
    """Exact end of stage 0: every action starts when its stage is free and its input has
    arrived (slots include the receive, as in the flow program)."""
    acts, done, free, pos = schedule(name, p, m, v), {}, [0.0] * p, [0] * p
    while any(pos[s] < len(acts[s]) for s in range(p)):
        for s in range(p):
            while pos[s] < len(acts[s]):
                kind, c, mb = acts[s][pos[s]]
                src = (previous_virtual_stage(s, c, p) if kind == "F"
                       else next_virtual_stage(s, c, p, v))
                if src is not None and (kind, *src, mb) not in done:
                    break
                start = max(free[s], done[(kind, *src, mb)] if src else 0.0)
                free[s] = done[(kind, s, c, mb)] = start + (fwd if kind == "F" else bwd)[s][c]
                pos[s] += 1
    return free[0]


def test_closed_form_is_a_tight_lower_bound_of_the_exact_schedule():
    rng = random.Random(7)
    for name, p, k, heavy in itertools.product(("1f1b", "gpipe", "1f1b-interleaved"),
                                               (2, 4, 8), (1, 2, 4), (0.0, 0.2, 0.5)):
        v = 2 if name == "1f1b-interleaved" else 1
        m = p * k
        fwd = [[1.0 + 0.05 * rng.random() for _ in range(v)] for _ in range(p)]
        fwd[0][0] *= 7 / 8                 # one layer fewer on the ends, logits on the last
        fwd[-1][-1] = fwd[-1][-1] * 7 / 8 + heavy
        bwd = [[2 * f for f in row] for row in fwd]
        exact = _replay(name, p, m, v, fwd, bwd)
        closed = pipeline_span_s(name, fwd, bwd, m)
        assert exact * 0.96 <= closed <= exact * (1 + 1e-12), (name, p, m, heavy)


def test_closed_form_with_hops_of_unequal_cost():
    # stages inside and across nodes: receives of 2% or 30% of a forward, m = 4p
    rng = random.Random(11)
    for name, p in itertools.product(("1f1b", "1f1b-interleaved"), (2, 4, 8)):
        v = 2 if name == "1f1b-interleaved" else 1
        for _ in range(10):
            hop = [rng.choice((0.02, 0.3)) for _ in range(p)]
            fwd = [[1.0 + (hop[s] if s or c else 0.0) for c in range(v)] for s in range(p)]
            bwd = [[2.0 + (hop[(s + 1) % p] if s < p - 1 or c < v - 1 else 0.0)
                    for c in range(v)] for s in range(p)]
            exact = _replay(name, p, 4 * p, v, fwd, bwd)
            assert exact * 0.95 <= pipeline_span_s(name, fwd, bwd, 4 * p) <= exact * (1 + 1e-12)
