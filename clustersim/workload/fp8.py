"""FP8 training as Transformer Engine runs it: the scaling recipe, what it costs beside the
GEMMs, and which tensors it shrinks in memory and on the wire.

Read from Transformer Engine 2.20.0.dev0 (``d0067d0``, ``transformer_engine/common/recipe``,
``pytorch/module/linear.py``, ``pytorch/distributed.py``) and Megatron-LM ``d98e8a6``
(``megatron/core/transformer/transformer_config.py``):

- Recipes (Megatron-Core ``--fp8-recipe``, default ``delayed``): ``delayed`` (DelayedScaling:
  one scale per tensor from an amax history; Megatron's ``fp8_amax_history_len`` default 1),
  ``tensorwise`` (Float8CurrentScaling: the scale from this tensor's own amax, a separate
  reduction pass before the cast; with sequence parallelism the amax is all-reduced over the
  TP group, ``set_quantizer_amax_reduction_group``), ``blockwise`` (Float8BlockScaling: fp32
  scales per 1x128 block of activations and gradients and per 128x128 block of weights),
  ``mxfp8`` (MXFP8BlockScaling: one E8M0 byte per 32 values; Blackwell-class tensor cores
  only: TE's ``check_mxfp8_support`` wants compute capability 10.x, Megatron: "mxfp8 for
  Blackwell architecture only"; ``blockwise`` runs from 9.0, Hopper).
- Copies: an FP8 GEMM input is needed row-wise (forward / dgrad) and column-wise (wgrad,
  dgrad of the weight). Hopper's FP8 GEMMs take only the TN layout, so the per-tensor recipes
  write a transposed fp8 copy too (TE's ``cast_transpose``); Blackwell runs non-TN FP8 GEMMs
  (``is_non_tn_fp8_gemm_supported``: compute capability 10.x) and needs one copy. Block
  scales run along one direction, so ``blockwise`` and ``mxfp8`` quantise both copies from the
  bf16 tensor ("to avoid double quantization errors", TE recipe docs) on every device.
- Kept in bf16: the attention core (flash, bf16 unless ``fp8_dot_product_attention``), norms,
  the embedding and the output layer (Megatron's output layer is not a TE module under fp8),
  the MoE router (a plain torch linear), the optimizer's fp32 master weights.
- Communication: with TP + SP, TE quantises a column-parallel GEMM's input before its
  all-gather and gathers fp8 data for every recipe (``gather_along_first_dim`` has fp8,
  blockwise and MXFP8 paths), as it does the output gradient of a row-parallel GEMM
  (``grad_output_preprocess``); reduce-scatters carry bf16 outputs. ``fp8_param_gather``
  (Megatron ``--fp8-param-gather``, torchtitan ``enable_fsdp_float8_all_gather``): parameter
  all-gathers move 1-byte weights. ``fp8_dispatch``: the MoE dispatch in fp8 and the combine
  in bf16 (Megatron-Core ``moe_dispatch_fwd_dtype`` and ``moe_combine_bwd_dtype``: the forward
  dispatch and the gradient the backward combine sends to the experts). Gradients are reduced
  in bf16 / fp32 as without fp8.

>>> from clustersim.hardware import get_device
>>> h100 = FP8Options.of("delayed", get_device("h100-sxm-80gb"))
>>> b200 = FP8Options.of("mxfp8", get_device("b200"))
>>> h100.copies, h100.operand_B, b200.copies, b200.operand_B
(2, 1.0, 2, 1.03125)
"""

from __future__ import annotations

from dataclasses import dataclass

from clustersim.errors import InputError
from clustersim.workload.ops import ELEMENTWISE_FLOPS, OpCost

__all__ = ["FP8_RECIPES", "DEFAULT_FP8_RECIPE", "FP8Scaling", "FP8Options", "fp8_options",
           "block_scaled_mma", "quantize_op", "amax_update_op", "layer_fp8_weights"]

DEFAULT_FP8_RECIPE = "delayed"   # Megatron-LM d98e8a6 TransformerConfig.fp8_recipe
# torchtitan's float8 (torchao Float8LinearConfig) defaults to tensorwise dynamic scaling
_FRAMEWORK_DEFAULT = {"fsdp": "tensorwise"}


@dataclass(frozen=True)
class FP8Scaling:
    """One recipe: scale bytes per element of an activation/gradient copy and of a weight
    copy, whether a separate amax pass reads the tensor before its cast, whether the row- and
    column-wise copies are quantised apart, and whether it needs block-scaled tensor cores."""

    name: str
    act_scale_B: float
    weight_scale_B: float
    amax_pass: bool
    both_directions: bool
    block_scaled_mma: bool


FP8_RECIPES = {
    # one fp32 scale (and amax) per tensor: nothing per element
    "delayed": FP8Scaling("delayed", 0.0, 0.0, False, False, False),
    "tensorwise": FP8Scaling("tensorwise", 0.0, 0.0, True, False, False),
    # fp32 scale per 1x128 block (activations, gradients), per 128x128 block (weights)
    "blockwise": FP8Scaling("blockwise", 4 / 128, 4 / (128 * 128), False, True, False),
    # one E8M0 byte per 32 values along the GEMM's reduction dimension (OCP MX spec v1.0)
    "mxfp8": FP8Scaling("mxfp8", 1 / 32, 1 / 32, False, True, True),
}


def block_scaled_mma(device) -> bool:
    """Whether ``device`` has tensor cores that apply block scales in the MMA (MXFP8). In the
    catalog these are exactly the parts with an FP4 peak: Blackwell's block-scaled MMA
    (``tcgen05.mma`` kind ``mxf8f6f4`` / ``mxf4nvf4``) is what runs both FP4 and MXFP8."""
    return device.vendor == "NVIDIA" and "fp4" in device.peak_flops


