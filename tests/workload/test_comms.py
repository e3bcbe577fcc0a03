"""Collectives per layer and per pipeline end, checked against the Megatron-LM and
Korthikanti et al. 2022 schemes, computed here (data-parallel ones: tests/step)."""

from clustersim.workload.comms import embedding_comms, layer_comms, logits_comms
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
    c = layer_comms(llama, Shard(tp=8, cp=2), 1, 8192, "bf16", cp_comm="all_gather")
    kv = [x for x in c["fwd"] if x.axis == "cp"]
    assert kv[0].op == "all_gather" and kv[0].bytes == 2 * 8192 * 1 * 128 * 2
    assert [x.op for x in c["bwd"] if x.axis == "cp"] == ["reduce_scatter"]


def test_expert_parallel_all_to_all():
    mix = get_model("mixtral-8x7b")
    c = layer_comms(mix, Shard(ep=8), 1, 4096, "bf16")
    a2a = [x for x in c["fwd"] + c["bwd"] if x.op == "all_to_all"]
    assert len(a2a) == 4 and all(x.bytes == 4096 * 2 * 4096 * 2 for x in a2a)
    assert not [x for x in layer_comms(mix, Shard(), 1, 4096, "bf16")["fwd"]]


def test_head_comms():
    assert embedding_comms(GPT, Shard(tp=4, sp=True), 1, 2048, "bf16")["fwd"][0].op == \
        "reduce_scatter"
    c = logits_comms(GPT, Shard(tp=4), 1, 2048, "bf16")
    assert len(c["fwd"]) == 3 and c["bwd"][0].op == "all_reduce"
