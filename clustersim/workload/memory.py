"""Device memory of a training step: weights, gradients, optimizer state, activations, buffers.

Model state (Rajbhandari et al. 2020, ZeRO, Sec. 3.1): mixed-precision Adam keeps 2 bytes of
16-bit parameters, 2 of 16-bit gradients and 12 of fp32 master weights and moments per
parameter (K = 12); ZeRO stage 1 shards the optimizer states, 2 also the gradients, 3 also
the parameters, over the shard group (``shard_group`` data-parallel ranks x cp, since the
context-parallel ranks hold the same weights; expert weights over their expert-data-parallel
ranks). fp32 training: 4 + 4 + 8 (no master copy). SGD with momentum: 8 (4 in fp32).

Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models", Sec. 4): per layer ``sbh (34 + 5as/h)`` bytes for a GPT layer with 16-bit
activations and dropout, ``sbh (10 + 24/t + 5as/ht)`` with tensor parallelism, ``sbh/t
(34 + 5as/h)`` with TP + SP, ``34 sbh/t`` with selective recomputation, ``2sbh`` per layer
with full recomputation. We model the same terms, generalised to GQA/MQA, SwiGLU, other MLP
widths, MoE and parallel blocks (see :func:`layer_activation_bytes`). With flash attention
(``flash_attention=True``, the default; ``training.attention: flash``) the ``5as/h`` term
(softmax output, its dropout mask and output) is never stored: only the fp32 log-sum-exp
(4 bytes per row) is kept. Materialised attention (``flash_attention=False``;
``training.attention: materialized``) stores it: exactly the s^2 tensors the backward of
:func:`~clustersim.workload.flops.layer_ops` reads. Pipeline schedules keep several
micro-batches in flight (:class:`InFlight`, read off the schedule by the step plan).

>>> from clustersim.workload.models import get_model
>>> from clustersim.workload.plan import ParallelPlan
>>> plan = ParallelPlan(tp=8, pp=1, dp=8, sp=True, zero=1, shard_group=8, seq_len=8192,
...                     stage_layers=(32,))
>>> mem = memory_footprint(get_model("llama3-8b"), plan, precision="bf16")
>>> round(mem.parameters_B / 2**30, 2), round(mem.optimizer_states_B / 2**30, 2)
(1.87, 1.4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clustersim.workload.flops import layer_params_on_rank
from clustersim.workload.fp8 import FP8Options, layer_fp8_weights
from clustersim.workload.models import ModelSpec
from clustersim.workload.ops import Shard, element_bytes
from clustersim.workload.plan import ParallelPlan

__all__ = ["MemoryBreakdown", "StageParameters", "InFlight", "stage_parameters",
           "stage_fp8_weights",
           "stage_layer_kinds", "layer_activation_bytes", "memory_footprint",
           "kv_cache_bytes_per_token", "kv_cache_bytes", "context_parallel_buffer_bytes"]


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes on one device at the step's peak, by what holds them."""

    parameters_B: float
    gradients_B: float
    optimizer_states_B: float
    activations_B: float
    temporary_B: float

    @property
    def total_B(self) -> float:
        """Everything together."""
        return (self.parameters_B + self.gradients_B + self.optimizer_states_B
                + self.activations_B + self.temporary_B)


@dataclass(frozen=True)
class StageParameters:
    """Parameters on one rank of a pipeline stage, after TP/EP/PP cuts and before ZeRO.

    ``tied_embedding``: the share of ``dense`` that is an embedding table tied across the
    first and last stage (its gradient is summed between them).
    """

    dense: float
    expert: float
    tied_embedding: float = 0.0

    @property
    def total(self) -> float:
        """Dense and expert parameters together."""
        return self.dense + self.expert


def _kv_heads_on_rank(model: ModelSpec, tp: int) -> int:
    return model.kv_heads // tp if model.kv_heads % tp == 0 else 1  # replicated KV (MQA/GQA)


