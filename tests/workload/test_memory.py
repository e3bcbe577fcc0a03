"""Memory per device against the ZeRO paper and Korthikanti et al. 2022, computed here."""

import pytest

from clustersim.step import in_flight
from clustersim.workload.flops import Shard
from clustersim.workload.memory import layer_activation_bytes, memory_footprint, stage_parameters
from clustersim.workload.models import get_model
from clustersim.workload.plan import ParallelPlan

GPT3 = get_model("gpt3-175b")     # GELU 4h MLP, MHA, dropout: Korthikanti's setting
S, B, H, A, V = 2048, 1, 12288, 96, 50257
SBH = S * B * H


def act(shard, recompute="none", flash=False):
    return layer_activation_bytes(GPT3, shard, B, S, "bf16", recompute, flash)


def test_korthikanti_no_parallelism():
    assert act(Shard()) == pytest.approx(SBH * (34 + 5 * A * S / H))


@pytest.mark.parametrize("t", [2, 4, 8])
def test_korthikanti_tensor_parallel(t):
    assert act(Shard(tp=t)) == pytest.approx(SBH * (10 + 24 / t + 5 * A * S / (H * t)))


@pytest.mark.parametrize("t", [2, 8])
def test_korthikanti_tensor_and_sequence_parallel(t):
    assert act(Shard(tp=t, sp=True)) == pytest.approx(SBH / t * (34 + 5 * A * S / H))


def test_korthikanti_selective_and_full_recompute():
    t = 8
    assert act(Shard(tp=t, sp=True), "selective") == pytest.approx(SBH * 34 / t)
    assert act(Shard(tp=t), "full") == pytest.approx(2 * SBH)
    assert act(Shard(tp=t, sp=True), "full") == pytest.approx(2 * SBH / t)


def test_korthikanti_for_an_inline_gpt_with_dropout():
    """sbh (34 + 5as/h) for a GPT layer whose dropout comes from the experiment file."""
    from clustersim.config.experiment import ModelConfig
    from clustersim.workload.models import resolve_model

    gpt = resolve_model(ModelConfig(layers=24, hidden=2304, heads=24, vocab=51200,
                                    dropout=True))
    s, b, h, a = 2048, 16, 2304, 24
    materialized = layer_activation_bytes(gpt, Shard(), b, s, "bf16", flash_attention=False)
    assert materialized == 34 * s * b * h + 5 * a * s * s * b   # sbh (34 + 5as/h), exactly


@pytest.mark.parametrize("dropout, precision, per_score", [
    (True, "bf16", 2 + 1 + 2),     # softmax output P, dropout mask, dropout output P'
    (False, "bf16", 2),            # P only: PV and the softmax backward both read it
    (True, "fp32", 4 + 1 + 4),
])
def test_materialized_core_is_what_selective_recompute_drops(dropout, precision, per_score):
    from dataclasses import replace

    model = replace(GPT3, dropout=dropout)
    t = 4
    scores = A // t * S * S * B
    stored = layer_activation_bytes(model, Shard(tp=t), B, S, precision, "none", False)
    selective = layer_activation_bytes(model, Shard(tp=t), B, S, precision, "selective", False)
    assert stored - selective == per_score * scores


def test_flash_attention_keeps_only_the_log_sum_exp():
    t = 8
    no_core = act(Shard(tp=t, sp=True), "selective")
    assert act(Shard(tp=t, sp=True), flash=True) == pytest.approx(no_core + 4 * A / t * S * B)


def test_gqa_swiglu_terms():
    llama = get_model("llama3-8b")   # q = 4096, kv = 1024, f = 14336, no dropout
    s, h, q, kv, f = 8192, 4096, 4096, 1024, 14336
    expected = 2 * s * (4 * h + q + 2 * kv + q + 3 * f) + 4 * 32 * s
    assert layer_activation_bytes(llama, Shard(), 1, s) == pytest.approx(expected)


