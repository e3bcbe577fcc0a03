"""The experiment file: what the user wrote, validated, before any preset is resolved.

Keys are a stable contract (DESIGN.md); more may be added, none removed. Resolution of preset
names into hardware, topology and model objects happens downstream, so this module only checks
shape, types and units.

>>> from clustersim.config.yamlio import load_yaml
>>> doc = load_yaml('''
... name: demo
... cluster: {topology: dgx-h100, devices: 16}
... model: llama3-8b
... training: {global_batch: 64, parallelism: {tp: 8}}
... ''', "demo.yaml")
>>> exp = load_experiment(doc)
>>> exp.model.preset, exp.training.parallelism.tp, exp.simulation.fidelity
('llama3-8b', 8, 'flow')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from clustersim.config.quantities import Count, Whole
from clustersim.config.validation import StrictModel, validate
from clustersim.config.yamlio import YamlDocument, load_yaml_file

__all__ = [
    "ClusterConfig", "ImbalanceConfig", "MoEConfig", "MLAConfig", "ModelConfig", "ParallelismConfig", "OffloadConfig",
    "OverlapConfig", "TrainingConfig", "SimulationConfig", "SweepConfig", "OutputConfig",
    "ExperimentConfig", "load_experiment", "MESH_AXES", "DEFAULT_PLACEMENT",
    "JobPlacement", "JobConfig",
]

MESH_AXES = ("tp", "cp", "ep", "dp", "pp")
DEFAULT_PLACEMENT = ["tp", "cp", "ep", "dp", "pp"]  # innermost (closest devices) first


class ClusterConfig(StrictModel):
    topology: str = Field(description="a preset in topologies/, or a path to a topology YAML")
    devices: Count | None = Field(None, description="number of compute devices (ranks)")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="dotted topology parameters")


class ImbalanceConfig(StrictModel):
    """Expert load spread (clustersim.workload.moe.ImbalanceSpec)."""

    distribution: Literal["none", "zipf", "lognormal"] = "none"
    param: float = Field(0.0, ge=0, description="zipf exponent or lognormal sigma")
    seed: Whole = Field(0, ge=0)


class MoEConfig(StrictModel):
    experts: Count = Field(description="routed experts per MoE layer")
    top_k: Count = 2
    capacity_factor: float = Field(1.0, gt=0, description="without token_drop: expert work "
                                   "over a balanced router (padding); with it: the cap on "
                                   "tokens per expert")
    shared_experts: Whole = Field(0, ge=0, description="experts every token visits")
    expert_ffn_hidden: Count | None = Field(None, description="width of one expert "
                                                  "(default: ffn_hidden)")
    dense_layers: Whole = Field(0, ge=0, description="leading layers with a dense MLP")
    every: Count = Field(1, description="after dense_layers, layer i is MoE when "
                               "i % every == 0")
    token_drop: bool = False
    max_nodes_per_token: Count | None = Field(None, description="node-limited routing")
    imbalance: ImbalanceConfig | None = None

    @model_validator(mode="after")
    def _top_k_fits(self):
        if self.top_k > self.experts:
            raise ValueError(f"moe.top_k ({self.top_k}) cannot exceed moe.experts "
                             f"({self.experts})")
        return self


class MLAConfig(StrictModel):
    """Multi-head latent attention (clustersim.workload.models.MLASpec)."""

    kv_lora_rank: Count
    q_lora_rank: Whole = Field(0, ge=0, description="0: full query projection")
    qk_rope_head_dim: Whole = Field(64, ge=0)
    qk_nope_head_dim: Count = 128
    v_head_dim: Count = 128


class ModelConfig(StrictModel):
    """A preset name, the dimensions inline, or a preset with some dimensions changed."""

    preset: str | None = None
    name: str | None = None
    layers: Count | None = None
    hidden: Count | None = None
    heads: Count | None = None
    kv_heads: Count | None = None
    head_dim: Count | None = None
    ffn_hidden: Count | None = None
    vocab: Count | None = None
    seq_len: Count | None = None
    ffn: Literal["gelu", "swiglu"] | None = None
    moe: MoEConfig | None = None
    mla: MLAConfig | None = None
    attention_window: Whole | None = Field(None, ge=0, description="sliding-window attention: "
                                         "keys each query sees (0: full)")
    parallel_attention: bool | None = None
    tied_embeddings: bool | None = None
    dropout: bool | None = Field(
        None, description="attention and hidden dropout in training (default: the preset's, "
        "else none): a 1-byte mask per dropped element, in memory traffic and activations")

    @model_validator(mode="before")
    @classmethod
    def _preset_name(cls, value: Any) -> Any:
        return {"preset": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _preset_or_dimensions(self):
        needed = ("layers", "hidden", "heads", "vocab")
        missing = [k for k in needed if getattr(self, k) is None]
        if self.preset is None and missing:
            raise ValueError("give a model preset (e.g. `preset: gpt3-175b`) or the dimensions "
                             f"inline; missing: {', '.join(missing)}")
        return self


class ParallelismConfig(StrictModel):
    tp: Count = 1
    pp: Count = 1
    dp: Count | None = Field(None, description="default: devices / (tp*pp*cp)")
    cp: Count = 1
    # Transformer Engine / Megatron-Core --cp-comm-type (Megatron spells the last `allgather`);
    # Megatron-LM's arguments.py defaults it to p2p
    cp_comm: Literal["p2p", "a2a", "all_gather"] = Field(
        "p2p", description="context parallelism: p2p (ring attention, K/V rotated around "
        "the cp ring under the attention blocks), a2a (Ulysses: all-to-all of Q, K, V and the "
        "output, heads split over cp), all_gather (K/V all-gathered before attention, Llama 3)")
    ep: Count = 1
    sp: bool = False
    zero: Whole = Field(0, ge=0, le=3, description="0-3; 3 = FSDP")
    shard_group: Count | None = Field(
        None, description="hybrid sharding: shard within groups of N data-parallel ranks")
    schedule: Literal["gpipe", "1f1b", "1f1b-interleaved", "zb-h1", "zb-h2", "zb-v",
                      "dualpipe"] = "1f1b"
    virtual_stages: Count = 1
    placement: list[Literal["tp", "cp", "ep", "dp", "pp"]] = Field(
        default_factory=lambda: list(DEFAULT_PLACEMENT),
        description="mesh axes from innermost (closest devices) outwards")
    stage_layers: list[Count] | None = Field(
        None, description="layers per pipeline stage when they are not equal")

    @field_validator("placement")
    @classmethod
    def _placement_is_permutation(cls, value: list[str]) -> list[str]:
        if sorted(set(value)) != sorted(value):
            raise ValueError(f"placement lists an axis twice: {value}")
        missing = [a for a in MESH_AXES if a not in value]
        return list(value) + missing  # unnamed axes go outermost, in default order


class OffloadConfig(StrictModel):
    """ZeRO-Offload style: where optimizer states / master weights / parameters live."""

    optimizer: Literal["none", "host", "cxl"] = "none"
    parameters: Literal["none", "host", "cxl"] = "none"


class OverlapConfig(StrictModel):
    """Which communications overlap with compute (Megatron-Core's flags); a key left out
    takes ``training.framework``'s default (clustersim.step.frameworks)."""

    grad_reduce: bool | None = Field(None, description="reduce gradient buckets under the "
                                     "backward (--overlap-grad-reduce)")
    param_gather: bool | None = Field(None, description="gather updated parameters under the "
                                      "next forward (--overlap-param-gather)")
    tp_comm: bool | None = Field(None, description="tensor-parallel collectives under the "
                                 "GEMMs (--tp-comm-overlap)")
    p2p: bool | None = Field(None, description="pipeline sends beside the compute "
                             "(--overlap-p2p-communication); otherwise they block")


class TrainingConfig(StrictModel):
    global_batch: Count = Field(description="sequences per step")
    micro_batch: Count = 1
    seq_len: Count | None = None
    precision: Literal["bf16", "fp16", "fp8", "fp4", "fp32"] = "bf16"
    recompute: Literal["none", "selective", "full"] = "none"
    attention: Literal["flash", "materialized"] = Field(
        "flash", description="flash: fused kernels, no s^2 tensor in memory (FlashAttention, "
        "2022 on); materialized: the b a s^2 scores written and read by batched GEMMs, "
        "softmax and dropout (Megatron-LM before flash kernels; the only choice on V100)")
    optimizer: Literal["adam", "sgd"] = "adam"
    framework: Literal["megatron-core", "megatron-lm", "deepspeed", "fsdp", "jax"] = Field(
        "megatron-core", description="how the framework schedules communication: buckets, "
        "gather granularity, reduce precision, overlap defaults (clustersim.step.frameworks)")
    parallelism: ParallelismConfig = Field(default_factory=ParallelismConfig)
    overlap: OverlapConfig = Field(default_factory=OverlapConfig)
    offload: OffloadConfig = Field(default_factory=OffloadConfig)
    fp8_recipe: Literal["delayed", "tensorwise", "blockwise", "mxfp8"] | None = Field(
        None, description="with precision fp8: how tensors are scaled (Megatron-Core "
        "--fp8-recipe; default delayed, tensorwise with framework fsdp as torchao's): delayed (per-tensor scale from an amax history), "
        "tensorwise (per-tensor current scaling), blockwise (1x128 and 128x128 fp32 scales), "
        "mxfp8 (1x32 E8M0 scales, Blackwell-class devices only)")
    fp8_param_gather: bool = Field(
        False, description="with precision fp8 and ZeRO >= 1: keep the GEMM weights in fp8 "
        "and all-gather them in fp8 (Megatron-Core --fp8-param-gather, torchtitan "
        "enable_fsdp_float8_all_gather)")
    fp8_dispatch: bool = Field(
        False, description="with precision fp8 and ep > 1: the MoE dispatch (and the "
        "gradient the backward combine sends to the experts) moves fp8 tokens with their "
        "scales; the combine and the backward dispatch stay bf16")
    fp8_bf16_layers: tuple[int, int] | None = Field(
        None, description="with precision fp8: [first, last] transformer layers kept in bf16 "
        "(Megatron-Core --first-last-layers-bf16 with --num-layers-at-start-in-bf16 and "
        "--num-layers-at-end-in-bf16, 1 and 1 by default there)")

    @model_validator(mode="after")
    def _fp8_keys_need_fp8(self):
        given = [k for k in ("fp8_recipe", "fp8_param_gather", "fp8_dispatch",
                             "fp8_bf16_layers") if getattr(self, k) not in (None, False)]
        if self.fp8_bf16_layers and min(self.fp8_bf16_layers) < 0:
            raise ValueError(f"training.fp8_bf16_layers: layer counts must be >= 0, got "
                             f"{list(self.fp8_bf16_layers)}")
        if given and self.precision != "fp8":
            raise ValueError(f"training.{given[0]} is only meaningful with training.precision: "
                             f"fp8 (got {self.precision!r}); set precision: fp8 or remove it")
        if self.fp8_param_gather and self.parallelism.zero == 0:
            raise ValueError("training.fp8_param_gather gathers sharded parameters: it needs "
                             "training.parallelism.zero >= 1 (Megatron: the distributed "
                             "optimizer; FSDP: zero 3)")
        if self.fp8_param_gather and self.framework == "fsdp" and \
                self.fp8_recipe not in (None, "tensorwise"):
            raise ValueError("training.fp8_param_gather with framework fsdp: torchtitan's "
                             "enable_fsdp_float8_all_gather supports tensorwise scaling only; "
                             f"set fp8_recipe: tensorwise (got {self.fp8_recipe!r})")
        return self


class SimulationConfig(StrictModel):
    fidelity: Literal["flow", "analytic"] = "flow"
    ranks: Literal["representative", "all"] = "representative"
    network: Literal["symmetric", "exact"] = Field(
        "symmetric", description="flow fidelity: price each collective once per class of "
        "groups the fabric's symmetry maps onto each other (symmetric), or every group "
        "family on its own members (exact)")
    pue: float = Field(1.0, ge=1.0, le=3.0,
                       description="facility power usage effectiveness applied to energy")


class SweepConfig(StrictModel):
    grid: dict[str, list[Any]] = Field(default_factory=dict,
                                       description="cartesian product over dotted keys")
    zip: dict[str, list[Any]] = Field(default_factory=dict,
                                      description="parallel lists of equal length")
    cases: list[dict[str, Any]] = Field(default_factory=list,
                                        description="explicit scenarios as dotted overrides")


class OutputConfig(StrictModel):
    dir: str | None = None
    plots: bool = True
    trace: bool = False


class JobPlacement(StrictModel):
    """The cluster devices a job holds, by index in the cluster's rank order: ``count``
    devices from ``first``, in blocks of ``block`` consecutive devices whose starts are
    ``stride`` apart (default: one contiguous range). ``{first: 4, count: 16, block: 4,
    stride: 8}`` holds devices 4-7 of each of four 8-device nodes, leaving 0-3 to a neighbour.

    >>> JobPlacement(first=4, count=8, block=4, stride=8).indices()
    [4, 5, 6, 7, 12, 13, 14, 15]
    """

    first: Whole = Field(0, ge=0, description="index of the job's first device")
    count: Count = Field(description="devices the job holds")
    block: Count | None = Field(None, description="consecutive devices per block "
                                      "(default: count, one block)")
    stride: Count | None = Field(None, description="distance between block starts "
                                       "(default: block, no gap)")

    @model_validator(mode="after")
    def _blocks_tile(self):
        block = self.block or self.count
        if self.count % block:
            raise ValueError(f"count ({self.count}) must be a multiple of block ({block})")
        if (self.stride or block) < block:
            raise ValueError(f"stride ({self.stride}) must be at least block ({block}): "
                             f"blocks of one job may not overlap")
        return self

    def indices(self) -> list[int]:
        """The device indices, in the job's rank order."""
        block = self.block or self.count
        stride = self.stride or block
        return [self.first + b * stride + i for b in range(self.count // block)
                for i in range(block)]


class JobConfig(StrictModel):
    """A neighbour job: its own model and training (the top-level schemas) on its devices."""

    name: str = Field(min_length=1)
    model: ModelConfig
    training: TrainingConfig
    placement: JobPlacement


class ExperimentConfig(StrictModel):
    name: str
    description: str = ""
    headline: str = Field("", description="the answer in one sentence, its [[scenario | "
                          "column | format]] fields filled from the results "
                          "(clustersim.experiment.headline); printed by `clustersim run`")
    cluster: ClusterConfig
    model: ModelConfig
    training: TrainingConfig
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    placement: JobPlacement | None = Field(
        None, description="the devices the top-level (primary) job holds when it shares the "
        "cluster (default: every device no job of `jobs` holds)")
    jobs: list[JobConfig] = Field(default_factory=list, description="neighbour jobs on the "
                                  "same cluster; their traffic shares the fabric with the "
                                  "primary's (flow fidelity)")

    @field_validator("jobs")
    @classmethod
    def _job_names_differ(cls, jobs: list[JobConfig]) -> list[JobConfig]:
        names = [j.name for j in jobs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"job names must differ; given more than once: {twice}")
        return jobs


def load_experiment(source: str | Path | YamlDocument) -> ExperimentConfig:
    """Load and validate an experiment file; errors are InputErrors with file:line:col."""
    doc = source if isinstance(source, YamlDocument) else load_yaml_file(source)
    return validate(ExperimentConfig, doc)
