"""FLOPs and memory traffic of the kernels of one transformer training step, per rank.

Everything here is per micro-batch and per rank, for a rank that holds one shard of the model
(:class:`~clustersim.workload.ops.Shard`: tensor, sequence, context and expert
parallelism); the collectives between these kernels are in :mod:`~clustersim.workload.comms`.
Conventions:

- A GEMM ``Y[m,n] = X[m,k] W[k,n]`` costs ``2mnk`` FLOPs. Its backward is a data-gradient GEMM
  ``dX = dY W^T`` (shape m, k, n) and a weight-gradient GEMM ``dW = X^T dY`` (shape k, n, m).
- The attention core is flash-style (``attention="flash"``, the default) or the unfused
  ``"materialized"`` kernels of Megatron-LM before flash attention; both are built in
  :mod:`~clustersim.workload.attention` and placed in the layer by :func:`layer_ops`.
- Model FLOPs for MFU (:func:`model_flops_per_token`) follow PaLM (Chowdhery et al. 2022,
  App. B): ``6N + 12 L H Q T``, attention counted *without* causal halving.
- Bytes are device-memory reads plus writes, activations in 16 bits (32 for fp32), GEMM inputs
  in 8 bits under fp8 and 4.5 under fp4 (NVFP4 with its block scales; Transformer Engine keeps
  attention and elementwise ops in bf16).
- Op names: a backward op ends in ``_dgrad``, ``_wgrad`` or ``_bwd``; a recomputed forward op
  ends in ``_recompute``. The compute model relies on the ``_bwd`` suffix for attention.

>>> from clustersim.workload.models import get_model
>>> ops = layer_ops(get_model("llama3-8b"), Shard(tp=2), 1, 8192, "bf16")
>>> [op.name for op in ops["fwd"]][:4]
['attn_norm', 'qkv_proj', 'attention', 'out_proj']
"""

from __future__ import annotations

import functools
from dataclasses import replace
from types import MappingProxyType

from clustersim.errors import InputError
from clustersim.workload.attention import ATTENTION_KINDS, attention_ops
from clustersim.workload.fp8 import FP8Options, amax_update_op, quantize_op
from clustersim.workload.models import ModelSpec
from clustersim.workload.ops import (ELEMENTWISE_FLOPS, PRECISIONS, LayerDims, OpCost, Shard,
                                     element_bytes, layer_dims)

# OpCost, Shard, PRECISIONS and element_bytes live in workload.ops and ATTENTION_KINDS in
# workload.attention (the attention builders need them); they stay importable from here.
__all__ = [
    "OpCost", "Shard", "PRECISIONS", "ATTENTION_KINDS", "element_bytes",
    "layer_params_on_rank", "attention_params_on_rank", "mean_keys_per_query", "layer_ops", "embedding_ops", "logits_ops", "optimizer_ops",
    "model_flops_per_token", "hardware_flops_per_token", "megatron_flops_per_iteration",
]

_ADAM_FLOPS = 12        # per parameter: moments, bias correction, sqrt, divide, decay, update
_SGD_FLOPS = 4          # per parameter: momentum and update


def _gemm(name: str, m: float, n: float, k: float, d: LayerDims, groups: int = 1) -> OpCost:
    """``groups`` equal GEMMs of m/groups rows each (grouped expert GEMM: weights per group)."""
    m_each = max(1, round(m / groups))
    return OpCost(name, "gemm", 2.0 * m * n * k, (m * k + groups * k * n) * d.in_B
                  + m * n * d.act_B, m_each, int(n), int(k))


def _gemm_bwd(op: OpCost, m: float, d: LayerDims, groups: int = 1) -> list[OpCost]:
    """dgrad and wgrad of ``op``; a GEMM kept in bf16 (``op.dtype``) stays so backwards."""
    n, k = op.n, op.k
    in_B = d.act_B if op.dtype == "bf16" else d.in_B
    dgrad = OpCost(op.name + "_dgrad", "gemm", op.flops,
                   (m * n + groups * n * k) * in_B + m * k * d.act_B, op.m, k, n, op.dtype)
    wgrad = OpCost(op.name + "_wgrad", "gemm", op.flops,
                   (k * m + m * n) * in_B + groups * k * n * d.act_B, k, n, op.m, op.dtype)
    return [dgrad, wgrad]