def stage_layer_kinds(model: ModelSpec, plan: ParallelPlan, stage: int) -> tuple[int, int]:
    """(dense, MoE) layers held by physical pipeline ``stage``: virtual stage j holds the
    stage_layers[j] layers after those of stages 0..j-1 (pipeline order), so DeepSeek-V3's
    leading dense layers sit on the first stage.

    >>> from clustersim.workload.models import get_model
    >>> plan = ParallelPlan(pp=2, stage_layers=(30, 31), seq_len=4096)
    >>> stage_layer_kinds(get_model("deepseek-v3"), plan, 0), stage_layer_kinds(get_model("deepseek-v3"), plan, 1)
    ((3, 27), (0, 31))
    """
    layers = plan.layers_on_stage(stage)
    if model.moe is None:
        return layers, 0
    if (model.moe_layers == model.layers or sum(plan.stage_layers) != model.layers
            or plan.schedule == "zb-v"):   # ZB-V's chunks are not stored in model order
        moe = round(layers * model.moe_fraction)   # a plan not cut from this model: the mean
        return layers - moe, moe
    starts = [sum(plan.stage_layers[:j]) for j in range(len(plan.stage_layers))]
    moe = sum(model.is_moe_layer(i) for j in plan.virtual_stages_of(stage)
              for i in range(starts[j], starts[j] + plan.stage_layers[j]))
    return layers - moe, moe


