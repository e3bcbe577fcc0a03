"""The step plan's content against the schemes it implements: every gradient reduced exactly
once per step (ZeRO 0/1/2), every layer's parameters gathered before each use (ZeRO 3), the
buckets, pieces, precisions and defaults the frameworks' own code uses
(clustersim.step.frameworks), and one-rank groups left out."""

from __future__ import annotations

import pytest

from clustersim.config.experiment import TrainingConfig
from clustersim.errors import InputError
from clustersim.network import build_cluster
import math

from clustersim.step import MAX_PIECES, Call, Dep, plan_step
from clustersim.workload import get_model, resolve_plan
from clustersim.workload.flops import layer_params_on_rank
from clustersim.workload.groups import group_size
from clustersim.workload.memory import stage_parameters

LLAMA = get_model("llama3-8b")


@pytest.fixture(scope="module")
def cluster():
    return build_cluster("dgx-h100", devices=32)


OVERLAP = {"grad_reduce": True, "param_gather": True}


def step_of(cluster, parallelism, model=LLAMA, global_batch=32, **training):
    training.setdefault("overlap", OVERLAP)
    t = TrainingConfig(global_batch=global_batch, parallelism=parallelism, **training)
    plan = resolve_plan(t, model, len(cluster.devices))
    return plan_step(model, plan, cluster, t)


def calls_of(stage, name_part: str = "", where: str = "all"):
    """Every call of a stage with a multiplicity: (call, times it runs in the step)."""
    found = []
    runs = {}
    for index, _ in stage.order:
        runs[index] = runs.get(index, 0) + 1
    for index, slot in enumerate(stage.slots):
        n = runs.get(index, 0)
        items = list(slot.calls) + list(slot.receive_calls)
        for piece in slot.pieces:
            items += list(piece.prefetch) + list(piece.then)
        found += [(c, n) for c in items]
    found += [(c, 1) for c in stage.prologue]
    found += [(c, 1) for c in stage.epilogue if isinstance(c, Call)]
    return [(c, n) for c, n in found if name_part in c.name]


def params(step, stage):
    return stage_parameters(step.model, step.plan, stage).dense


def megatron_buckets(step, stage):
    """megatron/core/distributed: buckets of max(40M, 1M x dp) elements, on the first stage."""
    if stage:
        return 1
    return min(MAX_PIECES, math.ceil(params(step, 0) / max(40e6, 1e6 * step.plan.dp)))


@pytest.mark.parametrize("zero,op", [(0, "all_reduce"), (1, "reduce_scatter")])
def test_megatron_reduces_every_gradient_once_per_step_in_fp32_buckets(cluster, zero, op):
    step = step_of(cluster, {"tp": 4, "pp": 2, "zero": zero})
    for stage in step.stages:
        reduces = [(c, n) for c, n in calls_of(stage, "grad_")
                   if c.op == op and c.family.axis == "dp"]
        # --bf16 keeps fp32 main gradients and reduces them: 4 bytes an element
        assert sum(c.bytes * c.count * n for c, n in reduces) == pytest.approx(
            4 * params(step, stage.stage))
        assert len(reduces) == megatron_buckets(step, stage.stage)
        assert all(c.dep == Dep.BUCKETED for c, _ in reduces)
        assert {str(c.family) for c, _ in reduces} == {"dp"}


def test_deepspeed_zero_1_all_reduces_16_bit_gradients_and_gathers_after_the_step(cluster):
    """DeepSpeed's ZeRO-1/2 'reduce-scatter' all-reduces each 5e8-element bucket and keeps
    the rank's slice; the parameters are all-gathered after the optimizer, blocking."""
    step = step_of(cluster, {"tp": 4, "pp": 2, "zero": 1}, framework="deepspeed")
    for stage in step.stages:
        reduces = [(c, n) for c, n in calls_of(stage, "grad_") if c.family.axis == "dp"]
        assert {c.op for c, _ in reduces} == {"all_reduce"}
        assert sum(c.bytes * n for c, n in reduces) == pytest.approx(2 * params(step,
                                                                             stage.stage))
        assert stage.prologue == ()
        gather = [x for x in stage.epilogue if isinstance(x, Call) and x.op == "all_gather"]
        assert len(gather) == 1 and gather[0].dep == Dep.BLOCKING


