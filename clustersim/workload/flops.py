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
  in 8 bits under fp8 (Transformer Engine keeps attention and elementwise ops in bf16).
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
from clustersim.workload.models import ModelSpec
from clustersim.workload.ops import (ELEMENTWISE_FLOPS, PRECISIONS, LayerDims, OpCost, Shard,
                                     element_bytes, layer_dims)

# OpCost, Shard, PRECISIONS and element_bytes live in workload.ops and ATTENTION_KINDS in
# workload.attention (the attention builders need them); they stay importable from here.
__all__ = [
    "OpCost", "Shard", "PRECISIONS", "ATTENTION_KINDS", "element_bytes",
    "layer_params_on_rank", "layer_ops", "embedding_ops", "logits_ops", "optimizer_ops",
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
    n, k = op.n, op.k
    dgrad = OpCost(op.name + "_dgrad", "gemm", op.flops,
                   (m * n + groups * n * k) * d.in_B + m * k * d.act_B, op.m, k, n)
    wgrad = OpCost(op.name + "_wgrad", "gemm", op.flops,
                   (k * m + m * n) * d.in_B + groups * k * n * d.act_B, k, n, op.m)
    return [dgrad, wgrad]


def _elementwise(name: str, what: str, elements: float, reads: float, writes: float,
                 d: LayerDims, extra_B: float = 0.0) -> OpCost:
    return OpCost(name, "elementwise", ELEMENTWISE_FLOPS[what] * elements,
                  (reads + writes) * elements * d.act_B + extra_B)


def _forward(model: ModelSpec, d: LayerDims, causal: bool, attn_dtype: str, attention: str
             ) -> list[tuple[OpCost, tuple]]:
    """Forward ops of one layer, each with how to build its backward."""
    drop_B = d.t_norm * d.h if model.dropout else 0.0      # 1-byte dropout mask
    up_width = 2 * d.ffn if model.ffn == "swiglu" else d.ffn
    act = model.ffn
    act_rw = (2, 1, 3, 2) if act == "swiglu" else (1, 1, 2, 1)  # fwd reads, writes; bwd ...
    ops: list[tuple[OpCost, tuple]] = []

    def add_ew(name, what, elems, rw, extra=0.0):
        ops.append((_elementwise(name, what, elems, rw[0], rw[1], d, extra),
                    ("ew", what, elems, rw[2], rw[3], extra)))

    def add_gemm(name, m, n, k, groups=1):
        ops.append((_gemm(name, m, n, k, d, groups), ("gemm", m, groups)))

    def core():   # the attention core; its last op carries the backward of all of it
        fwd, bwd = attention_ops(model, d, causal, attn_dtype, attention)
        ops.extend((op, ("in_core",)) for op in fwd[:-1])
        ops.append((fwd[-1], ("core", tuple(fwd), tuple(bwd))))

    def mlp():
        if model.moe is None:
            add_gemm("mlp_up", d.t, up_width, d.h)
            add_ew("mlp_act", act, d.t * d.ffn, act_rw)
            add_gemm("mlp_down", d.t, d.h, d.ffn)
            return
        routed = d.t * model.moe.top_k * model.moe.capacity_factor
        add_gemm("router", d.t, model.moe.experts, d.h)
        add_ew("moe_permute", "permute", routed * d.h, (1, 1, 1, 1))
        add_gemm("expert_up", routed, up_width, d.h, d.experts)
        add_ew("expert_act", act, routed * d.ffn, act_rw)
        add_gemm("expert_down", routed, d.h, d.ffn, d.experts)
        add_ew("moe_unpermute", "permute", routed * d.h, (1, 1, 1, 1))

    if model.parallel_attention:   # PaLM: y = x + Attn(LN(x)) + MLP(LN(x))
        add_ew("norm", "norm", d.t_norm * d.h, (1, 1, 2, 1))
        add_gemm("qkv_proj", d.t, d.q + 2 * d.kvw, d.h)
        core()
        add_gemm("out_proj", d.t, d.h, d.q)
        mlp()
        add_ew("residual", "residual", d.t_norm * d.h, (3, 1, 1, 2), drop_B)
        return ops
    add_ew("attn_norm", "norm", d.t_norm * d.h, (1, 1, 2, 1))
    add_gemm("qkv_proj", d.t, d.q + 2 * d.kvw, d.h)
    core()
    add_gemm("out_proj", d.t, d.h, d.q)
    add_ew("attn_residual", "residual", d.t_norm * d.h, (2, 1, 2, 1), drop_B)
    add_ew("mlp_norm", "norm", d.t_norm * d.h, (1, 1, 2, 1))
    mlp()
    add_ew("mlp_residual", "residual", d.t_norm * d.h, (2, 1, 2, 1), drop_B)
    return ops


@functools.lru_cache(maxsize=4096)
def layer_ops(model: ModelSpec, shard: Shard, micro_batch: int, seq_len: int, precision: str,
              recompute: str = "none", causal: bool = True, attention: str = "flash"
              ) -> MappingProxyType:
    """The kernels of one transformer layer for one micro-batch on one rank.

    Returns a read-only ``{"fwd": (OpCost, ...), "bwd": (OpCost, ...)}``. ``recompute``:
    ``full`` replays the whole layer forward at the start of the backward, ``selective``
    replays the attention core just before its backward (Korthikanti et al. 2022).
    ``attention``: ``flash`` (one fused kernel each way) or ``materialized`` (the s^2 scores
    through memory, see :func:`~clustersim.workload.attention.materialized_attention_ops`;
    dropout on them when ``model.dropout``).

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
    # Transformer Engine runs GEMMs in fp8 but attention in bf16
    forward = _forward(model, d, causal, "bf16" if precision == "fp8" else "", attention)
    fwd, bwd = [op for op, _ in forward], []
    for op, how in reversed(forward):
        if how[0] == "gemm":
            bwd.extend(_gemm_bwd(op, how[1], d, how[2]))
        elif how[0] == "core":
            _, core_fwd, core_bwd = how
            if recompute == "selective":
                bwd.extend(replace(o, name=o.name + "_recompute") for o in core_fwd)
            bwd.extend(core_bwd)
        elif how[0] == "in_core":
            continue
        else:
            _, what, elems, reads, writes, extra = how
            bwd.append(OpCost(op.name + "_bwd", "elementwise",
                              2 * ELEMENTWISE_FLOPS[what] * elems,
                              (reads + writes) * elems * d.act_B + extra))
    if recompute == "full":
        bwd = [replace(op, name=op.name + "_recompute") for op in fwd] + bwd
    return MappingProxyType({"fwd": tuple(fwd), "bwd": tuple(bwd)})


def layer_params_on_rank(model: ModelSpec, tp: int, ep: int = 1) -> tuple[float, float]:
    """(dense, expert) parameters of one layer on one rank: matrices cut by tp (KV heads
    replicated when tp exceeds them), experts by ep; norm gains and the router replicated.

    >>> from clustersim.workload.models import get_model
    >>> layer_params_on_rank(get_model("gpt3-175b"), 1) == (get_model("gpt3-175b").layer_params, 0)
    True
    """
    q = model.heads // tp * model.head_dim
    kv = (model.kv_heads // tp if model.kv_heads % tp == 0 else 1) * model.head_dim
    attention = 2 * model.hidden * q + 2 * model.hidden * kv
    mlp = model.ffn_matrices * model.hidden * -(-model.ffn_hidden // tp)
    if model.moe is None:
        return attention + mlp + model.norm_params, 0
    return attention + model.router_params + model.norm_params, model.experts // ep * mlp


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
    logits = _gemm("logits", d.t, d.vocab, d.h, d)
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
    attention, as PaLM does.

    >>> from clustersim.workload.models import get_model
    >>> palm = get_model("palm-540b")
    >>> round(model_flops_per_token(palm) * 238.3e3 / (6144 * 275e12), 3)
    0.462
    """
    s = seq_len or model.seq_len
    return 6.0 * model.matmul_params + 12.0 * model.layers * model.heads * model.head_dim * s


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
    attention_fwd = 4.0 * model.layers * model.heads * model.head_dim * s
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