def _elementwise(name: str, what: str, elements: float, reads: float, writes: float,
                 d: LayerDims, extra_B: float = 0.0) -> OpCost:
    return OpCost(name, "elementwise", ELEMENTWISE_FLOPS[what] * elements,
                  (reads + writes) * elements * d.act_B + extra_B)


def _scaled(op: OpCost, share: float) -> OpCost:
    """An op run in ``share`` of the layers (the averaged layer of a dense/MoE mix)."""
    return op if share == 1.0 else replace(op, flops=op.flops * share, bytes=op.bytes * share)


def _add_gemm(ops: list, name: str, m: float, n: float, k: float, d: LayerDims,
              groups: int = 1, share: float = 1.0) -> None:
    raw = _gemm(name, m, n, k, d, groups)
    ops.append((_scaled(raw, share), ("gemm", m, groups, share, raw)))


def _add_ew(ops: list, name: str, what: str, elems: float, rw: tuple, d: LayerDims,
            extra: float = 0.0) -> None:
    ops.append((_elementwise(name, what, elems, rw[0], rw[1], d, extra),
                ("ew", what, elems, rw[2], rw[3], extra)))


_NORM_RW = (1, 1, 2, 1)          # forward reads, writes; backward reads, writes (per element)
_PERMUTE_RW = (1, 1, 1, 1)


def _act_rw(model: ModelSpec) -> tuple:
    return (2, 1, 3, 2) if model.ffn == "swiglu" else (1, 1, 2, 1)


def _mlp_block(ops: list, model: ModelSpec, d: LayerDims, prefix: str, tokens: float,
               width: int, share: float, groups: int = 1) -> None:
    """Up-projection, activation and down-projection of an MLP ``width`` wide on this rank."""
    up = 2 * width if model.ffn == "swiglu" else width
    _add_gemm(ops, f"{prefix}_up", tokens, up, d.h, d, groups, share)
    _add_ew(ops, f"{prefix}_act", model.ffn, tokens * width * share, _act_rw(model), d)
    _add_gemm(ops, f"{prefix}_down", tokens, d.h, width, d, groups, share)