def test_zero_1_gathers_the_updated_parameters_from_the_step_start(cluster):
    step = step_of(cluster, {"tp": 4, "pp": 2, "zero": 1})
    for stage in step.stages:
        n = megatron_buckets(step, stage.stage)
        assert len(stage.prologue) == n
        assert sum(c.bytes for c in stage.prologue) == pytest.approx(2 * params(step,
                                                                                stage.stage))
        assert all(c.dep == Dep.QUEUED and c.op == "all_gather" for c in stage.prologue)
        first_forward = stage.slots[stage.order[[stage.slots[s].kind for s, _ in
                                                 stage.order].index("F")][0]]
        assert [p.compute.waits_for for p in first_forward.pieces] == [(b,) for b in
                                                                       range(n)]


def test_megatron_core_defaults_to_no_overlap():
    """distributed_data_parallel_config.py: overlap_grad_reduce and overlap_param_gather off."""
    step = step_of(build_cluster("dgx-h100", devices=32), {"tp": 8, "zero": 1}, overlap={})
    stage = step.stages[0]
    assert stage.prologue == ()
    # no slot reduces: the drained pipeline does, once
    assert [c for c, _ in calls_of(stage, "grad_reduce_scatter")] == [stage.epilogue[0]]
    assert stage.epilogue[0].dep == Dep.DRAIN


def test_zero_1_without_overlap_gathers_after_the_optimizer(cluster):
    step = step_of(cluster, {"tp": 8, "zero": 1},
                   overlap={"param_gather": False, "grad_reduce": False})
    stage = step.stages[0]
    assert stage.prologue == ()
    # reduce once the pipeline has drained, the optimizer step, then gather the parameters
    assert [type(x).__name__ for x in stage.epilogue] == ["Call", "Compute", "Call"]
    assert stage.epilogue[0].name == "grad_reduce_scatter"
    assert stage.epilogue[0].dep == Dep.DRAIN and stage.epilogue[2].dep == Dep.BLOCKING


def test_zero_2_reduces_after_every_backward(cluster):
    step = step_of(cluster, {"tp": 8, "zero": 2})
    stage = step.stages[0]
    m = step.plan.num_microbatches
    reduces = calls_of(stage, "grad_reduce_scatter")
    assert sum(n for _, n in reduces) == m
    assert sum(c.bytes * n for c, n in reduces) == pytest.approx(m * 4 * params(step, 0))
    assert all(c.dep == Dep.SIDE for c, _ in reduces)


@pytest.mark.parametrize("framework,per_layer,grad_B", [("megatron-core", 1, 4),
                                                        ("deepspeed", 7, 2), ("jax", 1, 4)])
def test_zero_3_gathers_each_layer_before_each_use_and_reduces_it_after(
        cluster, framework, per_layer, grad_B):
    """FSDP-style units gather a block at once; DeepSpeed gathers each of Llama's seven
    linear layers (partitioned_param_coordinator.py)."""
    step = step_of(cluster, {"tp": 4, "pp": 2, "zero": 3}, framework=framework)
    m = step.plan.num_microbatches
    dense, _ = layer_params_on_rank(LLAMA, 4, 1)
    for stage in step.stages:
        layers = step.plan.layers_on_stage(stage.stage)
        gathers = calls_of(stage, "zero3_param_all_gather")
        # forward and backward of every micro-batch gather every layer once
        assert sum(c.count * n for c, n in gathers) == 2 * m * layers * per_layer
        assert all(c.bytes == pytest.approx(2 * dense / per_layer) and
                   c.dep == Dep.PREFETCHED for c, _ in gathers)
        reduces = calls_of(stage, "zero3_grad_reduce_scatter")
        assert sum(c.count * n for c, n in reduces) == m * layers
        assert all(c.bytes == grad_B * dense for c, _ in reduces)
        for slot in stage.slots:
            assert len(slot.pieces) == min(layers * per_layer, MAX_PIECES)


def test_fsdp_with_pipelining_keeps_forward_parameters_and_reduces_on_the_last_microbatch(
        cluster):
    """torchtitan: reshard_after_forward False with PP; gradients synced on the last
    backward only (set_requires_gradient_sync)."""
    step = step_of(cluster, {"tp": 4, "pp": 2, "zero": 3}, framework="fsdp")
    for stage in step.stages:
        layers = step.plan.layers_on_stage(stage.stage)
        gathers = calls_of(stage, "zero3_param_all_gather")
        assert sum(c.count * n for c, n in gathers) == step.plan.num_microbatches * layers
        assert sum(c.count * n for c, n in calls_of(stage, "zero3_grad_reduce")) == layers


