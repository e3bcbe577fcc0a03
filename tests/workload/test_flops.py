"""FLOPs and bytes per op, checked against textbook formulas computed here."""

import pytest

from clustersim.errors import InputError
from clustersim.workload.flops import (Shard, embedding_ops, hardware_flops_per_token,
                                       layer_ops, logits_ops, megatron_flops_per_iteration,
                                       model_flops_per_token, optimizer_ops)
from clustersim.workload.models import ModelSpec, get_model
from clustersim.workload.moe import MoESpec

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


@pytest.mark.parametrize("attention", ["flash", "materialized"])
def test_backward_gemms_are_dgrad_plus_wgrad_of_the_forward(attention):
    ops = layer_ops(GPT, Shard(tp=2), 1, 1024, "bf16", attention=attention)
    fwd = {op.name: op for op in ops["fwd"]}
    bwd = {op.name: op for op in ops["bwd"]}
    for name, op in fwd.items():
        if op.kind == "gemm":
            assert bwd[name + "_dgrad"].flops == bwd[name + "_wgrad"].flops == op.flops
            d, w = bwd[name + "_dgrad"], bwd[name + "_wgrad"]
            assert (d.m, d.n, d.k, d.batch) == (op.m, op.k, op.n, op.batch)
            assert (w.m, w.n, w.k, w.batch) == (op.k, op.n, op.m, op.batch)
    if attention == "flash":
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


def test_bad_precision_recompute_and_attention_are_input_errors():
    with pytest.raises(InputError, match="precision"):
        layer_ops(GPT, Shard(), 1, 128, "int4")
    with pytest.raises(InputError, match="recompute"):
        layer_ops(GPT, Shard(), 1, 128, "bf16", "some")
    with pytest.raises(InputError, match="materialized"):
        layer_ops(GPT, Shard(), 1, 128, "bf16", attention="fused")


def test_embedding_lookup_has_no_flops():
    assert embedding_ops(GPT, Shard(), 1, 2048, "bf16")["fwd"][0].flops == 0


# ------------------------------------------------------------------ materialised attention

GPT_DROP = ModelSpec("gpt-dropout", layers=4, hidden=1024, heads=16, vocab=5000,
                     seq_len=2048, dropout=True)


def core(ops):
    """The attention-core ops (QK^T, softmax, dropout, PV and their backward)."""
    return [op for op in ops if op.name.startswith("attention")]


@pytest.mark.parametrize("b, s", [(1, 2048), (4, 512)])
@pytest.mark.parametrize("causal", [True, False])
def test_materialized_layer_forward_is_textbook(b, s, causal):
    """24 b s h^2 + 4 b s^2 h whether causal or not: masked entries are computed in full."""
    h = GPT.hidden
    ops = layer_ops(GPT_DROP, Shard(), b, s, "bf16", causal=causal, attention="materialized")
    assert matmul_flops(ops["fwd"]) == pytest.approx(24 * b * s * h**2 + 4 * b * s**2 * h)
    # the backward runs four s^2 GEMMs (dV, dP, dQ, dK) against the forward's two
    assert matmul_flops(core(ops["bwd"])) == pytest.approx(2 * 4 * b * s**2 * h)


@pytest.mark.parametrize("model", [GPT, GPT_DROP])
def test_flash_and_materialized_agree_outside_the_core(model):
    flash = layer_ops(model, Shard(tp=4), 2, 1024, "bf16")
    mat = layer_ops(model, Shard(tp=4), 2, 1024, "bf16", attention="materialized")
    for phase in ("fwd", "bwd"):
        outside = [[op for op in ops[phase] if not op.name.startswith("attention")]
                   for ops in (flash, mat)]
        assert outside[0] == outside[1]


@pytest.mark.parametrize("model, passes", [(GPT_DROP, (6, 9)), (GPT, (4, 7))])
def test_score_traffic_is_its_closed_form(model, passes):
    """The b a s^2 scores cross memory once per pass, e bytes each (1-byte dropout mask).

    Forward: QK^T writes S (1); softmax reads S, writes P (2); dropout reads P, writes P'
    and the mask (2); PV reads P' (1): 6 passes, 4 without dropout. Backward: dP' = dO V^T
    writes (1); dV = P'^T dO reads (1); dropout backward reads dP' and the mask, writes dP
    (2); softmax backward reads P and dP, writes dS (3); dQ = dS K and dK = dS^T Q read dS
    (2): 9 passes, 7 without dropout. Every batched GEMM also moves two of Q, K, V, O and
    their gradients, b s h e each.
    """
    b, s, a, h, e = 2, 1024, model.heads, model.hidden, 2
    scores = b * a * s * s
    mask = scores if model.dropout else 0
    ops = layer_ops(model, Shard(), b, s, "bf16", attention="materialized")
    gemms = {"fwd": 2, "bwd": 4}
    for phase, n in zip(("fwd", "bwd"), passes):
        expected = n * scores * e + mask + gemms[phase] * 2 * b * s * h * e
        assert sum(op.bytes for op in core(ops[phase])) == expected


def test_gpt_1_7b_writes_3_gb_of_scores_per_layer_pass():
    """Narayanan et al. 2021 Table 1, first row: 24 heads, seq 2048, micro-batch 16."""
    gpt = ModelSpec("gpt-1.7b", layers=24, hidden=2304, heads=24, vocab=51200, dropout=True)
    scores_op = next(op for op in layer_ops(gpt, Shard(), 16, 2048, "bf16",
                                            attention="materialized")["fwd"]
                     if op.name == "attention_scores")
    assert (scores_op.m, scores_op.n, scores_op.k, scores_op.batch) == (2048, 2048, 96, 16 * 24)
    written = 16 * 24 * 2048**2 * 2
    assert written == pytest.approx(3.2e9, rel=0.01)
    assert scores_op.bytes - written == 2 * 16 * 2048 * 2304 * 2   # Q and K read


def test_materialized_recompute_replays_the_core():
    base, sel, full = (layer_ops(GPT_DROP, Shard(), 1, 2048, "bf16", r,
                                 attention="materialized") for r in ("none", "selective", "full"))
    fwd_core = core(base["fwd"])
    replayed = [op for op in sel["bwd"] if op.name.endswith("_recompute")]
    assert [op.name for op in replayed] == [op.name + "_recompute" for op in fwd_core]
    assert [(op.flops, op.bytes) for op in replayed] == [(op.flops, op.bytes)
                                                        for op in fwd_core]
    assert sum(op.bytes for op in full["bwd"]) == pytest.approx(
        sum(op.bytes for op in base["bwd"]) + sum(op.bytes for op in base["fwd"]))


def test_materialized_attention_stays_16_bit_under_fp8():
    ops = layer_ops(GPT, Shard(), 1, 2048, "fp8", attention="materialized")
    assert {op.dtype for op in core(ops["fwd"] + ops["bwd"])} == {"bf16"}


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