def stage_parameters(model: ModelSpec, plan: ParallelPlan, stage: int = 0) -> StageParameters:
    """Parameters one rank of pipeline ``stage`` holds (norm gains and routers replicated).

    The first stage holds the vocab-parallel embedding, the last the output projection and
    final norm; with tied embeddings and pp > 1 the last stage holds a copy of the embedding
    (Megatron-LM), with pp = 1 the one table serves both. Under DualPipe both end stages
    hold model stages 0 and pp - 1 (one per direction, DeepSeek-V3 report Sec. 3.2.1), so
    each holds the embedding and the output projection; under ZB-V stage 0 holds both (the
    first and the last chunk of the V).

    >>> from clustersim.workload.models import get_model
    >>> plan = ParallelPlan(stage_layers=(32,), seq_len=8192)
    >>> stage_parameters(get_model("llama3-8b"), plan).total == get_model("llama3-8b").total_params
    True
    """
    dense_layers, moe_layers = stage_layer_kinds(model, plan, stage)
    dense_layer, _ = layer_params_on_rank(model, plan.tp, plan.ep, moe_layer=False)
    moe_dense, moe_expert = layer_params_on_rank(model, plan.tp, plan.ep, moe_layer=True)
    table = -(-model.vocab // plan.tp) * model.hidden
    dense, tied = dense_layers * dense_layer + moe_layers * moe_dense, 0.0
    first, last = stage == 0, stage == plan.pp - 1
    if plan.schedule == "dualpipe":
        first = last = first or last
    elif plan.schedule == "zb-v":   # the V starts and ends on stage 0
        first = last = stage == 0
    if first:
        dense += table
    if last:
        dense += model.hidden
        if not model.tied_embeddings or plan.pp > 1:
            dense += table
    if model.tied_embeddings and plan.pp > 1 and (first or last):
        tied = table
    return StageParameters(dense, moe_layers * moe_expert if model.moe else 0, tied)


def stage_fp8_weights(model: ModelSpec, plan: ParallelPlan, stage: int
                      ) -> tuple[float, float]:
    """(dense, expert) parameters of the FP8 GEMMs one rank of ``stage`` holds: its layers'
    matrices but the router; not the embedding, the output layer or the norms (bf16).

    >>> from clustersim.workload.models import get_model
    >>> m, plan = get_model("llama3-8b"), ParallelPlan(stage_layers=(32,), seq_len=8192)
    >>> stage_fp8_weights(m, plan, 0) == (32 * (m.layer_params - m.norm_params), 0.0)
    True
    """
    dense = expert = 0.0
    for moe_layer, count in zip((False, True), stage_layer_kinds(model, plan, stage)):
        if count:
            d, e = layer_fp8_weights(model, *layer_params_on_rank(model, plan.tp, plan.ep,
                                                                  moe_layer), float(moe_layer))
            dense, expert = dense + count * d, expert + count * e
    return dense, float(expert)


def _mlp_activation_bytes(model: ModelSpec, shard: Shard, sb: float, act_B: int,
                          moe_layer: bool, gemm_B: float | None = None) -> float:
    """What an MLP stores: the activation input (2f wide for SwiGLU) and the down-projection
    input; an MoE MLP also the permuted expert input, over the tokens the busiest EP rank's
    experts take (top_k x routed factor), and its shared experts over every token.
    ``gemm_B``: bytes per element of the saved GEMM inputs (fp8: TE keeps them quantised)."""
    act_in = 2 if model.ffn == "swiglu" else 1
    gemm_B = act_B if gemm_B is None else gemm_B
    per_width = act_B * act_in + gemm_B        # activation input, down-projection input
    if not moe_layer:
        return sb * -(-model.ffn_hidden // shard.tp) * per_width
    width = -(-model.expert_ffn_hidden // shard.tp)
    routed = sb * model.moe.top_k * model.moe.routed_factor(shard.ep)
    shared = sb * model.moe.shared_experts * width * per_width
    return routed * (width * per_width + gemm_B * model.hidden) + shared


def _mla_latent_bytes(model: ModelSpec, sb: float, act_B: int) -> float:
    """MLA's query and KV latents, each kept as its norm's input and the up-projection's."""
    return 2 * act_B * sb * (model.mla.q_lora_rank + model.mla.kv_lora_rank) if model.mla else 0.0


def layer_activation_bytes(model: ModelSpec, shard: Shard, micro_batch: int, seq_len: int,
                           precision: str = "bf16", recompute: str = "none",
                           flash_attention: bool = True, moe_layer: bool | None = None,
                           cp_comm: str = "p2p", gemm_B: float | None = None) -> float:
    """Activation bytes one layer stores for one micro-batch on one rank.

    Terms (per layer; s tokens of a sequence on this rank, b micro-batch, e bytes per
    activation, t = tp; the norm-region terms are divided by t only with SP): norm inputs
    ``2e sbh``; attention input ``e sbh``; Q, K, V ``e sb (q + 2 kv)/t`` (K/V over the whole
    gathered sequence with ``cp_comm: all_gather``; ring attention keeps its own K/V block
    and Ulysses the whole sequence of heads/cp, the same bytes as s/cp tokens of all heads);
    attention core without flash: the softmax output ``e``, and
    with dropout its 1-byte mask and output ``e + 1`` more, per score (``a s S b / t`` scores,
    S the whole sequence with CP; ``5 a s^2 b`` for 16-bit with dropout), with flash the
    log-sum-exp ``4 a s b / t``; output-projection input ``e sb q / t``; MLP input ``e sbh``;
    activation input ``e sb f/t`` (``2f`` for SwiGLU); down-projection input ``e sb f/t``;
    two 1-byte dropout masks ``sbh``. For a GPT layer this is Korthikanti's ``34 sbh + 5as^2b``.
    MoE: the MLP terms scale with the routed tokens (top_k x :meth:`MoESpec.routed_factor`,
    the busiest EP rank's) and the permuted expert input ``e sbh top_k`` is stored; shared
    experts store their MLP terms over every token. ``moe_layer``: a layer with an MoE MLP
    (True) or a dense one (False); None: the mean over the model's layers. MLA: Q, K, V
    and the output-projection input have the widths of its heads (the ModelSpec's head_dim is
    their mean), and the two latents are stored twice each (norm and up-projection inputs).
    Selective recomputation drops the attention core; full recomputation keeps only the
    layer input ``e sbh`` (/t with SP). ``gemm_B`` (fp8): bytes per element of the inputs of
    the FP8 GEMMs it saves (attention and MLP inputs, output- and down-projection inputs, the
    permuted expert input): TE saves the column-wise fp8 copy its wgrad reads; Q, K, V, norm
    and activation inputs stay 16-bit.

    >>> from clustersim.workload.models import get_model
    >>> gpt = get_model("gpt3-175b")
    >>> s, b, h, a = 2048, 1, 12288, 96
    >>> layer_activation_bytes(gpt, Shard(), b, s, flash_attention=False) == s*b*h*(34 + 5*a*s/h)
    True
    """
    act_B, _ = element_bytes(precision)
    gemm_B = act_B if gemm_B is None else gemm_B
    tp = shard.tp
    s_local = seq_len // shard.cp
    sb = s_local * micro_batch
    norm_tokens = sb / tp if shard.sp else sb
    h = model.hidden
    if recompute == "full":
        return act_B * h * norm_tokens
    q = model.heads // tp * model.head_dim
    kv = _kv_heads_on_rank(model, tp) * model.head_dim
    heads = model.heads // tp
    mask_B = norm_tokens * h if model.dropout else 0.0
    if recompute == "selective":
        core = 0.0
    elif flash_attention:
        core = 4.0 * heads * sb
    else:
        per_score = act_B + (act_B + 1 if model.dropout else 0)
        core = per_score * heads * s_local * seq_len * micro_batch
    kv_tokens = micro_batch * (seq_len if cp_comm == "all_gather" else s_local)
    attention = (act_B * (sb * q + kv_tokens * 2 * kv) + gemm_B * sb * q + core
                 + _mla_latent_bytes(model, sb, act_B))
    share = model.moe_fraction if moe_layer is None else float(bool(moe_layer))
    mlp = 0.0 if share == 1.0 else (1 - share) * _mlp_activation_bytes(model, shard, sb,
                                                                          act_B, False, gemm_B)
    if share > 0.0:
        mlp += share * _mlp_activation_bytes(model, shard, sb, act_B, True, gemm_B)
    if model.parallel_attention:  # one norm, one shared input, one residual mask
        return (act_B + gemm_B) * norm_tokens * h + attention + mlp + mask_B
    return (act_B + gemm_B) * 2 * norm_tokens * h + attention + mlp + 2 * mask_B


@dataclass(frozen=True)
class InFlight:
    """How many micro-batches' activations a stage holds at its peak, as its pipeline
    schedule runs (:func:`clustersim.step.schedules.in_flight_microbatches`): ``stage`` in
    units of the whole stage's activations, ``first_chunk`` and ``last_chunk`` of the chunks
    that hold the embedding and the output layer. ``InFlight()`` is one micro-batch.

    >>> InFlight().stage, InFlight(4.0, 4, 1).first_chunk
    (1.0, 4)
    """

    stage: float = 1.0
    first_chunk: int = 1
    last_chunk: int = 1


def _state_bytes(precision: str, optimizer: str) -> tuple[int, int, int]:
    if precision == "fp32":
        return 4, 4, {"adam": 8, "sgd": 4}[optimizer]
    return 2, 2, {"adam": 12, "sgd": 8}[optimizer]


def memory_footprint(model: ModelSpec, plan: ParallelPlan, micro_batch: int | None = None,
                     seq_len: int | None = None, precision: str = "bf16",
                     recompute: str = "none", stage: int = 0, *, optimizer: str = "adam",
                     flash_attention: bool = True, in_flight: InFlight = InFlight(),
                     fp8: FP8Options | None = None) -> MemoryBreakdown:
    """Peak memory of one device of pipeline ``stage`` (micro_batch/seq_len default: plan's)
    holding the activations of ``in_flight`` micro-batches. ``fp8``: the run's FP8 recipe:
    saved GEMM inputs in fp8 (see :func:`layer_activation_bytes`) and the fp8 weight copies
    (:func:`_fp8_weight_bytes`).

    Temporary buffers modelled: the layer being recomputed under full recomputation (its
    whole activations), two layers of ZeRO-3 gathered parameters (current and prefetched) and
    one of unreduced gradients, and the logit gradient on the last stage. The CUDA context,
    NCCL buffers and allocator fragmentation are not modelled.

    >>> from clustersim.workload.models import get_model
    >>> plan = ParallelPlan(tp=8, pp=8, dp=16, sp=True, stage_layers=(12,) * 8, seq_len=2048,
    ...                     num_microbatches=12)
    >>> mem = memory_footprint(get_model("gpt3-175b"), plan, recompute="selective",
    ...                        in_flight=InFlight(8.0, 8, 1))   # 1F1B, first of 8 stages
    >>> round(mem.activations_B / 2**30, 1), round(mem.total_B / 2**30, 1)
    (9.6, 51.2)
    """
    b = plan.micro_batch if micro_batch is None else micro_batch
    s = plan.seq_len if seq_len is None else seq_len
    params = stage_parameters(model, plan, stage)
    p_B, g_B, o_B = _state_bytes(precision, optimizer)
    dense_shard = plan.shard_group * plan.cp
    expert_shard = math.gcd(dense_shard, max(1, plan.expert_dp))

    def sharded(count: float, stage_needed: int, group: int) -> float:
        return count / group if plan.zero >= stage_needed else count

    def state(per_param: int, stage_needed: int) -> float:
        return per_param * (sharded(params.dense, stage_needed, dense_shard)
                            + sharded(params.expert, stage_needed, expert_shard))

    shard = plan.shard
    dense_layers, moe_layers = stage_layer_kinds(model, plan, stage)
    kinds = ((False, dense_layers), (True, moe_layers)) if model.moe else ((False, dense_layers),)
    gemm_B = fp8.operand_B if fp8 is not None else None
    activations = sum(layer_activation_bytes(model, shard, b, s, precision, recompute,
                                             flash_attention, moe_layer=kind,
                                             cp_comm=plan.cp_comm, gemm_B=gemm_B) * count
                      for kind, count in kinds if count) * in_flight.stage
    act_B, _ = element_bytes(precision)
    norm_tokens = b * s / plan.cp / (plan.tp if shard.sp else 1)
    vocab_rank = -(-model.vocab // plan.tp)
    last = stage == plan.pp - 1
    if stage == 0 and model.dropout:
        activations += norm_tokens * model.hidden * in_flight.first_chunk  # dropout mask
    temporary = 0.0
    if last:
        tokens = b * s / plan.cp
        activations += in_flight.last_chunk * (2 * act_B * norm_tokens * model.hidden
                                          + 4 * tokens * vocab_rank)
        temporary += act_B * tokens * vocab_rank
    biggest = model.moe is not None and moe_layers > 0   # the layer kind that weighs most
    if recompute == "full":
        temporary += layer_activation_bytes(model, shard, b, s, precision, "none",
                                            flash_attention, moe_layer=biggest,
                                            cp_comm=plan.cp_comm, gemm_B=gemm_B)
    temporary += context_parallel_buffer_bytes(model, plan, b, s, precision)
    if plan.zero >= 3:
        dense_layer, expert_layer = layer_params_on_rank(model, plan.tp, plan.ep,
                                                         moe_layer=biggest)
        temporary += (dense_layer + expert_layer) * (2 * p_B + g_B)
    parameters = state(p_B, 3)
    if fp8 is not None:
        extra_params, extra_temporary = _fp8_weight_bytes(model, plan, stage, fp8, p_B,
                                                          parameters / (p_B * params.total))
        parameters, temporary = parameters + extra_params, temporary + extra_temporary
    return MemoryBreakdown(parameters_B=parameters, gradients_B=state(g_B, 2),
                           optimizer_states_B=state(o_B, 1), activations_B=activations,
                           temporary_B=temporary)


def context_parallel_buffer_bytes(model: ModelSpec, plan: ParallelPlan, micro_batch: int,
                                  seq_len: int, precision: str = "bf16") -> float:
    """The buffers one layer's attention holds beside its activations under context
    parallelism. Ring attention (``p2p``): two communication buffers (one being received
    while the other is computed on), each a K/V block in the forward and a K/V block and
    its dK/dV in the backward (Transformer Engine's ``p2p_comm_buffers``): 4 K/V blocks at
    the backward's peak. Ulysses (``a2a``): the all-to-all outputs, Q, K, V and O of its
    heads/cp over the whole sequence, as many bytes as the rank's own s/cp tokens of all
    heads. ``all_gather``: none beyond the gathered K/V already counted as activations.

    >>> from clustersim.workload.models import get_model
    >>> plan = ParallelPlan(tp=8, cp=4, seq_len=131072, stage_layers=(80,))
    >>> block = 2 * 32768 * 128 * 2             # K and V of 32k tokens, 1 KV head x 128
    >>> context_parallel_buffer_bytes(get_model("llama3-70b"), plan, 1, 131072) == 4 * block
    True
    """
    if plan.cp < 2 or plan.cp_comm == "all_gather":
        return 0.0
    act_B, _ = element_bytes(precision)
    tokens = micro_batch * seq_len / plan.cp
    q = model.heads // plan.tp * model.head_dim
    kv = _kv_heads_on_rank(model, plan.tp) * model.head_dim
    if plan.cp_comm == "p2p":
        return 4 * (2 * tokens * kv * act_B)
    return act_B * tokens * (2 * q + 2 * kv)


def _fp8_weight_bytes(model: ModelSpec, plan: ParallelPlan, stage: int, fp8: FP8Options,
                      param_B: int, kept: float) -> tuple[float, float]:
    """(parameter, temporary) bytes FP8 adds to a rank of ``stage``. TE keeps an fp8 copy of
    each GEMM weight for the step (its transpose too on Hopper, both block-scaled copies
    under blockwise / mxfp8) beside the bf16 parameter; with ``fp8.param_gather`` the fp8
    copy is the parameter and the bf16 one is gone. Under ZeRO 3 the copies exist for the
    gathered layers only (two: current and prefetched) and the fp8 parameter shard replaces
    the bf16 one (``kept``: the share of the stage's parameters a rank keeps)."""
    weights = sum(stage_fp8_weights(model, plan, stage))
    if plan.zero < 3:
        gone = param_B if fp8.param_gather else 0.0
        return weights * (fp8.weight_copy_B - gone), 0.0
    biggest = model.moe is not None and stage_layer_kinds(model, plan, stage)[1] > 0
    layer = sum(layer_fp8_weights(model, *layer_params_on_rank(model, plan.tp, plan.ep,
                                                               moe_layer=biggest),
                                  float(biggest)))
    saved = weights * kept * (param_B - fp8.wire_weight_B) if fp8.param_gather else 0.0
    return -saved, 2 * layer * fp8.weight_copy_B


def kv_cache_bytes_per_token(model: ModelSpec, precision: str = "bf16") -> float:
    """Bytes of keys and values one token leaves in the cache over all layers (inference):
    2 x kv_heads x head_dim per layer, or MLA's latent and rotary key, (kv_lora_rank +
    qk_rope_head_dim) per layer (DeepSeek-V2, Liu et al. 2024, Table 1). A sliding window
    keeps at most ``attention_window`` tokens (Mistral 7B's rolling buffer, see
    :func:`kv_cache_bytes`).

    >>> from clustersim.workload.models import get_model
    >>> kv_cache_bytes_per_token(get_model("deepseek-v3")) == 61 * (512 + 64) * 2
    True
    """
    act_B, _ = element_bytes(precision)
    width = model.mla.kv_cache_width if model.mla else 2 * model.kv_heads * model.head_dim
    return float(model.layers * width * act_B)


def kv_cache_bytes(model: ModelSpec, context_tokens: int, precision: str = "bf16") -> float:
    """Bytes of the KV cache of one sequence of ``context_tokens``: min(window, context)
    tokens are kept with a sliding window.

    >>> from clustersim.workload.models import get_model
    >>> from dataclasses import replace
    >>> llama = get_model("llama3-8b")
    >>> kv_cache_bytes(replace(llama, attention_window=4096), 8192) / kv_cache_bytes(llama, 8192)
    0.5
    """
    window = model.attention_window
    kept = min(window, context_tokens) if window else context_tokens
    return kept * kv_cache_bytes_per_token(model, precision)