def stages(pp, layers, schedule="1f1b", v=1, m=64, **kw):
    return ParallelPlan(pp=pp, virtual_stages=v, schedule=schedule, num_microbatches=m,
                        stage_layers=(layers // (pp * v),) * (pp * v), seq_len=S, **kw)


def test_1f1b_first_stage_holds_all_layers_worth():
    """Korthikanti Sec. 4.2.3: with 1F1B the first stage stores p micro-batches of L/p layers."""
    plan = stages(8, 96, tp=8, sp=True)
    layer = act(Shard(tp=8, sp=True), "selective")
    mem = memory_footprint(GPT3, plan, recompute="selective", flash_attention=False, stage=0,
                           in_flight=in_flight(plan, 0))
    mask = SBH / 8 * 8          # the embedding's 1-byte dropout mask, 8 in flight
    assert mem.activations_B == pytest.approx(96 * layer + mask)


def test_interleaved_first_stage_matches_korthikanti():
    p, v = 8, 3
    plan = stages(p, 96, "1f1b-interleaved", v, tp=8, sp=True)
    assert in_flight(plan, 0).stage * plan.layers_on_stage(0) == pytest.approx(
        96 * (1 + (p - 1) / (p * v)))


def test_gpipe_holds_every_microbatch():
    plan = stages(4, 96, "gpipe", m=16)
    assert in_flight(plan, 0).stage == in_flight(plan, 3).stage == 16
    assert in_flight(plan, 0).first_chunk == in_flight(plan, 3).last_chunk == 16


def test_1f1b_stage_s_holds_p_minus_s():
    """Narayanan et al. 2021: the first stage of 1F1B holds p micro-batches, the last one."""
    plan = stages(4, 96, m=8)
    assert [in_flight(plan, s).stage for s in range(4)] == [4, 3, 2, 1]
    assert in_flight(plan, 0).first_chunk == 4 and in_flight(plan, 3).last_chunk == 1


def test_last_stage_output_layer_buffers():
    """Korthikanti Sec. 4.3: output layer 4sbh/t (1 + v/h) with SP, plus the logit gradient."""
    t = 8
    plan = stages(8, 96, tp=t, sp=True)
    layer = act(Shard(tp=t, sp=True), "selective")
    mem = memory_footprint(GPT3, plan, recompute="selective", flash_attention=False, stage=7,
                           in_flight=in_flight(plan, 7))
    v_rank = -(-V // t)
    padded = v_rank * t           # Megatron pads the vocabulary to a multiple of t
    assert mem.activations_B == pytest.approx(12 * layer * 1 + 4 * SBH / t * (1 + padded / H))
    assert mem.temporary_B == pytest.approx(2 * S * B * v_rank)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_zero_model_states(zero):
    """ZeRO paper Sec. 3/5: 2+2+12 bytes/param; stages 1, 2, 3 shard K=12, then 2, then 2."""
    llama = get_model("llama3-8b")
    nd = 64
    plan = ParallelPlan(dp=nd, zero=zero, shard_group=nd, stage_layers=(32,), seq_len=8192)
    psi = llama.total_params
    mem = memory_footprint(llama, plan)
    expected = {0: (2 * psi, 2 * psi, 12 * psi), 1: (2 * psi, 2 * psi, 12 * psi / nd),
                2: (2 * psi, 2 * psi / nd, 12 * psi / nd),
                3: (2 * psi / nd, 2 * psi / nd, 12 * psi / nd)}[zero]
    assert (mem.parameters_B, mem.gradients_B, mem.optimizer_states_B) == pytest.approx(
        expected)


def test_zero_paper_figure_one_example():
    """7.5B parameters on 64 GPUs: 120 GB baseline, 31.4 / 16.6 / 1.9 GB with stages 1/2/3."""
    psi, nd = 7.5e9, 64
    per = {0: 16 * psi, 1: 4 * psi + 12 * psi / nd, 2: 2 * psi + 14 * psi / nd,
           3: 16 * psi / nd}
    assert [round(per[z] / 1e9, 1) for z in range(4)] == [120.0, 31.4, 16.6, 1.9]


def test_hybrid_sharding_and_cp_widen_the_shard_group():
    llama = get_model("llama3-8b")
    psi = llama.total_params
    hybrid = ParallelPlan(dp=64, zero=3, shard_group=8, stage_layers=(32,), seq_len=8192)
    assert memory_footprint(llama, hybrid).parameters_B == pytest.approx(2 * psi / 8)
    with_cp = ParallelPlan(dp=8, cp=2, zero=1, shard_group=8, stage_layers=(32,),
                           seq_len=8192)
    assert memory_footprint(llama, with_cp).optimizer_states_B == pytest.approx(
        12 * psi / 16)


def test_stage_parameters_cover_the_model():
    llama = get_model("llama3-70b")
    plan = ParallelPlan(pp=4, stage_layers=(19, 21, 21, 19), seq_len=8192)
    total = sum(stage_parameters(llama, plan, s).total for s in range(4))
    assert total == llama.total_params
    tied = ParallelPlan(pp=2, stage_layers=(48, 48))
    first, last = (stage_parameters(GPT3, tied, s) for s in (0, 1))
    assert first.tied_embedding == last.tied_embedding == V * H
    assert first.total + last.total == GPT3.total_params + V * H   # the last stage's copy


def test_expert_parameters_shard_over_ep():
    mix = get_model("mixtral-8x7b")
    plan = ParallelPlan(dp=8, ep=8, stage_layers=(32,), seq_len=4096)
    params = stage_parameters(mix, plan)
    assert params.expert == 32 * 1 * 3 * 4096 * 14336


def test_recompute_and_zero3_temporaries():
    llama = get_model("llama3-8b")
    plan = ParallelPlan(dp=8, zero=3, shard_group=8, stage_layers=(32,), seq_len=8192)
    none = memory_footprint(llama, plan)
    full = memory_footprint(llama, plan, recompute="full")
    assert full.activations_B < memory_footprint(llama, plan, recompute="selective"
                                                 ).activations_B <= none.activations_B
    one_layer = layer_activation_bytes(llama, Shard(), 1, 8192)
    assert full.temporary_B - none.temporary_B == pytest.approx(one_layer)
    assert none.total_B == pytest.approx(none.parameters_B + none.gradients_B
                                         + none.optimizer_states_B + none.activations_B
                                         + none.temporary_B)


def test_dualpipe_end_stages_hold_both_embedding_tables():
    """DualPipe's stage 0 runs model stages 0 and p-1 (and so does stage p-1, the other way
    round), so it holds exactly what 1F1B's first and last stage hold together; a middle
    stage holds model stages s and p-1-s."""
    model = get_model("llama3-8b")
    split = (8, 8, 8, 8)
    one = ParallelPlan(pp=4, stage_layers=split, seq_len=8192)
    dual = ParallelPlan(pp=4, virtual_stages=2, schedule="dualpipe",
                        stage_layers=split + split[::-1], seq_len=8192)
    for s in range(4):
        mirror = stage_parameters(model, one, s).total + stage_parameters(model, one, 3 - s).total
        assert stage_parameters(model, dual, s).total == mirror