@dataclass(frozen=True)
class FP8Options:
    """FP8 as a run configures it: the recipe, whether the per-tensor recipes write a
    transposed copy (Hopper: FP8 GEMMs in TN layout only), fp8 parameter gathers, fp8 MoE
    dispatch, the amax history length (delayed scaling), and how many of the model's first
    and last transformer layers stay bf16 (``bf16_layers``)."""

    recipe: FP8Scaling
    transpose: bool
    param_gather: bool = False
    dispatch: bool = False
    amax_history: int = 1      # Megatron-LM d98e8a6 fp8_amax_history_len default
    bf16_layers: tuple[int, int] = (0, 0)   # first and last layers kept in bf16

    @classmethod
    def of(cls, recipe: str | None, device, param_gather: bool = False,
           dispatch: bool = False, bf16_layers: tuple[int, int] = (0, 0)) -> FP8Options:
        """The options of ``recipe`` (None: the default) on ``device``; a recipe the
        device cannot run is an InputError naming the fix."""
        name = recipe or DEFAULT_FP8_RECIPE
        if name not in FP8_RECIPES:
            raise InputError(f"unknown fp8 recipe {name!r}; allowed: "
                             f"{', '.join(FP8_RECIPES)}")
        scaling = FP8_RECIPES[name]
        blackwell = block_scaled_mma(device)
        if scaling.block_scaled_mma and not blackwell:
            raise InputError(f"training.fp8_recipe: {name} needs tensor cores with hardware "
                             f"block scaling (Blackwell-class: b200, gb200, gb300); "
                             f"{device.name} has none. Use fp8_recipe: blockwise (1x128 / "
                             f"128x128 scales, runs on Hopper) or delayed / tensorwise, or a "
                             f"Blackwell topology")
        return cls(scaling, transpose=not blackwell, param_gather=param_gather,
                   dispatch=dispatch, bf16_layers=tuple(bf16_layers))

    @property
    def copies(self) -> int:
        """FP8 copies written per quantised tensor (row-wise, and column-wise or transposed)."""
        return 2 if self.recipe.both_directions or self.transpose else 1

    @property
    def operand_B(self) -> float:
        """Bytes per element a GEMM reads of an fp8 operand, scales included."""
        return 1.0 + self.recipe.act_scale_B

    @property
    def weight_copy_B(self) -> float:
        """Bytes per weight element of TE's fp8 weight cache (every copy with its scales)."""
        return self.copies * (1.0 + self.recipe.weight_scale_B)

    @property
    def wire_weight_B(self) -> float:
        """Bytes per weight element an fp8 parameter all-gather moves (the row-wise copy)."""
        return 1.0 + self.recipe.weight_scale_B


def fp8_options(training, device) -> FP8Options | None:
    """The FP8 options of an experiment's ``training`` section on ``device`` (None unless
    ``precision: fp8``); without ``fp8_recipe`` the framework's default (Megatron-Core's
    delayed; tensorwise under ``fsdp``, torchtitan's)."""
    if training.precision != "fp8":
        return None
    recipe = training.fp8_recipe or _FRAMEWORK_DEFAULT.get(training.framework)
    return FP8Options.of(recipe, device, training.fp8_param_gather, training.fp8_dispatch,
                         training.fp8_bf16_layers or (0, 0))


def quantize_op(name: str, elements: float, fp8: FP8Options, act_B: float = 2,
                weight: bool = False) -> OpCost:
    """The cast of one bf16 GEMM input of ``elements`` to fp8: it reads the tensor (twice
    with current scaling: the amax pass, then the cast) and writes ``fp8.copies`` fp8 copies
    with their scales.

    >>> from clustersim.hardware import get_device
    >>> fp8 = FP8Options.of("tensorwise", get_device("h100-sxm-80gb"))
    >>> quantize_op("x_quantize", 1e6, fp8).bytes   # 2 reads of 2 B, 2 copies of 1 B
    6000000.0
    """
    scale_B = fp8.recipe.weight_scale_B if weight else fp8.recipe.act_scale_B
    reads = 2 if fp8.recipe.amax_pass else 1
    return OpCost(name, "elementwise", ELEMENTWISE_FLOPS["quantize"] * elements,
                  elements * (reads * act_B + fp8.copies * (1.0 + scale_B)))


def amax_update_op(name: str, tensors: float, fp8: FP8Options) -> OpCost | None:
    """Delayed scaling's amax history update of ``tensors`` fp8 tensors (roll the history,
    take its max, write the new scale; TE fuses a layer's into one kernel): fp32 history of
    ``amax_history`` entries each, read and written, plus the scale. None for other recipes,
    whose scales come with the cast."""
    if fp8.recipe.name != "delayed":
        return None
    return OpCost(name, "elementwise", tensors * (fp8.amax_history + 2),
                  tensors * 4.0 * (2 * fp8.amax_history + 2))


def layer_fp8_weights(model, dense: float, expert: float, share: float | None = None
                      ) -> tuple[float, float]:
    """(dense, expert) parameters of a layer's FP8 GEMMs on a rank, from the layer's
    (dense, expert) parameters on it: all but the norm gains and the router (bf16).
    ``share``: the MoE layers' share of the layers this one stands for (default the model's).

    >>> from clustersim.workload.models import get_model
    >>> m = get_model("llama3-8b")
    >>> layer_fp8_weights(m, m.layer_params, 0)[0] == m.layer_params - m.norm_params
    True
    """
    moe = model.moe_fraction if share is None else share
    router = model.router_params * moe if model.moe else 0.0
    return max(0.0, dense - model.norm_params - router), expert
