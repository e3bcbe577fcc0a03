"""Framework profiles: how Megatron-Core, DeepSpeed, PyTorch FSDP and JAX really schedule the
data-parallel, sharded, pipeline and tensor-parallel traffic of a step
(``training.framework``). Each figure names the file of the version it was read from.

Versions read: Megatron-LM ``d98e8a6`` (megatron/core), DeepSpeed ``0.16.5``, PyTorch FSDP2
(``torch.distributed.fsdp.fully_shard``) as torchtitan ``b5bcd76`` configures it, MaxText
``e591f30`` on XLA. ``overlap:`` keys the experiment leaves out take the framework's default.

>>> f = FRAMEWORKS["fsdp"]
>>> f.reduce_bytes("bf16"), f.zero3_gathers_per_layer(None), FRAMEWORKS["deepspeed"].zero12_reduce
(4, 1, 'all_reduce')
>>> FRAMEWORKS["deepspeed"].zero3_gathers_per_layer(None)   # q, k, v, o, gate, up, down
7
>>> FRAMEWORKS["megatron-core"].bucket_params(dp=64)
64000000.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Framework", "FRAMEWORKS", "effective_overlap", "Overlap"]


@dataclass(frozen=True)
class Overlap:
    """Which communication runs beside compute, once the framework's defaults are applied."""

    grad_reduce: bool
    param_gather: bool
    tp_comm: bool
    p2p: bool


@dataclass(frozen=True)
class Framework:
    """One framework's scheduling choices (see the module docstring for the versions).

    - ``grad_reduce_fp32``: 16-bit runs reduce gradients in fp32 (4 bytes an element);
    - ``zero12_reduce``: the collective ZeRO 1/2 reduce gradients with (``all_reduce``: the
      traffic of one, each rank keeping its slice);
    - ``bucket_elements``: elements per gradient bucket (a function of dp), None: one bucket
      per layer; ``bucket_first_chunk_only``: only the first stage's first chunk buckets;
    - ``param_gather_overlappable``: ZeRO 1/2 can gather the updated parameters under the
      next forward (else after the optimizer step, blocking);
    - ``zero2_every_microbatch``; ``zero3_linear_gathers``: ZeRO 3 gathers each linear layer
      on its own (else a whole transformer block); ``zero3_regather_with_pp``: the backward
      gathers the parameters again when pipelining;
    - ``tied_blocking``: the tied-embedding all-reduce runs after the gradient sync, blocking;
    - ``tp_backward_overlap``: TP collectives of the backward run beside its GEMMs;
    - ``tp_overlap_on_copy_engines``: overlapped TP collectives move data with the GPU's
      copy engines, not its SMs, so they do not slow the compute they hide behind;
    - ``defaults``: the overlap flags when the experiment gives none (``p2p``: receives
      posted a slot ahead, Megatron-Core with interleaved schedules only)."""

    name: str
    version: str
    grad_reduce_fp32: bool
    zero12_reduce: str
    bucket_elements: tuple[float, float] | None     # (floor, per data-parallel rank)
    bucket_first_chunk_only: bool
    param_gather_overlappable: bool
    zero2_every_microbatch: bool
    zero3_linear_gathers: bool
    zero3_regather_with_pp: bool
    tied_blocking: bool
    tp_backward_overlap: bool
    tp_overlap_on_copy_engines: bool
    defaults: dict = field(compare=False)
    sources: dict = field(default_factory=dict, repr=False, compare=False)

    def reduce_bytes(self, precision: str) -> int:
        """Bytes per gradient element on the wire."""
        return 4 if precision == "fp32" or self.grad_reduce_fp32 else 2

    def bucket_params(self, dp: int) -> float | None:
        """Elements per gradient bucket at data-parallel width ``dp`` (None: per layer)."""
        if self.bucket_elements is None:
            return None
        floor, per_rank = self.bucket_elements
        return max(floor, per_rank * dp)

    def zero3_gathers_per_layer(self, model) -> int:
        """All-gathers one layer's parameters take per pass under ZeRO 3: one per block, or
        one per linear layer: q, k, v, o and three MLP matrices in Llama-style (SwiGLU)
        models, a fused qkv, o and two MLP matrices in GPT-style ones."""
        if not self.zero3_linear_gathers:
            return 1
        if model is None or model.ffn == "swiglu":
            return 4 + 3
        return 2 + 2


