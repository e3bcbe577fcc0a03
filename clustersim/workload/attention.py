"""The attention core of a layer on one rank: flash (fused) or materialized kernels.

- ``flash`` (the default) is flash-style attention (Dao et al. 2022/2023): no s^2 tensor
  touches device memory. Causal attention executes half the score/value FLOPs of full
  attention (masked tiles are skipped; the diagonal tiles are ignored). The backward executes
  2.5x the forward FLOPs (five matmuls against two: it recomputes QK^T), the
  FlashAttention-2 benchmark convention.
- ``materialized`` is the unfused attention of Megatron-LM before flash kernels (2019-22,
  ``CoreAttention``): batched GEMMs per head write and read the b a s^2 scores in the
  activation dtype, with a fused scale-mask-softmax and (with dropout) a dropout pass between
  them; masked (causal) entries are computed in full.

Op names: the backward ops end in ``_bwd``, ``_dgrad`` or ``_wgrad``; the compute model relies
on the flash backward being ``attention_bwd``. :func:`~clustersim.workload.flops.layer_ops`
places these kernels in the layer (and replays them under selective recomputation).

>>> from clustersim.workload.models import get_model
>>> from clustersim.workload.ops import Shard, layer_dims
>>> llama = get_model("llama3-8b")
>>> d = layer_dims(llama, Shard(tp=2), 1, 8192, "bf16")
>>> [[op.name for op in ops] for ops in attention_ops(llama, d, True, attention="flash")]
[['attention'], ['attention_bwd']]
"""

from __future__ import annotations

from dataclasses import replace

from clustersim.errors import InputError
from clustersim.workload.models import ModelSpec
from clustersim.workload.ops import ELEMENTWISE_FLOPS, LayerDims, OpCost

__all__ = ["ATTENTION_KINDS", "attention_ops", "flash_attention_ops",
           "materialized_attention_ops", "attention_core"]

ATTENTION_KINDS = ("flash", "materialized")
_FA_BWD_FLOPS = 2.5     # FlashAttention backward / forward FLOPs (Dao 2023)


def attention_ops(model: ModelSpec, d: LayerDims, causal: bool, dtype: str = "",
                  attention: str = "flash") -> tuple[list[OpCost], list[OpCost]]:
    """Forward and backward kernels of the attention core (``attention``: one of
    :data:`ATTENTION_KINDS`) for a rank's share ``d`` of a layer; ``dtype`` overrides the
    run's precision for these ops ('' = the run's). Materialized attention computes masked
    scores in full, so ``causal`` only changes flash attention.

    >>> from clustersim.workload.models import get_model
    >>> from clustersim.workload.ops import Shard, layer_dims
    >>> llama = get_model("llama3-8b")
    >>> d = layer_dims(llama, Shard(), 1, 2048, "bf16")
    >>> attention_ops(llama, d, True, attention="fused")
    Traceback (most recent call last):
    ...
    clustersim.errors.InputError: attention must be flash or materialized, got 'fused'
    """
    if attention == "flash":
        return flash_attention_ops(model, d, causal, dtype)
    if attention == "materialized":
        return materialized_attention_ops(model, d, dtype)
    raise InputError(f"attention must be {' or '.join(ATTENTION_KINDS)}, got {attention!r}")


def attention_core(ops) -> list[OpCost]:
    """The attention-core kernels among a layer's ``ops`` (forward, backward, and their
    ``_recompute`` replays): every builder of this module names its kernels ``attention*``
    and no other op of a layer is so named. Ring attention runs these, and only these,
    beside its K/V rotation.

    >>> from clustersim.workload.flops import layer_ops
    >>> from clustersim.workload.models import get_model
    >>> from clustersim.workload.ops import Shard
    >>> ops = layer_ops(get_model("llama3-8b"), Shard(), 1, 2048, "bf16", "selective")
    >>> [op.name for op in attention_core(ops["bwd"])]
    ['attention_recompute', 'attention_bwd']
    """
    return [op for op in ops if op.name.startswith("attention")]


def flash_attention_ops(model: ModelSpec, d: LayerDims, causal: bool, dtype: str = ""
                        ) -> tuple[list[OpCost], list[OpCost]]:
    """Forward and backward kernel of fused (flash) attention: queries, keys, values and the
    output through memory once, 4 bytes of softmax statistics per query row; no score tensor.

    >>> from clustersim.workload.models import get_model
    >>> from clustersim.workload.ops import Shard, layer_dims
    >>> d = layer_dims(get_model("llama3-8b"), Shard(), 1, 4096, "bf16")
    >>> fwd, bwd = flash_attention_ops(get_model("llama3-8b"), d, causal=True)
    >>> fwd[0].flops == 4 * 4096 * 4096 * 4096 / 2, bwd[0].flops / fwd[0].flops
    (True, 2.5)
    """
    fwd = _flash_forward(model, d, causal, dtype)
    return [fwd], [_flash_backward(fwd, d)]


