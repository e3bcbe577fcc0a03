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