def test_hybrid_sharding_reduces_within_blocks_and_sums_across(cluster):
    step = step_of(cluster, {"tp": 4, "zero": 1, "shard_group": 2})
    plan = step.plan
    reduces = [(c, n) for c, n in calls_of(step.stages[0], "grad_reduce_scatter")
               if c.op == "reduce_scatter"]
    across = calls_of(step.stages[0], "_across")
    assert {str(c.family) for c, _ in reduces} == {"dp/inner"}
    assert group_size(plan, "dp", "inner") == 2 and group_size(plan, "dp", "across") == 4
    assert len(across) == len(reduces)
    for (rs, _), (ar, _) in zip(reduces, across):
        assert ar.dep == Dep.CHAINED and ar.bytes == pytest.approx(rs.bytes / 2)


def test_tied_embeddings_are_summed_by_the_first_and_last_stage(cluster):
    step = step_of(cluster, {"tp": 8, "pp": 4}, model=get_model("gpt3-175b"), seq_len=2048)
    tied = [[c for c, _ in calls_of(s, "tied")] for s in step.stages]
    assert [len(t) for t in tied] == [1, 0, 0, 1]
    assert tied[0][0].bytes == tied[3][0].bytes > 0 and str(tied[0][0].family) == "tied"


@pytest.mark.parametrize("zero", [0, 1])
def test_dualpipe_mirror_stages_sum_their_copies_gradients(cluster, zero):
    """DualPipe holds every model stage twice (stages s and pp-1-s): each pair all-reduces,
    once per step and before the optimizer, what it holds after the data-parallel reduction
    (the whole gradient, or the ZeRO shard); 1F1B has no such call."""
    par = {"tp": 2, "pp": 4, "zero": zero, "schedule": "dualpipe"}
    step = step_of(cluster, par, global_batch=32)
    plan = step.plan
    for stage in step.stages:
        mirror = [c for c in stage.epilogue if isinstance(c, Call) and c.family.axis == "mirror"]
        params = stage_parameters(LLAMA, plan, stage.stage)
        shard = 1 if zero == 0 else group_size(plan, "dp")
        assert len(mirror) == 1 and mirror[0].op == "all_reduce"
        assert mirror[0].bytes == pytest.approx(params.dense / shard * 4)  # fp32 grads (mcore)
        assert stage.epilogue.index(mirror[0]) < [type(x).__name__ for x in
                                                  stage.epilogue].index("Compute")
    one = step_of(cluster, {**par, "schedule": "1f1b"}, global_batch=32)
    assert not [c for s in one.stages for c in s.epilogue
                if isinstance(c, Call) and c.family.axis == "mirror"]


def test_one_rank_groups_have_no_calls(cluster):
    step = step_of(cluster, {"tp": 8, "pp": 4, "zero": 1}, global_batch=8)  # dp = 1
    for stage in step.stages:
        assert not [c for c, _ in calls_of(stage) if c.family.axis in ("dp", "edp")]


def test_tp_comm_overlap_runs_tp_collectives_beside_the_compute(cluster):
    step = step_of(cluster, {"tp": 8, "sp": True}, overlap={"tp_comm": True})
    tp = [c for c, _ in calls_of(step.stages[0]) if c.family.axis == "tp"]
    assert tp and all(c.dep == Dep.OVERLAPPED and c.stream == "tp" for c in tp)


def test_offloaded_optimizer_steps_through_the_memory_links():
    pool = build_cluster("cxl-memory-pool", devices=8)
    for where, kinds in (("cxl", ["Offload", "Offload", "Compute", "Compute"]),
                         ("host", ["Offload", "Compute", "Offload", "Compute"])):
        step = step_of(pool, {"tp": 8}, global_batch=8, offload={"optimizer": where})
        epilogue = step.stages[0].epilogue
        assert [type(x).__name__ for x in epilogue] == kinds
        assert step.stages[0].offloaded_B == step.stages[0].memory.optimizer_states_B > 0
    with pytest.raises(InputError, match="needs a topology with"):
        step_of(build_cluster("dgx-h100", devices=8), {"tp": 8}, global_batch=8,
                offload={"optimizer": "cxl"})


def test_the_plan_prints_its_stages_slots_and_order(cluster):
    text = str(step_of(cluster, {"tp": 4, "pp": 2, "zero": 1}))
    assert text.count("stage ") >= 2 and "order: F0.0" in text and "prologue 0" in text
    assert "optimizer step" in text and "(bucketed, dp stream)" in text


def test_a_plan_larger_than_the_cluster_is_refused():
    small = build_cluster("dgx-h100", devices=8)
    t = TrainingConfig(global_batch=16, parallelism={"tp": 8})
    plan = resolve_plan(t, LLAMA, 16)
    with pytest.raises(ValueError, match="needs 16 devices"):
        plan_step(LLAMA, plan, small, t)