FRAMEWORKS = {
    "megatron-lm": Framework(
        "megatron-lm", "Megatron-LM 2020-21 (before Megatron-Core)", grad_reduce_fp32=False,
        zero12_reduce="reduce_scatter", bucket_elements=(float("inf"), 0.0),
        bucket_first_chunk_only=True, param_gather_overlappable=False,
        zero2_every_microbatch=True, zero3_linear_gathers=False, zero3_regather_with_pp=True,
        tied_blocking=True, tp_backward_overlap=False, tp_overlap_on_copy_engines=False,
        defaults={"grad_reduce": False, "param_gather": False, "tp_comm": False, "p2p": False},
        sources={
            "bucket_elements": "Megatron-LM v2.x megatron/model/distributed.py: the local DDP "
                               "all-reduces one contiguous gradient buffer after the backward",
            "grad_reduce_fp32": "--accumulate-allreduce-grads-in-fp32 off by default",
            "tp_backward_overlap": "the asynchronous TP all-reduce of the backward came "
                                   "with Megatron-Core (--async-tensor-model-parallel-"
                                   "allreduce, late 2021)"}),
    "megatron-core": Framework(
        "megatron-core", "Megatron-LM d98e8a6", grad_reduce_fp32=True,
        zero12_reduce="reduce_scatter", bucket_elements=(40e6, 1e6),
        bucket_first_chunk_only=True, param_gather_overlappable=True,
        zero2_every_microbatch=True, zero3_linear_gathers=False, zero3_regather_with_pp=True,
        tied_blocking=True, tp_backward_overlap=True, tp_overlap_on_copy_engines=True,
        defaults={"grad_reduce": False, "param_gather": False, "tp_comm": False, "p2p": True},
        sources={
            "grad_reduce_fp32": "megatron/training/arguments.py: --main-grads-dtype defaults "
                                "to fp32, so --bf16 reduces gradients in fp32",
            "bucket_elements": "megatron/core/distributed/distributed_data_parallel.py: "
                               "bucket_size = max(40_000_000, 1_000_000 x dp) elements; "
                               "one bucket on pipeline ranks > 0 and virtual chunks > 0",
            "defaults": "megatron/core/distributed/distributed_data_parallel_config.py: "
                        "overlap_grad_reduce and overlap_param_gather False; "
                        "--no-overlap-p2p-communication (on, interleaved schedule only)",
            "tied_blocking": "megatron/core/distributed/finalize_model_grads.py: the "
                             "embedding-group all-reduce runs after finish_grad_sync",
            "tp_overlap_on_copy_engines": "--tp-comm-overlap runs Transformer Engine's "
                                          "userbuffers: ring-exchange all-gathers over the "
                                          "copy engines (use_ce), the reduce-scatter on a "
                                          "few SMs (num_sm); counted as copy engines",
            "tp_backward_overlap": "megatron/core/tensor_parallel/layers.py: the backward "
                                   "all-gather overlaps dgrad, the reduce-scatter wgrad",
            "p2p": "megatron/core/pipeline_parallel/schedules.py: with overlap_p2p_comm "
                   "(interleaved only) the next receive is posted before the current "
                   "compute"}),
    "deepspeed": Framework(
        "deepspeed", "DeepSpeed 0.16.5", grad_reduce_fp32=False, zero12_reduce="all_reduce",
        bucket_elements=(5e8, 0.0), bucket_first_chunk_only=False,
        param_gather_overlappable=False, zero2_every_microbatch=True,
        zero3_linear_gathers=True, zero3_regather_with_pp=True, tied_blocking=True,
        tp_backward_overlap=False, tp_overlap_on_copy_engines=False,
        defaults={"grad_reduce": False, "param_gather": False, "tp_comm": False, "p2p": False},
        sources={
            "grad_reduce_fp32": "deepspeed/runtime/engine.py: communication_data_type "
                                "defaults to the model's (bf16)",
            "zero12_reduce": "deepspeed/runtime/zero/stage_1_and_2.py: average_tensor "
                             "all-reduces each bucket (use_multi_rank_bucket_allreduce)",
            "bucket_elements": "deepspeed/runtime/zero/config.py: reduce_bucket_size 5e8",
            "param_gather_overlappable": "stage_1_and_2.py: parameters all-gathered after "
                                         "the optimizer step, blocking",
            "zero3_linear_gathers": "partitioned_param_coordinator.py: each leaf module "
                                    "(nn.Linear) fetched with one coalesced all-gather",
            "defaults": "deepspeed/runtime/zero/config.py: overlap_comm True only for "
                        "stage 3 (grad_reduce True there)",
            "p2p": "deepspeed/runtime/pipe/schedule.py: synchronous 1F1B"}),
    "fsdp": Framework(
        "fsdp", "PyTorch FSDP2 (torchtitan b5bcd76)", grad_reduce_fp32=True,
        zero12_reduce="reduce_scatter", bucket_elements=None, bucket_first_chunk_only=False,
        param_gather_overlappable=True, zero2_every_microbatch=True,
        zero3_linear_gathers=False, zero3_regather_with_pp=False, tied_blocking=False,
        tp_backward_overlap=False, tp_overlap_on_copy_engines=False,
        defaults={"grad_reduce": True, "param_gather": True, "tp_comm": False, "p2p": True},
        sources={
            "grad_reduce_fp32": "torchtitan/config/configs.py: mixed_precision_reduce = "
                                "float32",
            "bucket_elements": "torchtitan/distributed/fsdp.py: one FSDP unit per "
                               "transformer block (one all-gather, one reduce-scatter)",
            "zero3_regather_with_pp": "torchtitan: reshard_after_forward False with "
                                      "pipelining",
            "defaults": "FSDP2 prefetches one unit ahead and reduce-scatters under the "
                        "backward of the previous unit (_fsdp_param_group.py)"}),
    "jax": Framework(
        "jax", "MaxText e591f30 / XLA", grad_reduce_fp32=True, zero12_reduce="reduce_scatter",
        bucket_elements=None, bucket_first_chunk_only=False, param_gather_overlappable=True,
        zero2_every_microbatch=True, zero3_linear_gathers=False, zero3_regather_with_pp=True,
        tied_blocking=False, tp_backward_overlap=False,
        tp_overlap_on_copy_engines=False,
        defaults={"grad_reduce": True, "param_gather": True, "tp_comm": False, "p2p": True},
        sources={
            "grad_reduce_fp32": "MaxText configs/base.yml: grad_dtype float32",
            "bucket_elements": "scan_layers: one all-gather and one reduce-scatter per "
                               "layer, scheduled by XLA's latency hiding scheduler"}),
}


def effective_overlap(framework: Framework, overlap, zero: int) -> Overlap:
    """The overlap flags of a run: the experiment's where it gives them, else the
    framework's defaults (DeepSpeed overlaps communication by default only at ZeRO 3)."""
    defaults = dict(framework.defaults)
    if framework.name == "deepspeed" and zero >= 3:
        defaults["grad_reduce"] = True
    values = {k: getattr(overlap, k) if getattr(overlap, k) is not None else defaults[k]
              for k in ("grad_reduce", "param_gather", "tp_comm", "p2p")}
    if not framework.param_gather_overlappable:
        values["param_gather"] = False
    return Overlap(**values)
