"""FLOPs, bytes and collectives per op, checked against textbook formulas computed here."""

import pytest

from clustersim.errors import InputError
from clustersim.workload.flops import (Shard, embedding_comms, embedding_ops, gradient_comms,
                                       hardware_flops_per_token, layer_comms, layer_ops,
                                       logits_comms, logits_ops, megatron_flops_per_iteration,
                                       model_flops_per_token, optimizer_ops)
from clustersim.workload.models import MoESpec, ModelSpec, get_model

GPT = ModelSpec("gpt-test", layers=4, hidden=1024, heads=16, vocab=5000, seq_len=2048)
MATMUL = ("gemm", "attention")


def matmul_flops(ops, kinds=MATMUL):
    return sum(op.flops for op in ops if op.kind in kinds)


@pytest.mark.parametrize("b, s", [(1, 2048), (4, 512)])
def test_dense_gpt_layer_forward_is_textbook(b, s):
    """24 b s h^2 (GEMMs) + 4 b s^2 h (QK^T and PV) for full attention; causal halves the
    attention term (flash kernels skip the masked tiles)."""
    h = GPT.hidden
    full = layer_ops(GPT, Shard(), b, s, "bf16", causal=False)["fwd"]
    assert matmul_flops(full) == pytest.approx(24 * b * s * h**2 + 4 * b * s**2 * h)
    causal = layer_ops(GPT, Shard(), b, s, "bf16")["fwd"]
    assert matmul_flops(causal) == pytest.approx(24 * b * s * h**2 + 2 * b * s**2 * h)


def test_tensor_parallelism_divides_gemm_flops():
    one = layer_ops(GPT, Shard(), 2, 2048, "bf16")
    for tp in (2, 4, 8, 16):
        cut = layer_ops(GPT, Shard(tp=tp), 2, 2048, "bf16")
        for phase in ("fwd", "bwd"):
            assert matmul_flops(cut[phase], ("gemm",)) == pytest.approx(
                matmul_flops(one[phase], ("gemm",)) / tp)
            assert matmul_flops(cut[phase], ("attention",)) == pytest.approx(
                matmul_flops(one[phase], ("attention",)) / tp)


def test_backward_gemms_are_dgrad_plus_wgrad_of_the_forward():
    ops = layer_ops(GPT, Shard(tp=2), 1, 1024, "bf16")
    fwd = {op.name: op for op in ops["fwd"]}
    bwd = {op.name: op for op in ops["bwd"]}
    for name, op in fwd.items():
        if op.kind == "gemm":
            assert bwd[name + "_dgrad"].flops == bwd[name + "_wgrad"].flops == op.flops
            d, w = bwd[name + "_dgrad"], bwd[name + "_wgrad"]
            assert (d.m, d.n, d.k) == (op.m, op.k, op.n)
            assert (w.m, w.n, w.k) == (op.k, op.n, op.m)
    assert bwd["attention_bwd"].flops == pytest.approx(2.5 * fwd["attention"].flops)


def test_recompute_replays_forward_work():
    base = layer_ops(GPT, Shard(), 1, 2048, "bf16")
    sel = layer_ops(GPT, Shard(), 1, 2048, "bf16", "selective")
    full = layer_ops(GPT, Shard(), 1, 2048, "bf16", "full")
    attn = next(op for op in base["fwd"] if op.kind == "attention")
    assert matmul_flops(sel["bwd"]) - matmul_flops(base["bwd"]) == pytest.approx(attn.flops)
    assert matmul_flops(full["bwd"]) - matmul_flops(base["bwd"]) == pytest.approx(
        matmul_flops(base["fwd"]))
    assert all(op.name.endswith("_recompute") for op in full["bwd"][:len(full["fwd"])])


def test_gqa_swiglu_shapes_and_kv_replication():
    llama = get_model("llama3-8b")  # 32 heads, 8 KV heads, head_dim 128, SwiGLU 14336
    qkv = layer_ops(llama, Shard(tp=4), 1, 8192, "bf16")["fwd"][1]
    assert qkv.name == "qkv_proj" and qkv.n == (8 + 2 * 2) * 128 and qkv.k == 4096
    replicated = layer_ops(llama, Shard(tp=16), 1, 8192, "bf16")["fwd"][1]
    assert replicated.n == (2 + 2 * 1) * 128     # one KV head per rank, replicated
    up = next(op for op in layer_ops(llama, Shard(), 1, 8192, "bf16")["fwd"]
              if op.name == "mlp_up")
    assert up.flops == 2 * 8192 * 4096 * 2 * 14336


def test_gemm_bytes_are_inputs_plus_output():
    up = next(op for op in layer_ops(GPT, Shard(), 1, 2048, "bf16")["fwd"]
              if op.name == "mlp_up")
    m, n, k = 2048, 4096, 1024
    assert up.bytes == 2 * (m * k + k * n + m * n)
    fp8 = next(op for op in layer_ops(GPT, Shard(), 1, 2048, "fp8")["fwd"]
               if op.name == "mlp_up")
    assert fp8.bytes == (m * k + k * n) + 2 * m * n
    attn = next(op for op in layer_ops(GPT, Shard(), 1, 2048, "fp8")["fwd"]
                if op.kind == "attention")
    assert attn.dtype == "bf16"


def test_sequence_parallel_shards_the_norms():
    plain = layer_ops(GPT, Shard(tp=4), 1, 2048, "bf16")["fwd"][0]
    sp = layer_ops(GPT, Shard(tp=4, sp=True), 1, 2048, "bf16")["fwd"][0]
    assert plain.name == "attn_norm" and plain.bytes == 2 * 2 * 2048 * 1024
    assert sp.bytes == plain.bytes / 4


