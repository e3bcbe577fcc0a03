"""Steps against first principles: one device is micro-batches x (forward + backward) plus the
optimizer; the 1F1B bubble is (p - 1) / (m + p - 1) of the pipeline's time and interleaving
divides it by the chunks (Narayanan et al. SC'21); an all-reduce-bound step costs the ring's
alpha-beta time; more data-parallel bandwidth never slows a step."""

from __future__ import annotations

import pytest

from clustersim.collectives import collective_time_s
from clustersim.config.experiment import SimulationConfig, TrainingConfig
from clustersim.fidelity import estimate_step, simulate_flow
from clustersim.network import build_cluster
from clustersim.step import plan_step
from clustersim.workload import ModelSpec, get_model, resolve_plan

LLAMA = get_model("llama3-8b")
ANALYTIC = SimulationConfig(fidelity="analytic")


def run(cluster, model, global_batch, parallelism, fidelity=estimate_step, devices=None,
        **training):
    t = TrainingConfig(global_batch=global_batch, parallelism=parallelism, **training)
    plan = resolve_plan(t, model, devices or len(cluster.devices))
    step = plan_step(model, plan, cluster, t)
    return step, fidelity(step, cluster, ANALYTIC)


@pytest.mark.parametrize("fidelity", [estimate_step, simulate_flow])
def test_one_device_is_microbatches_times_forward_and_backward_plus_optimizer(fidelity):
    one = build_cluster("dgx-h100", devices=1)
    step, out = run(one, LLAMA, 4, {}, fidelity)
    stage = step.stages[0]
    forward, backward = (stage.slots[i].work.seconds for i in (0, 1))
    optimizer = stage.epilogue[0].work.seconds
    assert out.step_time_s == pytest.approx(4 * (forward + backward) + optimizer, rel=1e-12)
    assert out.comm_s == out.exposed_comm_s == out.bubble_s == 0.0


# eight equal layers, a 128-token vocabulary: the first and last stage weigh what the others
# do; wide enough that sending activations costs ~0.3% of a stage's compute
EVEN = ModelSpec("even", layers=8, hidden=8192, heads=64, vocab=128, seq_len=4096)


def _even(microbatches, **parallelism):
    cluster = build_cluster("dgx-h100", devices=8)
    return run(cluster, EVEN, microbatches, {"pp": 4, **parallelism}, devices=4)


@pytest.mark.parametrize("m", [4, 8, 16])
def test_1f1b_bubble_is_p_minus_1_over_m_plus_p_minus_1(m):
    step, est = _even(m)
    optimizer = step.stages[0].epilogue[0].work.seconds
    assert est.bubble_s / (est.step_time_s - optimizer) == pytest.approx(3 / (m + 3), rel=0.03)


def test_interleaving_divides_the_bubble_by_the_chunks():
    _, plain = _even(8)
    _, interleaved = _even(8, schedule="1f1b-interleaved", virtual_stages=2)
    assert plain.bubble_s / interleaved.bubble_s == pytest.approx(2.0, rel=0.1)
    assert interleaved.step_time_s < plain.step_time_s


def test_a_blocking_gradient_all_reduce_costs_what_the_collective_costs():
    """16-way data parallelism on 5 GB/s NICs, gradients reduced after the backward: the
    exposed communication is the all-reduce of every gradient (in fp32, as Megatron reduces
    bf16 runs' gradients), priced by the collectives."""
    cluster = build_cluster("dgx-h100", devices=16, overrides={"scale_out.bandwidth": "5 GB/s"})
    step, est = run(cluster, LLAMA, 16, {"tp": 1}, seq_len=256,
                    overlap={"grad_reduce": False})
    grads = 4 * LLAMA.total_params
    alone = collective_time_s(cluster, cluster.devices, "all_reduce", grads)
    assert est.exposed_comm_s == pytest.approx(alone, rel=0.01)
    assert est.exposed_comm_s > 0.8 * est.step_time_s


@pytest.mark.parametrize("parallelism", [{"tp": 8, "zero": 1}, {"tp": 4, "pp": 2},
                                         {"tp": 2, "pp": 2, "zero": 3},
                                         {"tp": 8, "zero": 2, "shard_group": 2}])
def test_more_data_parallel_bandwidth_never_slows_a_step(parallelism):
    steps = []
    for bw in (3.125, 6.25, 12.5, 25, 50, 100):
        cluster = build_cluster("dgx-h100", devices=32,
                                overrides={"scale_out.bandwidth": f"{bw} GB/s"})
        steps.append(run(cluster, LLAMA, 64, parallelism)[1].step_time_s)
    assert all(a >= b - 1e-12 for a, b in zip(steps, steps[1:]))
    assert steps[0] > steps[-1]


