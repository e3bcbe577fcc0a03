"""Collectives of one transformer training step, per rank: what each layer and the first and
last pipeline stage ask of the network because of how their weights and tokens are cut
(tensor, context and expert parallelism). How data-parallel replicas exchange gradients and
parameters (ZeRO, FSDP, buckets) is a scheduling decision of the step plan
(:mod:`clustersim.step.dataparallel`).

Everything here is per micro-batch and per rank, for a rank holding one :class:`Shard` of the
model; the kernels these collectives sit between are in :mod:`~clustersim.workload.flops`.
Collective sizes are buffer sizes as nccl-tests defines them: all_gather the total output,
reduce_scatter the total input, all_reduce and all_to_all the buffer of one rank. ``axis``
names the mesh axis whose group runs the collective (``tp``, ``cp``, ``ep``, ``dp``, ``pp``).

>>> from clustersim.workload.models import get_model
>>> [c.op for c in layer_comms(get_model("llama3-8b"), Shard(tp=2), 1, 8192, "bf16")["fwd"]]
['all_reduce', 'all_reduce']
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from types import MappingProxyType

from clustersim.workload.fp8 import FP8Options
from clustersim.workload.models import ModelSpec
from clustersim.workload.ops import Shard, element_bytes, layer_dims

__all__ = ["CommCost", "layer_comms", "embedding_comms", "logits_comms",
           "ep_copies_per_token", "dispatch_bytes_leaving_node", "ring_attention_steps",
           "kv_block_bytes"]


@dataclass(frozen=True)
class CommCost:
    """One collective a rank takes part in; ``axis`` names the mesh axis of its group."""

    name: str
    op: str          # "all_reduce" | "all_gather" | "reduce_scatter" | "all_to_all" | "send"
                     # | "send_recv" (every member of the group sends to its successor)
    axis: str        # "tp" | "cp" | "ep" | "dp" | "pp"
    bytes: float
    phase: str       # "fwd" | "bwd"



def _tp_block_comms(shard: Shard, buffer_B: float, blocks: int, recompute: str,
                    gather_B: float | None = None, amax: bool = False):
    """Megatron tensor-parallel collectives of ``blocks`` attention/MLP blocks.

    Without SP: an all-reduce after each block's forward and of its input gradient in the
    backward (Shoeybi et al. 2019). With SP (Korthikanti et al. 2022): all-gather before and
    reduce-scatter after each block; the backward all-gathers the output gradient, all-gathers
    the saved sharded input again for the weight gradient, and reduce-scatters the input
    gradient. ``gather_B``: the all-gathers' size when they move fp8 data (TE quantises
    before gathering); ``amax``: current scaling all-reduces the gathered input's fp32 amax
    over the group first.
    """
    if shard.tp == 1:
        return [], []
    fwd, bwd = [], []
    gather_B = buffer_B if gather_B is None else gather_B
    for i in range(blocks):
        if shard.sp and amax:
            fwd.append(CommCost(f"tp_amax_all_reduce_{i}", "all_reduce", "tp", 4.0, "fwd"))
        if shard.sp:
            fwd += [CommCost(f"tp_all_gather_{i}", "all_gather", "tp", gather_B, "fwd"),
                    CommCost(f"tp_reduce_scatter_{i}", "reduce_scatter", "tp", buffer_B, "fwd")]
            bwd += [CommCost(f"tp_grad_all_gather_{i}", "all_gather", "tp", gather_B, "bwd"),
                    CommCost(f"tp_input_all_gather_{i}", "all_gather", "tp", gather_B, "bwd"),
                    CommCost(f"tp_grad_reduce_scatter_{i}", "reduce_scatter", "tp", buffer_B,
                             "bwd")]
        else:
            fwd.append(CommCost(f"tp_all_reduce_{i}", "all_reduce", "tp", buffer_B, "fwd"))
            bwd.append(CommCost(f"tp_grad_all_reduce_{i}", "all_reduce", "tp", buffer_B, "bwd"))
    if recompute == "full":
        bwd = [replace(c, name=c.name + "_recompute", phase="bwd") for c in fwd] + bwd
    return fwd, bwd


def kv_block_bytes(d) -> float:
    """Bytes of the keys and values of one rank's tokens in one layer (``d``: its
    :class:`~clustersim.workload.ops.LayerDims`): 2 (K and V) x b x s/cp x kv width x
    activation bytes, the block a ring-attention step moves."""
    return 2.0 * d.t * d.kvw * d.act_B


def _cp_comms(d, cp_comm: str, recompute: str) -> tuple[list, list]:
    """The blocking context-parallel collectives of one layer (none for ``p2p``, whose ring
    steps run under the attention blocks: :func:`ring_attention_steps`).

    ``all_gather`` (Llama 3): the forward all-gathers K and V over the cp group (kept for the
    backward), the backward reduce-scatters dK and dV. ``a2a`` (Ulysses, Jacobs et al. 2023;
    Transformer Engine's ``AttnFuncWithCPAndQKVOA2A``): before attention an all-to-all turns
    each rank's s/cp tokens x all heads of Q, K and V into all s tokens x heads/cp, after it
    one turns the output back; the backward runs the same two in reverse (dO, then dQ, dK,
    dV). nccl-tests sizes: each rank sends its whole buffer, t x width x bytes. A core
    replayed for the backward (selective or full recomputation) replays its forward
    all-to-alls."""
    if cp_comm == "all_gather":
        kv_B = 2 * d.b * d.s_full * d.kvw * d.act_B
        return ([CommCost("cp_kv_all_gather", "all_gather", "cp", kv_B, "fwd")],
                [CommCost("cp_dkv_reduce_scatter", "reduce_scatter", "cp", kv_B, "bwd")])
    if cp_comm != "a2a":
        return [], []
    qkv_B, out_B = d.t * (d.q + 2 * d.kvw) * d.act_B, d.t * d.q * d.act_B
    fwd = [CommCost("cp_qkv_all_to_all", "all_to_all", "cp", qkv_B, "fwd"),
           CommCost("cp_out_all_to_all", "all_to_all", "cp", out_B, "fwd")]
    bwd = [CommCost("cp_dout_all_to_all", "all_to_all", "cp", out_B, "bwd"),
           CommCost("cp_dqkv_all_to_all", "all_to_all", "cp", qkv_B, "bwd")]
    if recompute != "none":
        bwd = [replace(c, name=c.name + "_recompute", phase="bwd") for c in fwd] + bwd
    return fwd, bwd


@functools.lru_cache(maxsize=4096)
def ring_attention_steps(model: ModelSpec, shard: Shard, micro_batch: int, seq_len: int,
                         precision: str, recompute: str = "none") -> MappingProxyType:
    """One step of ring attention (``cp_comm: p2p``) in one layer, forward and backward:
    every rank of the cp group sends a block to its successor (``send_recv`` on the group);
    a layer runs ``cp - 1`` such steps each way, each under one attention block.

    Forward (Liu et al. 2023, Ring Attention; Transformer Engine's
    ``AttnFuncWithCPAndKVP2P``): the rank's K/V block (:func:`kv_block_bytes`) goes round
    the ring, so a rank sends (cp-1)/cp of the layer's keys and values. Backward (as
    Transformer Engine): K/V go round again together with the dK/dV accumulated so far for
    the block (the ``dkv`` half of each communication buffer, same dtype as K/V: the
    activation dtype, bf16 under fp8 GEMMs), 2 blocks a step; TE sends K/V alone in its
    first step and dK/dV alone in its last, the same 2(cp-1) blocks in all. A backward that
    replays the attention forward (selective or full recomputation) rotates K/V for it
    too: 3 blocks a step.

    >>> from clustersim.workload.models import get_model
    >>> r = ring_attention_steps(get_model("llama3-8b"), Shard(cp=4), 1, 8192, "bf16")
    >>> r["fwd"].op, r["fwd"].bytes == 2 * 2048 * 1024 * 2, r["bwd"].bytes / r["fwd"].bytes
    ('send_recv', True, 2.0)
    """
    d = layer_dims(model, shard, micro_batch, seq_len, precision)
    block_B = kv_block_bytes(d)
    blocks = 3 if recompute != "none" else 2
    return MappingProxyType({
        "fwd": CommCost("cp_kv_ring_step", "send_recv", "cp", block_B, "fwd"),
        "bwd": CommCost("cp_kv_dkv_ring_step", "send_recv", "cp", blocks * block_B, "bwd")})


@functools.lru_cache(maxsize=4096)
def layer_comms(model: ModelSpec, shard: Shard, micro_batch: int, seq_len: int,
                precision: str, recompute: str = "none", moe_share: float | None = None,
                cp_comm: str = "p2p", fp8: FP8Options | None = None) -> MappingProxyType:
    """The collectives one transformer layer implies for one micro-batch on one rank.

    TP: see :func:`_tp_block_comms` (two blocks per layer, one for PaLM's parallel block,
    whose attention and MLP outputs are summed before a single reduction). CP: the forward
    all-gathers K and V over the cp group (Llama 3's all-gather context parallelism; kept for
    the backward), the backward reduce-scatters dK and dV, with ``cp_comm: all_gather``;
    Ulysses' all-to-alls with ``a2a``; nothing blocking with ``p2p`` (its ring steps:
    :func:`ring_attention_steps`; see :func:`_cp_comms`). EP: all-to-all dispatch and
    combine of the routed tokens in the forward and again in the backward: each token's
    hidden state :func:`ep_copies_per_token` times, scaled by the busiest rank's routed
    factor (:meth:`MoESpec.routed_factor`: imbalance, capacity), and in a model mixing dense
    and MoE layers by the MoE layers' share (the mean layer, as the kernels; ``moe_share``
    as in :func:`~clustersim.workload.flops.layer_ops`). ``fp8``: TP all-gathers move the
    fp8 GEMM inputs and output gradients with their scales, and with ``fp8.dispatch`` the
    token-to-expert all-to-all of each phase (forward dispatch, backward combine) moves fp8
    tokens; reductions and the other all-to-all stay bf16 (:mod:`~clustersim.workload.fp8`).

    >>> from clustersim.workload.models import get_model
    >>> c = layer_comms(get_model("gpt3-175b"), Shard(tp=8, sp=True), 1, 2048, "bf16")
    >>> [x.op for x in c["fwd"]], c["fwd"][0].bytes == 2048 * 12288 * 2
    (['all_gather', 'reduce_scatter', 'all_gather', 'reduce_scatter'], True)
    """
    d = layer_dims(model, shard, micro_batch, seq_len, precision)
    blocks = 1 if model.parallel_attention else 2
    wire_B = fp8.operand_B if fp8 is not None else d.act_B
    fwd, bwd = _tp_block_comms(shard, d.t * d.h * d.act_B, blocks, recompute,
                               d.t * d.h * wire_B,
                               amax=fp8 is not None and fp8.recipe.amax_pass)
    if shard.cp > 1:
        cp_fwd, cp_bwd = _cp_comms(d, cp_comm, recompute)
        fwd += cp_fwd
        bwd += cp_bwd
    if model.moe is not None and shard.ep > 1 and moe_share != 0.0:
        routed = (d.t * ep_copies_per_token(model.moe) * model.moe.routed_factor(shard.ep)
                  * d.h * (model.moe_fraction if moe_share is None else moe_share))
        to_experts_B = routed * (wire_B if fp8 is not None and fp8.dispatch else d.act_B)
        # each phase's first all-to-all carries tokens to the experts (in the backward the
        # combine's gradient)
        for phase, out in (("fwd", fwd), ("bwd", bwd)):
            out += [CommCost("ep_dispatch", "all_to_all", "ep", to_experts_B, phase),
                    CommCost("ep_combine", "all_to_all", "ep", routed * d.act_B, phase)]
    return MappingProxyType({"fwd": tuple(fwd), "bwd": tuple(bwd)})


def ep_copies_per_token(moe) -> int:
    """Copies of a token's hidden state the EP dispatch (and combine) moves: one per routed
    expert, or with node-limited routing (``max_nodes_per_token`` = M) one per destination
    node, min(top_k, M): DeepSeek-V3 (Sec. 3.2.2) sends each token once over IB to each of
    its at most M nodes and forwards it to the experts there over NVLink. That forwarding leg
    stays inside the node and is not part of the ep all-to-all (pricing it needs a node-local
    part of the ep axis in the step plan), so M bounds the bytes that leave a node.

    >>> from clustersim.workload.moe import MoESpec
    >>> ep_copies_per_token(MoESpec(256, 8)), ep_copies_per_token(MoESpec(256, 8, max_nodes_per_token=4))
    (8, 4)
    """
    limit = moe.max_nodes_per_token
    return min(moe.top_k, limit) if limit else moe.top_k


def dispatch_bytes_leaving_node(model: ModelSpec, tokens: float, ep: int, ranks_per_node: int,
                                precision: str = "bf16", dedup: bool = True) -> float:
    """Expected bytes the dispatch of ``tokens`` sends out of their node, for an ep group over
    N = ep / ranks_per_node nodes and experts picked uniformly: with ``dedup`` (one copy per
    destination node) E[distinct nodes among a token's top_k experts] x (N-1)/N copies per
    token, the nodes limited to M = max_nodes_per_token (the router first picks M nodes, then
    top_k experts on them); without it top_k x (N-1)/N.

    >>> from clustersim.workload.models import get_model
    >>> v3, h2 = get_model("deepseek-v3"), 7168 * 2
    >>> round(dispatch_bytes_leaving_node(v3, 1, 64, 8) / h2, 2)   # 8 nodes, M = 4: < 4
    3.18
    """
    moe, nodes = model.moe, max(1, ep // ranks_per_node)
    if nodes == 1:
        return 0.0
    remote = (nodes - 1) / nodes
    hidden_B = model.hidden * element_bytes(precision)[0]
    if not dedup:
        return tokens * moe.top_k * remote * hidden_B
    reach = min(nodes, moe.max_nodes_per_token or nodes)
    experts_reached = moe.experts * reach // nodes
    per_node = moe.experts // nodes
    miss = math.comb(experts_reached - per_node, moe.top_k) / math.comb(experts_reached, moe.top_k)
    return tokens * reach * (1 - miss) * remote * hidden_B



# ------------------------------------------------------------------ first and last stage

def embedding_comms(model: ModelSpec, shard: Shard, micro_batch: int, seq_len: int,
                    precision: str) -> MappingProxyType:
    """TP reduction of the vocab-parallel embedding output (reduce-scatter with SP).

    >>> from clustersim.workload.models import get_model
    >>> embedding_comms(get_model("llama3-8b"), Shard(tp=4), 1, 8192, "bf16")["fwd"][0].op
    'all_reduce'
    """
    if shard.tp == 1:
        return MappingProxyType({"fwd": (), "bwd": ()})
    d = layer_dims(model, shard, micro_batch, seq_len, precision)
    size = d.t * d.h * d.act_B
    if shard.sp:
        return MappingProxyType({
            "fwd": (CommCost("embedding_reduce_scatter", "reduce_scatter", "tp", size, "fwd"),),
            "bwd": (CommCost("embedding_grad_all_gather", "all_gather", "tp", size, "bwd"),)})
    return MappingProxyType({
        "fwd": (CommCost("embedding_all_reduce", "all_reduce", "tp", size, "fwd"),),
        "bwd": ()})



def logits_comms(model: ModelSpec, shard: Shard, micro_batch: int, seq_len: int,
                 precision: str) -> MappingProxyType:
    """SP all-gather before the output projection (or the all-reduce of its input gradient
    without SP) and the three small all-reduces of the vocab-parallel cross-entropy (max,
    target logit, sum of exponentials; fp32 per token).

    >>> from clustersim.workload.models import get_model
    >>> c = logits_comms(get_model("llama3-8b"), Shard(tp=2), 1, 8192, "bf16")
    >>> [x.name for x in c["fwd"]]
    ['ce_max_all_reduce', 'ce_target_all_reduce', 'ce_sum_all_reduce']
    """
    if shard.tp == 1:
        return MappingProxyType({"fwd": (), "bwd": ()})
    d = layer_dims(model, shard, micro_batch, seq_len, precision)
    size = d.t * d.h * d.act_B
    ce = tuple(CommCost(f"ce_{what}_all_reduce", "all_reduce", "tp", 4 * d.t, "fwd")
               for what in ("max", "target", "sum"))
    if shard.sp:
        return MappingProxyType({
            "fwd": (CommCost("logits_input_all_gather", "all_gather", "tp", size, "fwd"), *ce),
            "bwd": (CommCost("logits_grad_reduce_scatter", "reduce_scatter", "tp", size,
                             "bwd"),)})
    return MappingProxyType({
        "fwd": ce,
        "bwd": (CommCost("logits_grad_all_reduce", "all_reduce", "tp", size, "bwd"),)})
