"""DeepSeek-style mixture of experts against hand derivations from the architecture:
parameter counts (DeepSeek-V3 report: 671B total, 37B activated), FLOPs per token, expert
weights over EP, seeded load imbalance and node-limited dispatch."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from clustersim.config.experiment import load_experiment
from clustersim.config.yamlio import load_yaml
from clustersim.errors import InputError
from clustersim.workload.comms import dispatch_bytes_leaving_node, layer_comms
from clustersim.workload.flops import layer_ops, model_flops_per_token
from clustersim.workload.memory import stage_layer_kinds, stage_parameters
from clustersim.workload.models import ModelSpec, get_model, resolve_model
from clustersim.workload.moe import ImbalanceSpec, MoESpec
from clustersim.workload.ops import Shard
from clustersim.workload.plan import ParallelPlan

V3 = get_model("deepseek-v3")
H, HEADS, LAYERS, VOCAB = 7168, 128, 61, 129280      # DeepSeek-V3 report, Sec. 4.2
EXPERT = 3 * H * 2048                                  # one SwiGLU expert of width 2048
DENSE_MLP = 3 * H * 18432                              # config.json intermediate_size
# MLA (Sec. 2.1.1): W_DQ, W_UQ (128 heads x (128 + 64)), W_DKV with the shared rotary key
# W_KR (512 + 64), W_UK and W_UV (128 x (128 + 128)), W_O (128 x 128 -> hidden)
ATTENTION = H * 1536 + 1536 * HEADS * 192 + H * 576 + 512 * HEADS * 256 + HEADS * 128 * H
NORMS = 2 * H + 1536 + 512                             # two RMSNorms and the two latent norms
ROUTER = H * 256


def test_v3_parameters_by_hand_and_as_published():
    moe_layer = ATTENTION + 257 * EXPERT + ROUTER + NORMS
    dense_layer = ATTENTION + DENSE_MLP + NORMS
    total = 58 * moe_layer + 3 * dense_layer + H + 2 * VOCAB * H
    active = 58 * (ATTENTION + 9 * EXPERT + ROUTER + NORMS) + 3 * dense_layer + H + 2 * VOCAB * H
    assert V3.total_params == total
    assert V3.active_params == active
    assert V3.total_params == pytest.approx(671e9, rel=0.01)     # published: 671B total
    assert V3.active_params == pytest.approx(37e9, rel=0.03)     # published: 37B activated
    assert (V3.moe_layers, V3.kv_heads, V3.head_dim) == (58, 128, 160)


def test_v3_forward_flops_per_token_by_hand():
    s = 4096
    ops = layer_ops(V3, Shard(), 1, s, "bf16")["fwd"]
    gemm = sum(op.flops for op in ops if op.kind == "gemm") * LAYERS / s
    core = sum(op.flops for op in ops if op.kind == "attention") * LAYERS / s
    layer_matmuls = 61 * ATTENTION + 3 * DENSE_MLP + 58 * (9 * EXPERT + ROUTER)
    assert gemm == pytest.approx(2 * layer_matmuls, rel=1e-9)
    # ~2 x 37B active per token (the embedding lookup and output layer aside, ~3.5% of it)
    assert gemm == pytest.approx(2 * 37e9, rel=0.05)
    # causal flash: Q K^T (192 wide) and P V (128 wide) over s/2 keys per query and head
    assert core == pytest.approx(61 * HEADS * 2 * (s / 2) * (192 + 128), rel=1e-9)


def test_model_flops_follow_the_active_parameters():
    s = 4096
    n_active = V3.active_params - V3.embedding_params - (61 * NORMS + H)  # matmul params
    attention = 6 * 61 * HEADS * s * (192 + 128)       # 12 L H Q T with Q = (192 + 128) / 2
    assert model_flops_per_token(V3, s) == pytest.approx(6 * n_active + attention, rel=1e-12)


def test_dense_layers_and_interleaving():
    moe = MoESpec(8, 2, dense_layers=2, every=3, shared_experts=1, expert_ffn_hidden=64)
    m = ModelSpec("m", layers=10, hidden=128, heads=4, vocab=100, ffn="swiglu",
                  ffn_hidden=256, moe=moe)
    assert [i for i in range(10) if m.is_moe_layer(i)] == [3, 6, 9]
    expert, dense = 3 * 128 * 64, 3 * 128 * 256
    attention, norms = 4 * 128 * 128, 2 * 128
    assert m.non_embedding_params == (7 * (attention + dense + norms)
                                      + 3 * (attention + 9 * expert + 8 * 128 + norms) + 128)
    plan = ParallelPlan(pp=2, stage_layers=(5, 5), seq_len=64)
    assert stage_layer_kinds(m, plan, 0) == (4, 1) and stage_layer_kinds(m, plan, 1) == (3, 2)


def test_expert_weights_shard_over_ep():
    plan = ParallelPlan(dp=8, ep=8, stage_layers=(61,), seq_len=4096)
    params = stage_parameters(V3, plan)
    assert params.expert == 58 * (256 // 8) * EXPERT
    assert params.dense == (61 * ATTENTION + 3 * DENSE_MLP + 58 * (EXPERT + ROUTER)
                            + 61 * NORMS + H + 2 * VOCAB * H)


# ------------------------------------------------------------------ load imbalance

def test_zipf_imbalance_is_its_max_over_mean_with_one_expert_per_rank():
    e, a = 64, 1.0
    moe = MoESpec(e, 1, imbalance=ImbalanceSpec("zipf", a, seed=5))
    harmonic = sum(i ** -a for i in range(1, e + 1))
    assert moe.routed_factor(e) == pytest.approx(e / harmonic, rel=1e-9)  # max / mean load
    assert moe.routed_factor(1) == pytest.approx(1.0)                      # one rank: no wait


def test_imbalance_is_seeded_and_reproducible():
    def factor(seed, dist="lognormal"):
        return MoESpec(64, 8, imbalance=ImbalanceSpec(dist, 0.5, seed)).routed_factor(8)

    assert factor(3) == factor(3) and factor(3) != factor(4)
    assert factor(3, "none") == 1.0 and factor(3) > 1.0
    loads = ImbalanceSpec("lognormal", 0.5, 3).expert_loads(64, 8)
    assert np.mean(loads) == pytest.approx(1.0) and max(loads) <= 64 / 8


def test_token_dropping_caps_the_expert_work():
    moe = MoESpec(64, 1, 1.25, token_drop=True, imbalance=ImbalanceSpec("zipf", 1.0, 0))
    assert moe.routed_factor(64) == pytest.approx(1.25)   # the hottest expert is capped
    loads = np.array(moe.expert_loads())
    assert moe.dropped_fraction == pytest.approx(np.maximum(loads - 1.25, 0).mean())
    base = ModelSpec("m", 2, 256, 4, 100, moe=MoESpec(64, 1))
    hot = replace(base, moe=replace(moe, token_drop=False, capacity_factor=1.0))
    flops = [next(op.flops for op in layer_ops(m, Shard(ep=64), 1, 512, "bf16")["fwd"]
                  if op.name == "expert_up") for m in (base, hot)]
    assert flops[1] / flops[0] == pytest.approx(hot.moe.routed_factor(64))


# ------------------------------------------------------------------ node-limited dispatch

def test_node_limited_dispatch_is_bounded_by_max_nodes():
    s, per_token = 4096, H * 2
    for limit, copies in ((0, 8), (4, 4), (2, 2)):
        m = replace(V3, moe=replace(V3.moe, max_nodes_per_token=limit))
        comms = layer_comms(m, Shard(ep=64), 1, s, "bf16")["fwd"]
        dispatch = next(c for c in comms if c.name == "ep_dispatch")
        assert dispatch.bytes == pytest.approx(s * copies * per_token * m.moe_fraction)
    for nodes in (2, 4, 8, 32):
        out = dispatch_bytes_leaving_node(V3, 1, 8 * nodes, 8)
        assert out <= 4 * per_token
        unlimited = replace(V3, moe=replace(V3.moe, max_nodes_per_token=0))
        assert out <= dispatch_bytes_leaving_node(unlimited, 1, 8 * nodes, 8) + 1e-9
        assert dispatch_bytes_leaving_node(V3, 1, 8 * nodes, 8, dedup=False) == \
            pytest.approx(8 * (nodes - 1) / nodes * per_token)


def test_expected_remote_copies_against_sampled_routing():
    rng, nodes, per_node = np.random.default_rng(0), 8, 32
    remote = []
    for _ in range(4000):   # pick M = 4 nodes, then top-8 experts among theirs
        chosen = rng.choice(nodes, 4, replace=False)
        experts = rng.choice(4 * per_node, 8, replace=False)
        targets = {chosen[e // per_node] for e in experts}
        remote.append(len(targets - {0}))           # the token lives on node 0
    expected = dispatch_bytes_leaving_node(V3, 1, 8 * nodes, 8) / (H * 2)
    assert np.mean(remote) == pytest.approx(expected, rel=0.03)
    assert math.isclose(dispatch_bytes_leaving_node(V3, 1, 8, 8), 0.0)   # one node


# ------------------------------------------------------------------ the experiment keys

_YAML = """
name: ds
cluster: {topology: dgx-h100, devices: 16}
model:
  preset: deepseek-v3
  layers: 8
  moe:
    experts: 256
    top_k: 8
    shared_experts: 1
    expert_ffn_hidden: 2048
    dense_layers: 3
    every: 1
    token_drop: true
    capacity_factor: 1.5
    max_nodes_per_token: 4
    imbalance: {distribution: DIST, param: 1.1, seed: 9}
training: {global_batch: 16}
"""


def test_moe_keys_read_from_an_experiment_file():
    exp = load_experiment(load_yaml(_YAML.replace("DIST", "zipf"), "ds.yaml"))
    m = resolve_model(exp.model)
    assert (m.layers, m.moe_layers, m.mla, m.moe.imbalance) == (
        8, 5, V3.mla, ImbalanceSpec("zipf", 1.1, 9))
    assert m.moe.token_drop and m.moe.capacity_factor == 1.5
    with pytest.raises(InputError, match=r"ds.yaml:17.*zipf"):
        load_experiment(load_yaml(_YAML.replace("DIST", "pareto"), "ds.yaml"))