# Zero-bubble schedules (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, Table 2)
# on the even model with communication priced out (1000 TB/s links): per stage times T_F,
# T_B (input gradient) and T_W (weight gradient) read off a middle stage's slots.
FREE = {"scale_up.bandwidth": "1000 TB/s", "scale_out.bandwidth": "1000 TB/s"}


def _free(microbatches, schedule):
    cluster = build_cluster("dgx-h100", devices=8, overrides=FREE)
    step, est = run(cluster, EVEN, microbatches, {"pp": 4, "schedule": schedule}, devices=4)
    times = {}
    for slot in step.stages[1].slots:
        times.setdefault(slot.kind, slot.work.seconds)
    return step, est, times


def test_the_weight_gradient_is_the_wgrad_gemms():
    """W of a layer is one GEMM per weight matrix: 2 x tokens x its 12 h^2 weights (GELU MLP,
    multi-head attention), as many FLOPs as the input-gradient GEMMs in B."""
    step, _, _ = _free(8, "zb-h1")
    w = next(s for s in step.stages[1].slots if s.kind == "W")
    assert w.work.flops == pytest.approx(2 * 2 * 4096 * 12 * EVEN.hidden ** 2, rel=1e-9)
    assert w.receive is None and w.send is None and not w.calls


@pytest.mark.parametrize("m", [8, 16])
@pytest.mark.parametrize("schedule", ["1f1b", "zb-h1", "zb-h2"])
def test_zero_bubble_bubbles_are_the_published_formulas(schedule, m):
    """1F1B: (p - 1)(T_F + T_B + T_W); ZB-H1: (p - 1)(T_F + T_B - T_W); ZB-H2:
    (p - 1)(T_F + T_B - 2 T_W), but never under the (p - 1) T_F a stage waits for its first
    forward: clustersim ends a step at a synchronous optimizer step, where the paper's
    post-validation lets the next step's forwards fill it."""
    step, est, t = _free(m, schedule)
    p, f, b, w = 4, t["F"], t["B"], t.get("W", 0.0)
    bubble = {"1f1b": (p - 1) * (f + b), "zb-h1": (p - 1) * (f + b - w),
              "zb-h2": (p - 1) * max(f, f + b - 2 * w)}[schedule]
    optimizer = step.stages[0].epilogue[0].work.seconds
    pipeline = est.step_time_s - optimizer
    assert est.bubble_s / pipeline == pytest.approx(bubble / (bubble + m * (f + b + w)),
                                                    rel=0.05)


def test_zb_h1_is_faster_than_1f1b_and_zb_h2_than_zb_h1():
    steps = [_free(8, s)[1].step_time_s for s in ("1f1b", "zb-h1", "zb-h2")]
    assert steps[0] > steps[1] > steps[2]


def test_dualpipe_bubble_is_the_reports_formula_plus_the_fill():
    """DeepSeek-V3 report, Table 2: DualPipe's bubble is (p/2 - 1)(T_F&B + T_B - 3 T_W),
    with T_F&B = T_F + T_B here (no communication to hide). Like ZB-H2's, that count leaves
    out the (p/2 - 1) T_F the middle stages wait for their first forward, which a step ending
    at a synchronous optimizer step keeps. Its activations: p + 1 micro-batches of a model
    stage; its parameters: two model stages a device."""
    p, m = 4, 16
    step, est, t = _free(m, "dualpipe")
    f, b, w = t["F"], t["B"], t["W"]
    bubble = (p / 2 - 1) * ((f + b) + b - 3 * w) + (p / 2 - 1) * f
    optimizer = next(x for x in step.stages[0].epilogue if hasattr(x, "work"))  # after the
    pipeline = est.step_time_s - optimizer.work.seconds     # mirror sum (free links here)
    # the idle time of a middle stage: the critical path runs through an end stage, which
    # starts at once, while the fill is the middle stages'
    idle = pipeline - m * (f + b + w)
    # within 8%: a pair here runs its two slots back to back, not fused as the report's
    # kernels are, so where the W slots fill the bubble depends a little on T_W / T_B (5.6%
    # off at the committed H100 calibration, 1.4% at the previous one)
    assert idle / pipeline == pytest.approx(bubble / (bubble + m * (f + b + w)), rel=0.08)
    assert [step.plan.layers_on_stage(s) for s in range(p)] == [2 * EVEN.layers // p] * p
    _, zb, _ = _free(m, "zb-h1")
    assert est.step_time_s < zb.step_time_s