def _flash_forward(model: ModelSpec, d: LayerDims, causal: bool, dtype: str) -> OpCost:
    full = 4.0 * d.b * d.s_local * d.s_full * d.q
    keys = d.s_full // 2 if causal else d.s_full
    bytes_ = (2 * d.t * d.q + 2 * d.b * d.s_full * d.kvw) * d.act_B + 4 * d.t * d.heads
    return OpCost("attention", "attention", full / 2 if causal else full, bytes_,
                  int(d.t * d.heads), max(1, keys), model.head_dim, dtype)


def _flash_backward(fwd: OpCost, d: LayerDims) -> OpCost:
    bytes_ = (4 * d.t * d.q + 4 * d.b * d.s_full * d.kvw) * d.act_B + 8 * d.t * d.heads
    return replace(fwd, name="attention_bwd", flops=_FA_BWD_FLOPS * fwd.flops, bytes=bytes_)


def materialized_attention_ops(model: ModelSpec, d: LayerDims, dtype: str = ""
                               ) -> tuple[list[OpCost], list[OpCost]]:
    """Forward and backward kernels of unfused attention (Megatron-LM ``CoreAttention``).

    Each matrix product is one batched GEMM, one GEMM per head (batch = b x heads on this
    rank), over E = b a s s_k scores (s queries on this rank, s_k keys: the whole sequence)
    held in the activation dtype; dropout adds a 1-byte mask per score. Forward:
    ``attention_scores`` Z = Q K^T writes E; ``attention_softmax`` (the fused
    scale-mask-softmax) reads Z, writes P; ``attention_dropout`` reads P, writes P' and the
    mask; ``attention_context`` O = P' V reads P' (P without dropout). Backward:
    ``attention_context_dgrad`` dP' = dO V^T writes E (the left operand's gradient, as a
    GEMM's dgrad), ``attention_context_wgrad`` dV = P'^T dO reads P' (the right operand's, as
    a wgrad); the dropout backward reads dP' and the mask, writes dP; the softmax backward
    reads P and dP, writes dS; ``attention_scores_dgrad`` dQ = dS K and ``_wgrad`` dK = dS^T Q
    read dS. Megatron generates the causal mask inside the softmax kernel (nothing read) and
    computes the masked scores in full. The backward's four GEMMs are twice the forward's.

    >>> from clustersim.workload.models import get_model
    >>> from clustersim.workload.ops import Shard, layer_dims
    >>> gpt = get_model("gpt3-175b")
    >>> fwd, bwd = materialized_attention_ops(gpt, layer_dims(gpt, Shard(tp=8), 1, 2048, "bf16"))
    >>> [op.name for op in fwd]
    ['attention_scores', 'attention_softmax', 'attention_dropout', 'attention_context']
    >>> sum(op.flops for op in bwd if op.kind == "gemm") / sum(
    ...     op.flops for op in fwd if op.kind == "gemm")
    2.0
    """
    s, keys, hd, batch = d.s_local, d.s_full, model.head_dim, d.b * d.heads
    scores = float(batch * s * keys)
    q_B, kv_B, p_B = d.t * d.q * d.act_B, d.b * keys * d.kvw * d.act_B, scores * d.act_B
    mask_B = scores if model.dropout else 0.0
    ew = ELEMENTWISE_FLOPS

    # each moves one E-sized operand and two of Q, K, V, O or their gradients (one of query
    # width, one of KV width)
    def bgemm(name, m, n, k):
        return OpCost(name, "gemm", 2.0 * scores * hd, p_B + q_B + kv_B, m, n, k, dtype, batch)

    def pointwise(name, flops, tensors):
        return OpCost(name, "elementwise", flops * scores, tensors * p_B + mask_B, dtype=dtype)

    fwd = [bgemm("attention_scores", s, keys, hd),
           OpCost("attention_softmax", "elementwise", ew["softmax"] * scores, 2 * p_B,
                  dtype=dtype)]
    bwd = [bgemm("attention_context_dgrad", s, keys, hd),
           bgemm("attention_context_wgrad", keys, hd, s)]
    if model.dropout:
        fwd.append(pointwise("attention_dropout", ew["dropout"], 2))
        bwd.append(pointwise("attention_dropout_bwd", 2 * ew["dropout"], 2))
    fwd.append(bgemm("attention_context", s, hd, keys))
    bwd += [OpCost("attention_softmax_bwd", "elementwise", 2 * ew["softmax"] * scores,
                   3 * p_B, dtype=dtype),
            bgemm("attention_scores_dgrad", s, hd, keys),
            bgemm("attention_scores_wgrad", hd, keys, s)]
    return fwd, bwd
