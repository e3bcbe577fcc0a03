"""Attention variants against first principles: MLA's projections and its KV cache of the
compressed latent (DeepSeek-V2), GQA/MQA widths, and sliding-window attention's work."""

from __future__ import annotations

from dataclasses import replace

import pytest

from clustersim.workload.flops import (attention_params_on_rank, layer_ops,
                                       mean_keys_per_query, model_flops_per_token)
from clustersim.workload.memory import (kv_cache_bytes, kv_cache_bytes_per_token,
                                        layer_activation_bytes)
from clustersim.workload.models import MLASpec, ModelSpec, get_model
from clustersim.workload.ops import Shard

V3 = get_model("deepseek-v3")
H = 7168


def test_mla_kv_cache_is_the_latent_and_the_rotary_key():
    for precision, byte in (("bf16", 2), ("fp32", 4)):
        assert kv_cache_bytes_per_token(V3, precision) == 61 * (512 + 64) * byte
    llama = get_model("llama3-8b")          # GQA: 8 KV heads of 128, keys and values
    assert kv_cache_bytes_per_token(llama) == 32 * 2 * 8 * 128 * 2
    palm = get_model("palm-540b")           # MQA: one KV head of 256
    assert kv_cache_bytes_per_token(palm) == 118 * 2 * 256 * 2


def test_mla_projection_flops_on_a_tensor_parallel_rank():
    t = 4096
    for tp in (1, 8):
        ops = {op.name: op.flops for op in layer_ops(V3, Shard(tp=tp), 1, t, "bf16")["fwd"]}
        heads = 128 // tp
        # the down-projections are replicated, the up- and output projections split by heads
        expected = {"q_down_proj": H * 1536, "q_up_proj": 1536 * heads * 192,
                    "kv_down_proj": H * 576, "kv_up_proj": 512 * heads * 256,
                    "out_proj": heads * 128 * H}
        for name, params in expected.items():
            assert ops[name] == 2 * t * params, (tp, name)
        assert attention_params_on_rank(V3, tp) == sum(expected.values())


def test_mla_without_query_compression():
    m = ModelSpec("m", 2, 512, 8, 100, mla=MLASpec(kv_lora_rank=64, q_lora_rank=0,
                                                   qk_rope_head_dim=16, qk_nope_head_dim=32,
                                                   v_head_dim=32))
    assert m.attention_params == (512 * 8 * 48 + 512 * 80 + 64 * 8 * 64 + 8 * 32 * 512)
    names = [op.name for op in layer_ops(m, Shard(), 1, 128, "bf16")["fwd"]]
    assert "q_proj" in names and "q_down_proj" not in names


def test_gqa_and_mqa_projection_widths():
    llama = get_model("llama3-8b")
    qkv = next(op for op in layer_ops(llama, Shard(), 1, 1024, "bf16")["fwd"]
               if op.name == "qkv_proj")
    assert qkv.flops == 2 * 1024 * 4096 * (4096 + 2 * 8 * 128)
    assert llama.attention_params == 2 * 4096 * 4096 + 2 * 4096 * 1024
    palm = get_model("palm-540b")
    assert palm.attention_params == 2 * 18432 * 48 * 256 + 2 * 18432 * 256


def test_sliding_window_cuts_attention_by_window_over_seq():
    llama, s, w = get_model("llama3-8b"), 8192, 2048
    windowed = replace(llama, attention_window=w)
    term = model_flops_per_token(llama, s) - 6 * llama.matmul_params
    term_w = model_flops_per_token(windowed, s) - 6 * llama.matmul_params
    assert term_w / term == pytest.approx(w / s)
    for causal in (False, True):
        full, win = (next(op.flops for op in layer_ops(m, Shard(), 1, s, "bf16", causal=causal)
                          ["fwd"] if op.kind == "attention") for m in (llama, windowed))
        # brute force: query i sees keys max(0, i - w + 1) .. i causal, w of them otherwise
        keys = (sum(min(i + 1, w) for i in range(s)) / s if causal else w)
        full_keys = s / 2 if causal else s
        assert win / full == pytest.approx(keys / full_keys, rel=1e-3)
    assert mean_keys_per_query(s, 4 * s) == mean_keys_per_query(s)   # window past the sequence
    assert kv_cache_bytes(windowed, s) == w * kv_cache_bytes_per_token(llama)


def test_mla_moe_layer_activations_by_hand():
    sb, e, h, heads = 4096, 2, H, 128
    norms_and_inputs = 4 * e * sb * h                 # two norm inputs, attention and MLP input
    q_out = e * sb * heads * (192 + 128)              # Q and the output projection's input
    kv = e * sb * heads * (192 + 128)                 # K and V, the whole sequence (no CP)
    latents = 2 * e * sb * (1536 + 512)               # each latent: norm and up-proj input
    lse = 4 * heads * sb                              # flash's fp32 log-sum-exp per row
    routed = sb * 8                                   # top-8, balanced, dropless
    experts = e * routed * (3 * 2048 + h) + e * sb * 3 * 2048   # routed (+ permuted input), shared
    expected = norms_and_inputs + q_out + kv + latents + lse + experts
    assert layer_activation_bytes(V3, Shard(), 1, sb, moe_layer=True) == pytest.approx(expected)
    dense = norms_and_inputs + q_out + kv + latents + lse + e * sb * 3 * 18432
    assert layer_activation_bytes(V3, Shard(), 1, sb, moe_layer=False) == pytest.approx(dense)
