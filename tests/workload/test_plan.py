"""resolve_plan: every infeasible case names its numbers; feasible plans come out right."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustersim.config.experiment import TrainingConfig
from clustersim.workload.mesh import mesh_for_plan
from clustersim.workload.models import ModelSpec, get_model
from clustersim.workload.plan import Infeasible, ParallelPlan, resolve_plan, split_layers


def training(global_batch=64, micro_batch=1, seq_len=None, **parallelism):
    return TrainingConfig(global_batch=global_batch, micro_batch=micro_batch, seq_len=seq_len,
                          parallelism=parallelism)


def infeasible(t, model, devices):
    with pytest.raises(Infeasible) as err:
        resolve_plan(t, model, devices)
    assert err.value.reason == str(err.value)
    return err.value.reason


# ------------------------------------------------------------------ feasible plans

def test_megatron_gpt3_plan():
    plan = resolve_plan(training(1536, tp=8, pp=16, schedule="1f1b-interleaved",
                                 virtual_stages=2, sp=True), get_model("gpt3-175b"), 1024)
    assert (plan.dp, plan.num_microbatches, plan.seq_len) == (8, 192, 2048)
    assert plan.stage_layers == (3,) * 32 and plan.devices == 1024
    assert plan.layers_on_stage(0) == 6 and plan.virtual_stages_of(0) == (0, 16)
    assert plan.shard.sp and plan.shard_group == 8


def test_dp_given_explicitly_and_defaults():
    model = get_model("llama3-8b")
    assert resolve_plan(training(64, tp=2, dp=4), model, 8).dp == 4
    assert resolve_plan(training(64, tp=2), model, 8).dp == 4


def test_kv_heads_replicated_when_tp_is_a_multiple():
    plan = resolve_plan(training(64, tp=16), get_model("llama3-8b"), 16)  # 8 KV heads
    assert plan.tp == 16


def test_uneven_default_split_puts_extra_layers_in_the_middle():
    plan = resolve_plan(training(1536, tp=8, pp=16), get_model("llama3-405b"), 1024)
    assert plan.stage_layers[0] == plan.stage_layers[-1] == 7   # as Meta trained it
    assert sum(plan.stage_layers) == 126


def test_explicit_stage_layers_and_zero_with_one_replica():
    plan = resolve_plan(training(8, pp=2, zero=1, stage_layers=[10, 22]),
                        get_model("llama3-8b"), 2)
    assert plan.stage_layers == (10, 22) and plan.dp == 1 and plan.zero == 1


def test_expert_parallel_carved_out_of_dp_and_replicated_over_cp():
    plan = resolve_plan(training(64, ep=8, cp=2, seq_len=4096), get_model("mixtral-8x7b"), 16)
    assert (plan.dp, plan.cp, plan.ep, plan.expert_dp) == (8, 2, 8, 2)
    assert mesh_for_plan(plan).sizes == {"tp": 1, "cp": 2, "ep": 8, "dp": 1, "pp": 1}


def test_hybrid_sharding_group():
    plan = resolve_plan(training(64, zero=3, shard_group=4), get_model("llama3-8b"), 16)
    assert plan.shard_group == 4 and plan.dp == 16


def test_seq_len_from_training_overrides_model():
    assert resolve_plan(training(8, seq_len=4096), get_model("llama3-8b"), 1).seq_len == 4096


# ------------------------------------------------------------------ infeasible plans

def test_product_must_match_devices():
    reason = infeasible(training(64, tp=2, pp=2, dp=3), get_model("llama3-8b"), 16)
    assert "2 x 2 x 3 x 1 = 12" in reason and "16 devices" in reason
    reason = infeasible(training(64, tp=8, pp=2), get_model("llama3-8b"), 24)
    assert "= 16" in reason and "24 devices" in reason


def test_tp_must_divide_heads():
    reason = infeasible(training(64, tp=3), get_model("llama3-8b"), 3)
    assert "tp=3" in reason and "32 attention heads" in reason and "1, 2, 4, 8" in reason


def test_tp_against_kv_heads():
    model = ModelSpec("gqa", layers=4, hidden=768, heads=24, kv_heads=6, vocab=100)
    reason = infeasible(training(64, tp=4), model, 4)
    assert "tp=4" in reason and "6 KV heads" in reason


def test_tp_must_divide_ffn():
    model = ModelSpec("odd", layers=4, hidden=512, heads=8, ffn_hidden=1020, vocab=100)
    reason = infeasible(training(64, tp=8), model, 8)
    assert "ffn_hidden=1020" in reason


def test_global_batch_must_divide():
    reason = infeasible(training(100, micro_batch=2, tp=2), get_model("llama3-8b"), 16)
    assert "global_batch=100" in reason and "2 x 8 = 16" in reason and "96 or 112" in reason


def test_ep_checks():
    mix = get_model("mixtral-8x7b")
    assert "8 experts" in infeasible(training(64, ep=3), mix, 6)
    assert "ep=8 must divide dp=4" in infeasible(training(64, ep=8, tp=2), mix, 8)
    assert "no experts" in infeasible(training(64, ep=2), get_model("llama3-8b"), 2)


def test_ep_dividing_dp_x_cp_but_not_dp_is_infeasible():
    # ep=4 divides dp x cp = 2 x 2 but not dp=2: the mesh nests ep inside dp, so the plan
    # used to pass resolve_plan and then fail in mesh_for_plan with a bare ValueError
    t = training(16, tp=2, cp=2, ep=4, seq_len=4096)
    reason = infeasible(t, get_model("mixtral-8x7b"), 8)
    assert "ep=4 must divide dp=2" in reason and "ep in 1, 2" in reason


@given(st.sampled_from([1, 2, 4, 8, 16, 32]), st.sampled_from([1, 2, 4]),
       st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2]))
def test_every_feasible_moe_plan_has_a_mesh(devices, tp, cp, ep, pp):
    """What resolve_plan accepts, the program builder and the analytic model can lay out."""
    t = training(64, tp=tp, cp=cp, ep=ep, pp=pp, seq_len=4096)
    try:
        plan = resolve_plan(t, get_model("mixtral-8x7b"), devices)
    except Infeasible:
        return
    assert plan.dp % plan.ep == 0
    assert mesh_for_plan(plan).size == plan.devices == devices


def test_seq_len_must_split_over_cp():
    reason = infeasible(training(64, cp=3, seq_len=1000), get_model("llama3-8b"), 3)
    assert "seq_len=1000" in reason and "2 x cp = 6" in reason


def test_sequence_parallel_splits_hidden_when_tokens_do_not_divide():
    """PaLM's 12-way model axis with 2048-token sequences: GSPMD shards the activations
    along the hidden dimension (18432 / 12), so an uneven token split is no obstacle."""
    model = get_model("palm-540b")
    plan = resolve_plan(training(2048, tp=12, sp=True, seq_len=2048), model, 12 * 512)
    assert plan.shard.sp and model.hidden % 12 == 0


def test_more_stages_than_layers():
    reason = infeasible(training(64, pp=8, schedule="1f1b-interleaved", virtual_stages=5),
                        get_model("llama3-8b"), 8)
    assert "8 x 5 = 40" in reason and "32 layers" in reason


def test_interleaved_schedule_requirements():
    model = get_model("llama3-8b")
    assert "pp > 1" in infeasible(training(64, schedule="1f1b-interleaved",
                                           virtual_stages=2), model, 1)
    assert "virtual_stages >= 2" in infeasible(training(64, pp=2,
                                                        schedule="1f1b-interleaved"), model, 2)
    reason = infeasible(training(6, pp=4, schedule="1f1b-interleaved", virtual_stages=2),
                        model, 4)
    assert "(6)" in reason and "pp=4" in reason
    assert "1f1b-interleaved" in infeasible(training(64, pp=2, virtual_stages=2), model, 2)


def test_stage_layers_must_fit():
    model = get_model("llama3-8b")
    assert "sum to 30" in infeasible(training(64, pp=2, stage_layers=[10, 20]), model, 2)
    reason = infeasible(training(64, pp=2, stage_layers=[10, 10, 12]), model, 2)
    assert "3 stages" in reason and "2 x 1 = 2" in reason


def test_shard_group_must_divide_dp():
    reason = infeasible(training(64, zero=3, shard_group=3), get_model("llama3-8b"), 8)
    assert "shard_group=3" in reason and "dp=8" in reason


# ------------------------------------------------------------------ layer splitting

@given(st.integers(1, 200), st.integers(1, 64))
def test_split_layers_is_balanced_and_middle_heavy(layers, stages):
    if stages > layers:
        with pytest.raises(ValueError):
            split_layers(layers, stages)
        return
    counts = split_layers(layers, stages)
    assert sum(counts) == layers and len(counts) == stages
    assert max(counts) - min(counts) <= 1
    extra = layers % stages
    if 0 < extra <= stages - 2:   # the first and last stage keep the smaller count
        assert counts[0] == counts[-1] == min(counts)
    heavy = [i for i, c in enumerate(counts) if c > layers // stages]
    assert heavy == list(range(heavy[0], heavy[0] + len(heavy))) if heavy else True
    centre = (stages - 1) / 2          # the heavy stages sit around the middle
    assert all(abs(i - centre) <= (extra + 1) / 2 for i in heavy)


def test_layers_on_stage_sums_its_virtual_stages():
    plan = ParallelPlan(pp=2, virtual_stages=2, schedule="1f1b-interleaved",
                        stage_layers=(1, 2, 3, 4))
    assert plan.layers_on_stage(0) == 1 + 3 and plan.layers_on_stage(1) == 2 + 4
    with pytest.raises(ValueError):
        plan.layers_on_stage(2)


def test_zb_v_cuts_the_model_in_2p_chunks_laid_out_as_a_v():
    """Stage s holds chunks s and 2p - 1 - s: stored as chunks[:p] + reversed(chunks[p:]),
    so stage 0 holds the first and the last chunk (embedding and output layer); a plan that
    cannot be cut so is refused with the fix."""
    from clustersim.workload.memory import stage_parameters  # noqa: local, beside its use
    model = get_model("llama3-8b")
    t = TrainingConfig(global_batch=16, parallelism={"pp": 4, "schedule": "zb-v"})
    plan = resolve_plan(t, model, 4)
    chunks = split_layers(32, 8)
    assert plan.virtual_stages == 2 and plan.stage_layers == chunks[:4] + chunks[4:][::-1]
    params = [stage_parameters(model, plan, s).total for s in range(4)]
    table = model.vocab * model.hidden
    assert params[0] - params[1] == pytest.approx(2 * table + model.hidden, rel=1e-9)
    bad = TrainingConfig(global_batch=16, parallelism={"pp": 4, "schedule": "zb-v",
                                                       "stage_layers": [8, 8, 8, 8]})
    with pytest.raises(Infeasible, match="lists the 8 chunks in model order"):
        resolve_plan(bad, model, 4)
    with pytest.raises(Infeasible, match="pp >= 2"):
        resolve_plan(TrainingConfig(global_batch=16, parallelism={"schedule": "zb-v"}),
                     model, 1)
