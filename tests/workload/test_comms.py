"""Collectives per layer, per pipeline end and per step, checked against the Megatron-LM,
Korthikanti et al. 2022 and ZeRO schemes, computed here."""

from clustersim.workload.comms import (embedding_comms, gradient_comms, layer_comms,
                                       logits_comms)
from clustersim.workload.flops import Shard
from clustersim.workload.models import ModelSpec, get_model

GPT = ModelSpec("gpt-test", layers=4, hidden=1024, heads=16, vocab=5000, seq_len=2048)


def test_tp_without_sp_two_all_reduces_each_way():
    c = layer_comms(GPT, Shard(tp=8), 2, 2048, "bf16")
    size = 2 * 2048 * 1024 * 2
    assert [(x.op, x.axis, x.bytes) for x in c["fwd"]] == [("all_reduce", "tp", size)] * 2
    assert [(x.op, x.bytes) for x in c["bwd"]] == [("all_reduce", size)] * 2
    assert layer_comms(GPT, Shard(), 2, 2048, "bf16")["fwd"] == ()


def test_tp_with_sp_gathers_and_scatters():
    c = layer_comms(GPT, Shard(tp=8, sp=True), 1, 2048, "bf16")
    assert [x.op for x in c["fwd"]] == ["all_gather", "reduce_scatter"] * 2
    assert sorted(x.op for x in c["bwd"]) == ["all_gather"] * 4 + ["reduce_scatter"] * 2


def test_parallel_block_reduces_once():
    c = layer_comms(get_model("palm-540b"), Shard(tp=8), 1, 2048, "bf16")
    assert len(c["fwd"]) == 1 and len(c["bwd"]) == 1


def test_full_recompute_repeats_forward_comms():
    c = layer_comms(GPT, Shard(tp=4), 1, 2048, "bf16", "full")
    assert len(c["bwd"]) == 4 and c["bwd"][0].name.endswith("_recompute")


def test_context_parallel_gathers_kv():
    llama = get_model("llama3-70b")
    c = layer_comms(llama, Shard(tp=8, cp=2), 1, 8192, "bf16")
    kv = [x for x in c["fwd"] if x.axis == "cp"]
    assert kv[0].op == "all_gather" and kv[0].bytes == 2 * 8192 * 1 * 128 * 2
    assert [x.op for x in c["bwd"] if x.axis == "cp"] == ["reduce_scatter"]


def test_expert_parallel_all_to_all():
    mix = get_model("mixtral-8x7b")
    c = layer_comms(mix, Shard(ep=8), 1, 4096, "bf16")
    a2a = [x for x in c["fwd"] + c["bwd"] if x.op == "all_to_all"]
    assert len(a2a) == 4 and all(x.bytes == 4096 * 2 * 4096 * 2 for x in a2a)
    assert not [x for x in layer_comms(mix, Shard(), 1, 4096, "bf16")["fwd"]]


def test_zero3_gathers_layer_parameters():
    c = layer_comms(GPT, Shard(tp=2), 1, 2048, "bf16", zero=3)
    gathers = [x for x in c["fwd"] if x.name == "zero3_param_all_gather"]
    h = GPT.hidden  # matrices split over tp=2, the two norm gains replicated; 2 bytes each
    assert gathers[0].bytes == (12 * h * h / 2 + 2 * h) * 2 and gathers[0].axis == "dp"
    assert any(x.op == "reduce_scatter" and x.axis == "dp" for x in c["bwd"])


def test_head_comms():
    assert embedding_comms(GPT, Shard(tp=4, sp=True), 1, 2048, "bf16")["fwd"][0].op == \
        "reduce_scatter"
    c = logits_comms(GPT, Shard(tp=4), 1, 2048, "bf16")
    assert len(c["fwd"]) == 3 and c["bwd"][0].op == "all_reduce"


def test_gradient_comms_by_zero_stage():
    z0 = gradient_comms(1e9, 2e8, 0, "bf16")
    assert [(x.name, x.bytes) for x in z0["step"]] == [("grad_all_reduce", 2e9),
                                                        ("expert_grad_all_reduce", 4e8)]
    z2 = gradient_comms(1e9, 0, 2, "bf16", tied_embedding_params=1e6)
    assert [x.op for x in z2["microbatch"]] == ["reduce_scatter"]
    assert [x.axis for x in z2["step"]] == ["dp", "pp"]
    assert gradient_comms(1e9, 0, 3, "bf16")["step"] == ()