def _mlp(ops: list, model: ModelSpec, d: LayerDims, moe_share: float | None = None) -> None:
    """The MLP of the layer. In a model mixing dense and MoE layers (``moe.dense_layers``,
    ``moe.every``) it is the mean layer of the layers it stands for (``moe_share`` of them
    MoE; default the whole model's share): the dense MLP in the dense layers' share of the
    work, the MoE MLP in the MoE layers' share (GEMM shapes kept, FLOPs and bytes scaled)."""
    if not model.moe:
        moe_share = 0.0
    elif moe_share is None:
        moe_share = model.moe_fraction
    if moe_share < 1.0:
        _mlp_block(ops, model, d, "mlp", d.t, d.ffn, 1.0 - moe_share)
    if moe_share == 0.0:
        return
    moe, tp = model.moe, model.heads // d.heads
    width = -(-model.expert_ffn_hidden // tp)          # experts split over tp, as the MLP
    if moe.shared_experts:   # DeepSeekMoE's shared experts: one wide MLP every token visits
        _mlp_block(ops, model, d, "shared_expert", d.t, moe.shared_experts * width, moe_share)
    routed = d.t * moe.top_k * moe.routed_factor(model.experts // d.experts)
    _add_gemm(ops, "router", d.t, moe.experts, d.h, d, share=moe_share)
    _add_ew(ops, "moe_permute", "permute", routed * d.h * moe_share, _PERMUTE_RW, d)
    _mlp_block(ops, model, d, "expert", routed, width, moe_share, d.experts)
    _add_ew(ops, "moe_unpermute", "permute", routed * d.h * moe_share, _PERMUTE_RW, d)


def _qkv(ops: list, model: ModelSpec, d: LayerDims) -> None:
    """The projections into attention: one fused QKV GEMM, or MLA's down- and up-projections
    (the down-projections replicated on every TP rank, the up-projections split by heads, as
    Megatron-Core's MLASelfAttention does), with the RMS norms of the two latents."""
    mla = model.mla
    if mla is None:
        _add_gemm(ops, "qkv_proj", d.t, d.q + 2 * d.kvw, d.h, d)
        return
    if mla.q_lora_rank:
        _add_gemm(ops, "q_down_proj", d.t, mla.q_lora_rank, d.h, d)
        _add_ew(ops, "q_latent_norm", "norm", d.t * mla.q_lora_rank, _NORM_RW, d)
        _add_gemm(ops, "q_up_proj", d.t, d.heads * mla.qk_head_dim, mla.q_lora_rank, d)
    else:
        _add_gemm(ops, "q_proj", d.t, d.heads * mla.qk_head_dim, d.h, d)
    _add_gemm(ops, "kv_down_proj", d.t, mla.kv_cache_width, d.h, d)
    _add_ew(ops, "kv_latent_norm", "norm", d.t * mla.kv_lora_rank, _NORM_RW, d)
    _add_gemm(ops, "kv_up_proj", d.t, d.heads * (mla.qk_nope_head_dim + mla.v_head_dim),
              mla.kv_lora_rank, d)


def mean_keys_per_query(seq_len: int, window: int = 0, causal: bool = True) -> float:
    """Keys one query attends to on average: seq (non-causal) or seq/2 (causal, the flash
    convention that ignores the diagonal); with a sliding ``window`` W < seq, min(W, seq)
    non-causal and W - W^2 / (2 seq) causal (the first W queries see fewer than W keys).

    >>> mean_keys_per_query(8192), mean_keys_per_query(8192, 4096), mean_keys_per_query(8192, 8192)
    (4096.0, 3072.0, 4096.0)
    """
    w = min(window, seq_len) if window else seq_len
    if not causal:
        return float(w)
    return w - w * w / (2.0 * seq_len)


def _core(ops: list, model: ModelSpec, d: LayerDims, causal: bool, attn_dtype: str,
          attention: str) -> None:
    """The attention core; its last op carries the backward of all of it. A sliding window
    shrinks a flash kernel's work to the keys inside it (masked tiles are skipped); the
    materialized kernels compute masked scores in full, as for the causal mask."""
    fwd, bwd = attention_ops(model, d, causal, attn_dtype, attention)
    window = model.attention_window
    if attention == "flash" and window and window < d.s_full:
        keys = mean_keys_per_query(d.s_full, window, causal)
        ratio = keys / mean_keys_per_query(d.s_full, 0, causal)
        fwd = [replace(op, flops=op.flops * ratio, n=max(1, round(keys))) for op in fwd]
        bwd = [replace(op, flops=op.flops * ratio, n=max(1, round(keys))) for op in bwd]
    ops.extend((op, ("in_core",)) for op in fwd[:-1])
    ops.append((fwd[-1], ("core", tuple(fwd), tuple(bwd))))


def _forward(model: ModelSpec, d: LayerDims, causal: bool, attn_dtype: str, attention: str,
             moe_share: float | None = None) -> list[tuple[OpCost, tuple]]:
    """Forward ops of one layer, each with how to build its backward."""
    drop_B = d.t_norm * d.h if model.dropout else 0.0      # 1-byte dropout mask
    out_width = d.heads * model.mla.v_head_dim if model.mla else d.q
    ops: list[tuple[OpCost, tuple]] = []
    if model.parallel_attention:   # PaLM: y = x + Attn(LN(x)) + MLP(LN(x))
        _add_ew(ops, "norm", "norm", d.t_norm * d.h, _NORM_RW, d)
        _qkv(ops, model, d)
        _core(ops, model, d, causal, attn_dtype, attention)
        _add_gemm(ops, "out_proj", d.t, d.h, out_width, d)
        _mlp(ops, model, d, moe_share)
        _add_ew(ops, "residual", "residual", d.t_norm * d.h, (3, 1, 1, 2), d, drop_B)
        return ops
    _add_ew(ops, "attn_norm", "norm", d.t_norm * d.h, _NORM_RW, d)
    _qkv(ops, model, d)
    _core(ops, model, d, causal, attn_dtype, attention)
    _add_gemm(ops, "out_proj", d.t, d.h, out_width, d)
    _add_ew(ops, "attn_residual", "residual", d.t_norm * d.h, (2, 1, 2, 1), d, drop_B)
    _add_ew(ops, "mlp_norm", "norm", d.t_norm * d.h, _NORM_RW, d)
    _mlp(ops, model, d, moe_share)
    _add_ew(ops, "mlp_residual", "residual", d.t_norm * d.h, (2, 1, 2, 1), d, drop_B)
    return ops


def _bf16_gemm(name: str, m: float, n: int, k: int, d: LayerDims, groups: int) -> OpCost:
    """A GEMM an fp8 run keeps in bf16 (16-bit operands, the bf16 rate)."""
    return replace(_gemm(name, m, n, k, replace(d, in_B=d.act_B), groups), dtype="bf16")


def _fp8_forward(forward: list, d: LayerDims, fp8: FP8Options) -> list:
    """The forward of an fp8 layer: each FP8 GEMM preceded by the cast of its input (with
    ``fp8.dispatch`` the expert input is cast once per token before the dispatch, not per
    routed copy); the router in bf16; delayed scaling's amax update of the layer's input,
    weight and gradient tensors at the end. Weights are cast once a step (the optimizer's)."""
    out, gemms = [], 0.0
    for op, how in forward:
        if how[0] != "gemm":
            out.append((op, how))
            continue
        _, m, groups, share, raw = how
        if raw.name == "router":   # Megatron-Core's TopKRouter is a torch linear, not TE
            raw = _bf16_gemm(raw.name, m, raw.n, raw.k, d, groups)
            out.append((_scaled(raw, share), ("gemm", m, groups, share, raw)))
            continue
        elements = (d.t if fp8.dispatch and raw.name == "expert_up" else m) * raw.k
        out.append((_scaled(quantize_op(raw.name + "_quantize", elements, fp8, d.act_B),
                            share), ("fp8",)))
        out.append((op, how))
        gemms += share
    update = amax_update_op("fp8_amax_update", 3 * gemms, fp8)
    return out + [(update, ("fp8",))] if update else out


def _backward(forward: list, d: LayerDims, recompute: str, fp8: FP8Options | None) -> list:
    """The backward ops of a layer from its forward (see :func:`layer_ops`); under fp8 each
    FP8 GEMM's output gradient is cast before its dgrad and wgrad."""
    bwd = []
    for op, how in reversed(forward):
        if how[0] == "gemm":
            _, m, groups, share, raw = how
            if fp8 is not None and raw.dtype != "bf16":
                bwd.append(_scaled(quantize_op(raw.name + "_grad_quantize", m * raw.n, fp8,
                                               d.act_B), share))
            bwd.extend(_scaled(o, share) for o in _gemm_bwd(raw, m, d, groups))
        elif how[0] == "core":
            _, core_fwd, core_bwd = how
            if recompute == "selective":
                bwd.extend(replace(o, name=o.name + "_recompute") for o in core_fwd)
            bwd.extend(core_bwd)
        elif how[0] in ("in_core", "fp8"):
            continue
        else:
            _, what, elems, reads, writes, extra = how
            bwd.append(OpCost(op.name + "_bwd", "elementwise",
                              2 * ELEMENTWISE_FLOPS[what] * elems,
                              (reads + writes) * elems * d.act_B + extra))
    return bwd


@functools.lru_cache(maxsize=4096)
def layer_ops(model: ModelSpec, shard: Shard, micro_batch: int, seq_len: int, precision: str,
              recompute: str = "none", causal: bool = True, attention: str = "flash",
              moe_share: float | None = None, fp8: FP8Options | None = None
              ) -> MappingProxyType:
    """The kernels of one transformer layer for one micro-batch on one rank.

    Returns a read-only ``{"fwd": (OpCost, ...), "bwd": (OpCost, ...)}``. ``recompute``:
    ``full`` replays the whole layer forward at the start of the backward, ``selective``
    replays the attention core just before its backward (Korthikanti et al. 2022).
    ``attention``: ``flash`` (one fused kernel each way) or ``materialized`` (the s^2 scores
    through memory, see :func:`~clustersim.workload.attention.materialized_attention_ops`;
    dropout on them when ``model.dropout``). ``moe_share``: the share of MoE layers among the
    layers this mean layer stands for (default the model's; a pipeline chunk passes its own).
    ``fp8`` (with ``precision="fp8"``): the scaling recipe, whose casts and amax updates are
    priced as memory-bound kernels (:mod:`~clustersim.workload.fp8`); None prices the FP8
    GEMMs alone.

    >>> from clustersim.workload.models import get_model
    >>> ops = layer_ops(get_model("gpt3-175b"), Shard(tp=8), 1, 2048, "bf16", "selective")
    >>> [op.name for op in ops["bwd"]][:3]
    ['mlp_residual_bwd', 'mlp_down_dgrad', 'mlp_down_wgrad']
    >>> "attention_recompute" in [op.name for op in ops["bwd"]]
    True
    >>> ops = layer_ops(get_model("gpt3-175b"), Shard(tp=8), 1, 2048, "bf16",
    ...                 attention="materialized")
    >>> [op.name for op in ops["fwd"]][2:6]
    ['attention_scores', 'attention_softmax', 'attention_dropout', 'attention_context']
    """
    if recompute not in ("none", "selective", "full"):
        raise InputError(f"recompute must be none, selective or full, got {recompute!r}")
    if attention not in ATTENTION_KINDS:
        raise InputError(f"attention must be {' or '.join(ATTENTION_KINDS)}, got "
                         f"{attention!r}")
    d = layer_dims(model, shard, micro_batch, seq_len, precision)
    if fp8 is not None:   # the GEMMs read the recipe's scales with their fp8 operands
        d = replace(d, in_B=fp8.operand_B)
    # Transformer Engine runs GEMMs in fp8 / fp4 but attention in bf16
    forward = _forward(model, d, causal, "bf16" if precision in ("fp8", "fp4") else "",
                       attention, moe_share)
    if fp8 is not None:
        forward = _fp8_forward(forward, d, fp8)
    fwd, bwd = [op for op, _ in forward], _backward(forward, d, recompute, fp8)
    if recompute == "full":
        bwd = [replace(op, name=op.name + "_recompute") for op in fwd] + bwd
    return MappingProxyType({"fwd": tuple(fwd), "bwd": tuple(bwd)})


def attention_params_on_rank(model: ModelSpec, tp: int) -> int:
    """Attention projections of one layer on one rank: cut by heads over tp (KV heads
    replicated when tp exceeds them); MLA's down-projections replicated on every rank.

    >>> from clustersim.workload.models import get_model
    >>> v3 = get_model("deepseek-v3")
    >>> attention_params_on_rank(v3, 1) == v3.attention_params
    True
    """
    h, mla = model.hidden, model.mla
    if mla is None:
        q = model.heads // tp * model.head_dim
        kv = (model.kv_heads // tp if model.kv_heads % tp == 0 else 1) * model.head_dim
        return 2 * h * q + 2 * h * kv
    heads = model.heads // tp
    q = (h * mla.q_lora_rank + mla.q_lora_rank * heads * mla.qk_head_dim if mla.q_lora_rank
         else h * heads * mla.qk_head_dim)
    kv = h * mla.kv_cache_width + mla.kv_lora_rank * heads * (mla.qk_nope_head_dim
                                                              + mla.v_head_dim)
    return q + kv + heads * mla.v_head_dim * h


def layer_params_on_rank(model: ModelSpec, tp: int, ep: int = 1,
                         moe_layer: bool | None = None) -> tuple[float, float]:
    """(dense, expert) parameters of one layer on one rank: matrices cut by tp (see
    :func:`attention_params_on_rank`), routed experts by ep; norm gains and the router
    replicated, shared experts cut by tp like the dense MLP. ``moe_layer``: a layer with an
    MoE MLP (True) or a dense one (False); None: the mean over the model's layers.

    >>> from clustersim.workload.models import get_model
    >>> layer_params_on_rank(get_model("gpt3-175b"), 1) == (get_model("gpt3-175b").layer_params, 0)
    True
    """
    attention = attention_params_on_rank(model, tp)
    dense_layer = (attention + model.ffn_matrices * model.hidden * -(-model.ffn_hidden // tp)
                   + model.norm_params)
    if model.moe is None or moe_layer is False:
        return dense_layer, 0
    expert = model.ffn_matrices * model.hidden * -(-model.expert_ffn_hidden // tp)
    moe_dense = (attention + model.moe.shared_experts * expert + model.router_params
                 + model.norm_params)
    moe_expert = model.experts // ep * expert
    share = model.moe_fraction
    if moe_layer or share == 1.0:
        return moe_dense, moe_expert
    return share * moe_dense + (1 - share) * dense_layer, share * moe_expert


# ------------------------------------------------------------------ first and last stage

def embedding_ops(model: ModelSpec, shard: Shard, micro_batch: int, seq_len: int,
                  precision: str) -> MappingProxyType:
    """Vocab-parallel input embedding (first pipeline stage): a row gather and its scatter-add.

    >>> from clustersim.workload.models import get_model
    >>> embedding_ops(get_model("llama3-8b"), Shard(), 1, 8192, "bf16")["fwd"][0].kind
    'embedding'
    """
    d = layer_dims(model, shard, micro_batch, seq_len, precision)
    rows_B = d.t * d.h * d.act_B
    fwd = OpCost("embedding", "embedding", 0.0, rows_B / shard.tp + rows_B + 8 * d.t)
    # the gradient rows are accumulated into an fp32 table slice: read + write 4 bytes each
    bwd = OpCost("embedding_bwd", "embedding", d.t * d.h / shard.tp,
                 rows_B + 8 * d.t * d.h / shard.tp)
    return MappingProxyType({"fwd": (fwd,), "bwd": (bwd,)})


def logits_ops(model: ModelSpec, shard: Shard, micro_batch: int, seq_len: int,
               precision: str) -> MappingProxyType:
    """Final norm, vocab-parallel output projection and cross-entropy (last pipeline stage).

    The cross-entropy reads the logits and writes fp32 softmax statistics over the vocabulary
    slice (Megatron's vocab_parallel_cross_entropy); its backward writes the logit gradient.

    >>> from clustersim.workload.models import get_model
    >>> ops = logits_ops(get_model("llama3-8b"), Shard(), 1, 8192, "bf16")
    >>> ops["fwd"][1].flops == 2 * 8192 * 4096 * 128256
    True
    """
    d = layer_dims(model, shard, micro_batch, seq_len, precision)
    norm = _elementwise("final_norm", "norm", d.t_norm * d.h, 1, 1, d)
    # under fp8 the output layer stays bf16 (Megatron-Core's output layer is no TE module)
    logits = _bf16_gemm("logits", d.t, d.vocab, d.h, d, 1) if precision == "fp8" else \
        _gemm("logits", d.t, d.vocab, d.h, d)
    entries = d.t * d.vocab
    ce = OpCost("cross_entropy", "elementwise", ELEMENTWISE_FLOPS["softmax"] * entries,
                entries * (d.act_B + 4))
    ce_bwd = OpCost("cross_entropy_bwd", "elementwise", 2 * ELEMENTWISE_FLOPS["softmax"]
                    * entries, entries * (4 + d.act_B))
    norm_bwd = _elementwise("final_norm_bwd", "norm", d.t_norm * d.h, 2, 1, d)
    return MappingProxyType({"fwd": (norm, logits, ce),
                             "bwd": (ce_bwd, *_gemm_bwd(logits, d.t, d), norm_bwd)})


# ------------------------------------------------------------------ optimizer and gradients

def optimizer_ops(params_on_rank: float, precision: str, optimizer: str = "adam",
                  zero: int = 0, shard_group: int = 1) -> list:
    """The optimizer step of one rank; with ZeRO >= 1 it updates 1/shard_group of its params.

    Memory-bound: Adam reads the gradient and the fp32 master weight and two moments, writes
    the three back and the 16-bit model copy (ZeRO paper's 2+2+12 bytes layout); SGD with
    momentum has one moment. fp32 training keeps no separate master copy. Call it once for
    dense and once for expert parameters when their shard groups differ.

    >>> optimizer_ops(1e9, "bf16")[0].bytes / 1e9, optimizer_ops(1e9, "bf16", zero=1,
    ...                                                          shard_group=8)[0].bytes / 1e9
    (28.0, 3.5)
    """
    if optimizer not in ("adam", "sgd"):
        raise InputError(f"optimizer must be adam or sgd, got {optimizer!r}")
    act_B, _ = element_bytes(precision)
    updated = params_on_rank / shard_group if zero >= 1 else params_on_rank
    master = 0 if precision == "fp32" else 4
    state_B = master + 4 * (2 if optimizer == "adam" else 1)
    bytes_per = act_B + 2 * state_B + act_B
    flops = _ADAM_FLOPS if optimizer == "adam" else _SGD_FLOPS
    return [OpCost("optimizer_step", "optimizer", flops * updated, bytes_per * updated)]


# ------------------------------------------------------------------ whole-model FLOP counts

def model_flops_per_token(model: ModelSpec, seq_len: int | None = None) -> float:
    """Model FLOPs per token for MFU, PaLM (Chowdhery et al. 2022, App. B): 6N + 12 L H Q T.

    N is :attr:`ModelSpec.matmul_params` (active parameters in matrix multiplies, the output
    projection included, the input lookup not): with it PaLM 540B's 238.3k tokens/s on 6144
    TPU v4 (275 TFLOP/s) gives PaLM's 46.2%. The attention term counts full (non-causal)
    attention, as PaLM does, over min(attention_window, T) keys. For an MoE model N counts
    the active parameters (shared and top_k routed experts, the router, the dense layers
    as they are); for MLA, H Q is heads x (qk_head_dim + v_head_dim) / 2.

    >>> from clustersim.workload.models import get_model
    >>> palm = get_model("palm-540b")
    >>> round(model_flops_per_token(palm) * 238.3e3 / (6144 * 275e12), 3)
    0.462
    """
    s = _attended_keys(model, seq_len or model.seq_len)
    return 6.0 * model.matmul_params + 12.0 * model.layers * model.heads * model.head_dim * s


def _attended_keys(model: ModelSpec, seq_len: int) -> int:
    """T of PaLM's attention term: the keys a query may attend to, min(window, seq)."""
    window = model.attention_window
    return min(window, seq_len) if window else seq_len


def hardware_flops_per_token(model: ModelSpec, seq_len: int | None = None,
                             recompute: str = "none") -> float:
    """Model FLOPs plus the forward work recomputation repeats (for HFU).

    ``selective`` repeats the attention core (4 L H Q T); ``full`` repeats every layer's
    forward (2 N_layers + 4 L H Q T), not the output projection. Same conventions as
    :func:`model_flops_per_token`; a flash backward's own recomputation is not counted.

    >>> from clustersim.workload.models import get_model
    >>> gpt = get_model("gpt3-175b")
    >>> round(hardware_flops_per_token(gpt, recompute="full") / model_flops_per_token(gpt), 3)
    1.332
    """
    s = seq_len or model.seq_len
    attention_fwd = 4.0 * model.layers * model.heads * model.head_dim * _attended_keys(model, s)
    extra = {"none": 0.0, "selective": attention_fwd,
             "full": 2.0 * (model.matmul_params - model.vocab * model.hidden) + attention_fwd}
    if recompute not in extra:
        raise InputError(f"recompute must be none, selective or full, got {recompute!r}")
    return model_flops_per_token(model, s) + extra[recompute]


def megatron_flops_per_iteration(model: ModelSpec, global_batch: int,
                                 seq_len: int | None = None) -> float:
    """Narayanan et al. 2021, eq. 3: 96 B s l h^2 (1 + s/6h + V/16lh).

    It counts full activation recomputation (four passes over every layer) and a GPT layer
    (MHA, 4h GELU MLP); the Megatron-LM 2021 TFLOP/s rows use it, so compare them with this
    and not with model FLOPs (their MFU is about 3/4 of the figure they print).

    >>> from clustersim.workload.models import get_model
    >>> gpt = get_model("gpt3-175b")
    >>> round(megatron_flops_per_iteration(gpt, 1536) / 1e18, 2)
    4.51
    >>> per_token = megatron_flops_per_iteration(gpt, 1536) / (1536 * 2048)
    >>> round(per_token / hardware_flops_per_token(gpt, recompute="full"), 4)  # norms aside
    1.0
    """
    s = seq_len or model.seq_len
    B, l, h, V = global_batch, model.layers, model.hidden, model.vocab
    return 96.0 * B * s * l * h * h * (1 + s / (6.0 * h) + V / (16.0 * l * h))