def test_context_parallelism_splits_tokens():
    one = layer_ops(GPT, Shard(), 1, 4096, "bf16")
    cp = layer_ops(GPT, Shard(cp=4), 1, 4096, "bf16")
    assert matmul_flops(cp["fwd"]) == pytest.approx(matmul_flops(one["fwd"]) / 4)


def test_moe_expert_flops_are_top_k_dense_mlps():
    moe = ModelSpec("moe", layers=2, hidden=512, heads=8, vocab=100, ffn="swiglu",
                    ffn_hidden=1024, moe=MoESpec(experts=8, top_k=2))
    dense = ModelSpec("dense", layers=2, hidden=512, heads=8, vocab=100, ffn="swiglu",
                      ffn_hidden=1024)
    fm = {op.name: op for op in layer_ops(moe, Shard(ep=4), 2, 1024, "bf16")["fwd"]}
    fd = {op.name: op for op in layer_ops(dense, Shard(), 2, 1024, "bf16")["fwd"]}
    assert fm["expert_up"].flops == 2 * fd["mlp_up"].flops
    assert fm["expert_down"].flops == 2 * fd["mlp_down"].flops
    assert fm["expert_up"].m == 2 * 1024 * 2 // 2   # routed tokens over 2 local experts
    assert fm["router"].n == 8


def test_per_token_gemm_flops_are_six_n():
    """Forward + backward GEMMs of every layer and the output layer: 6 x matmul params."""
    llama = get_model("llama3-8b")
    s = 8192
    ops = layer_ops(llama, Shard(), 1, s, "bf16")
    head = logits_ops(llama, Shard(), 1, s, "bf16")
    total = llama.layers * (matmul_flops(ops["fwd"], ("gemm",)) + matmul_flops(
        ops["bwd"], ("gemm",))) + matmul_flops(head["fwd"] + head["bwd"], ("gemm",))
    assert total / s == pytest.approx(6 * llama.matmul_params)


def test_layer_ops_are_cached_and_immutable():
    a = layer_ops(GPT, Shard(tp=2), 1, 2048, "bf16")
    assert a is layer_ops(GPT, Shard(tp=2), 1, 2048, "bf16")
    assert isinstance(a["fwd"], tuple)
    with pytest.raises(TypeError):
        a["fwd"] = ()


def test_bad_precision_and_recompute_are_input_errors():
    with pytest.raises(InputError, match="precision"):
        layer_ops(GPT, Shard(), 1, 128, "int4")
    with pytest.raises(InputError, match="recompute"):
        layer_ops(GPT, Shard(), 1, 128, "bf16", "some")


# ------------------------------------------------------------------ collectives

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
    assert embedding_ops(GPT, Shard(), 1, 2048, "bf16")["fwd"][0].flops == 0


def test_gradient_comms_by_zero_stage():
    z0 = gradient_comms(1e9, 2e8, 0, "bf16")
    assert [(x.name, x.bytes) for x in z0["step"]] == [("grad_all_reduce", 2e9),
                                                        ("expert_grad_all_reduce", 4e8)]
    z2 = gradient_comms(1e9, 0, 2, "bf16", tied_embedding_params=1e6)
    assert [x.op for x in z2["microbatch"]] == ["reduce_scatter"]
    assert [x.axis for x in z2["step"]] == ["dp", "pp"]
    assert gradient_comms(1e9, 0, 3, "bf16")["step"] == ()


def test_adam_step_moves_28_bytes_per_parameter():
    op = optimizer_ops(1e6, "bf16")[0]
    # read grad 2 + master/m/v 12, write master/m/v 12 + bf16 weights 2
    assert op.kind == "optimizer" and op.bytes == 28e6
    assert optimizer_ops(1e6, "fp32", "sgd")[0].bytes == (4 + 4 + 4 + 4) * 1e6


# ------------------------------------------------------------------ whole-model counts

def test_palm_mfu_reproduces_the_paper():
    palm = get_model("palm-540b")
    # 238.3k tokens/s on 6144 TPU v4 chips of 275 TFLOP/s -> 46.2% MFU (PaLM Table 3)
    mfu = model_flops_per_token(palm) * 238.3e3 / (6144 * 275e12)
    assert mfu == pytest.approx(0.462, abs=0.001)


def test_model_flops_formula():
    L, H, Q, T = GPT.layers, GPT.heads, GPT.head_dim, 2048
    assert model_flops_per_token(GPT) == 6 * GPT.matmul_params + 12 * L * H * Q * T
    assert hardware_flops_per_token(GPT, recompute="none") == model_flops_per_token(GPT)
    assert hardware_flops_per_token(GPT, recompute="selective") == pytest.approx(
        model_flops_per_token(GPT) + 4 * L * H * Q * T)


def test_megatron_eq3_matches_full_recompute_hardware_flops():
    gpt = get_model("gpt3-175b")
    B, s, l, h, V = 1536, 2048, 96, 12288, 50257
    eq3 = 96 * B * s * l * h**2 * (1 + s / (6 * h) + V / (16 * l * h))
    assert megatron_flops_per_iteration(gpt, B, s) == pytest.approx(eq3)
    # the same count, built from our per-token pieces (norm gains make the 1e-4 difference)
    assert eq3 / (B * s) == pytest.approx(hardware_flops_per_token(gpt, s, "full"), rel=1e-4)
