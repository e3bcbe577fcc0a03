"""Transformer model specs (dense and MoE; MHA, GQA, MQA, MLA; GELU or SwiGLU) and their presets.

A :class:`ModelSpec` is a frozen, hashable value: the FLOP and memory functions cache on it.
Presets live in ``workload/data/models.yaml``, each with the paper or model card it comes from;
:func:`resolve_model` turns the experiment's ``model:`` section into a spec, merging a preset
with any dimension written inline.

Parameter counting: weight matrices and norm gains; biases and learned position embeddings
(GPT-3 has both, ~0.02% of its parameters) are left out.

>>> m = model_presets()["llama3-8b"]
>>> round(m.total_params / 1e9, 2), m.kv_heads, m.ffn
(8.03, 8, 'swiglu')
>>> round(model_presets()["mixtral-8x7b"].active_params / 1e9, 1)
12.9
>>> v3 = model_presets()["deepseek-v3"]
>>> round(v3.total_params / 1e9), round(v3.active_params / 1e9, 1), v3.moe_layers
(671, 37.6, 58)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clustersim.config.yamlio import load_yaml_file
from clustersim.errors import InputError, InputErrors, lookup
from clustersim.workload.moe import MoESpec, moe_from_dict

__all__ = ["MLASpec", "ModelSpec", "model_presets", "get_model", "resolve_model", "FFN_KINDS",
           "DEFAULT_SEQ_LEN"]

FFN_KINDS = ("gelu", "swiglu")
# An inline model with no seq_len gets GPT-3's context (Brown et al. 2020, Table 2.1);
# training.seq_len overrides it in any case.
DEFAULT_SEQ_LEN = 2048
_DATA = Path(__file__).parent / "data" / "models.yaml"


@dataclass(frozen=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2, Liu et al. 2024, Sec. 2.1): keys and values
    come up from a ``kv_lora_rank`` latent, queries from a ``q_lora_rank`` one (0: a full
    query projection); each head's query and key have ``qk_nope_head_dim`` plus a
    ``qk_rope_head_dim`` rotary part (the rotary key is shared by the heads), values
    ``v_head_dim``. Only the latent and the rotary key need keeping per token.

    >>> MLASpec(512, 1536, 64, 128, 128).kv_cache_width
    576
    """

    kv_lora_rank: int
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 64
    qk_nope_head_dim: int = 128
    v_head_dim: int = 128

    def __post_init__(self):
        if min(self.kv_lora_rank, self.qk_nope_head_dim + self.qk_rope_head_dim,
               self.v_head_dim) < 1 or min(self.q_lora_rank, self.qk_rope_head_dim) < 0:
            raise InputError(f"mla needs positive kv_lora_rank, head dims and q_lora_rank >= 0, "
                             f"got {self}")

    @property
    def qk_head_dim(self) -> int:
        """Query/key width of one head: the non-rotary and the rotary part."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def kv_cache_width(self) -> int:
        """Elements kept per token and layer: the KV latent and the shared rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


@dataclass(frozen=True)
class ModelSpec:
    """One decoder-only transformer; an MoE layer replaces the dense MLP (Mixtral style; with
    shared experts, leading dense layers and interleaving, DeepSeek style: :class:`MoESpec`).
    ``mla`` makes attention multi-head latent (:class:`MLASpec`); ``attention_window`` > 0
    makes it sliding-window (each query sees at most that many keys, Mistral 7B style).

    >>> gpt = ModelSpec("tiny", layers=2, hidden=64, heads=4, vocab=100, seq_len=16)
    >>> gpt.head_dim, gpt.kv_heads, gpt.ffn_hidden, gpt.layer_params
    (16, 4, 256, 49280)
    """

    name: str
    layers: int
    hidden: int
    heads: int
    vocab: int
    seq_len: int = DEFAULT_SEQ_LEN
    kv_heads: int = 0          # 0: as many as heads (multi-head attention)
    head_dim: int = 0          # 0: hidden // heads
    ffn_hidden: int = 0        # 0: 4*hidden for gelu, LLaMA's rule for swiglu
    ffn: str = "gelu"
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    attention_window: int = 0  # 0: every earlier token (full causal attention)
    parallel_attention: bool = False
    tied_embeddings: bool = False
    dropout: bool = False      # attention and hidden dropout during training
    source: str = ""

    def __post_init__(self):
        for key in ("layers", "hidden", "heads", "vocab", "seq_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise InputError(f"model {self.name!r}: {key} must be a positive integer, "
                                 f"got {value!r}")
        if self.ffn not in FFN_KINDS:
            raise InputError(f"model {self.name!r}: ffn must be one of {', '.join(FFN_KINDS)}, "
                             f"got {self.ffn!r}")
        if self.mla is not None:
            self._mla_dimensions()
        if not self.kv_heads:
            object.__setattr__(self, "kv_heads", self.heads)
        if not self.head_dim:
            if self.hidden % self.heads:
                raise InputError(f"model {self.name!r}: hidden={self.hidden} is not divisible "
                                 f"by heads={self.heads}; give head_dim explicitly")
            object.__setattr__(self, "head_dim", self.hidden // self.heads)
        if not self.ffn_hidden:
            object.__setattr__(self, "ffn_hidden", default_ffn_hidden(self.hidden, self.ffn))
        for key in ("kv_heads", "head_dim", "ffn_hidden"):
            if getattr(self, key) < 0:
                raise InputError(f"model {self.name!r}: {key} must be positive, got "
                                 f"{getattr(self, key)}")
        if self.heads % self.kv_heads:
            raise InputError(f"model {self.name!r}: heads={self.heads} must be a multiple of "
                             f"kv_heads={self.kv_heads} (grouped-query attention)")
        if self.moe is not None and not 1 <= self.moe.top_k <= self.moe.experts:
            raise InputError(f"model {self.name!r}: moe.top_k={self.moe.top_k} must be "
                             f"between 1 and moe.experts={self.moe.experts}")
        if self.moe is not None and self.moe_layers == 0:
            raise InputError(f"model {self.name!r}: moe.dense_layers={self.moe.dense_layers} "
                             f"and moe.every={self.moe.every} leave no MoE layer among "
                             f"{self.layers}; lower them or drop moe")
        if self.attention_window < 0:
            raise InputError(f"model {self.name!r}: attention_window must be >= 0 (0: full), "
                             f"got {self.attention_window}")

    def _mla_dimensions(self) -> None:
        """MLA materialises every head's key and value in training: kv_heads = heads. The
        attention core's width is carried by head_dim = (qk_head_dim + v_head_dim) / 2, which
        makes Q K^T plus P V cost 4 s s_k heads head_dim, as for any head."""
        width = self.mla.qk_head_dim + self.mla.v_head_dim
        if self.kv_heads not in (0, self.heads) or width % 2 or \
                self.head_dim not in (0, width // 2):
            raise InputError(f"model {self.name!r}: with mla leave kv_heads and head_dim out "
                             f"(they follow from mla), and qk_nope + qk_rope + v head dims "
                             f"must be even; got kv_heads={self.kv_heads}, "
                             f"head_dim={self.head_dim}, width {width}")
        object.__setattr__(self, "kv_heads", self.heads)
        object.__setattr__(self, "head_dim", width // 2)

    # ------------------------------------------------------------------ dimensions
    @property
    def q_dim(self) -> int:
        """Width of the query projection: heads x head_dim."""
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection: kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def ffn_matrices(self) -> int:
        """Weight matrices in one MLP: 2 for GELU (up, down), 3 for SwiGLU (gate, up, down)."""
        return 3 if self.ffn == "swiglu" else 2

    @property
    def experts(self) -> int:
        """MLP experts per layer (1 for a dense model)."""
        return self.moe.experts if self.moe else 1

    @property
    def top_k(self) -> int:
        """Experts each token visits (1 for a dense model)."""
        return self.moe.top_k if self.moe else 1

    @property
    def expert_ffn_hidden(self) -> int:
        """Width of one routed (or shared) expert; ffn_hidden for a dense model."""
        return (self.moe.expert_ffn_hidden or self.ffn_hidden) if self.moe else self.ffn_hidden

    def is_moe_layer(self, layer: int) -> bool:
        """Whether layer ``layer`` (0-based) has an MoE MLP (HF modeling_deepseek.py rule).

        >>> m = ModelSpec("m", 6, 64, 4, 100, moe=MoESpec(4, 1, dense_layers=1, every=2))
        >>> [m.is_moe_layer(i) for i in range(6)]
        [False, False, True, False, True, False]
        """
        return (self.moe is not None and layer >= self.moe.dense_layers
                and layer % self.moe.every == 0)

    @property
    def moe_layers(self) -> int:
        """How many layers have an MoE MLP (0 for a dense model)."""
        if self.moe is None:   # read per plan in a sweep: skip the count for a dense model
            return 0
        return sum(self.is_moe_layer(i) for i in range(self.layers))

    @property
    def moe_fraction(self) -> float:
        """Share of the layers that are MoE."""
        return self.moe_layers / self.layers

    def moe_share(self, first: int, count: int) -> float:
        """Share of the MoE layers among layers ``first .. first + count - 1`` (a pipeline
        chunk's: DeepSeek-V3's first stage holds its three dense layers).

        >>> m = ModelSpec("m", 8, 64, 4, 100, moe=MoESpec(4, 1, dense_layers=4))
        >>> m.moe_share(0, 4), m.moe_share(4, 4), m.moe_fraction
        (0.0, 1.0, 0.5)
        """
        return sum(self.is_moe_layer(i) for i in range(first, first + count)) / max(1, count)

    # ------------------------------------------------------------------ parameter counts
    @property
    def attention_params(self) -> int:
        """Q, K, V and output projections of one layer (MLA: down- and up-projections)."""
        if self.mla is None:
            return 2 * self.hidden * self.q_dim + 2 * self.hidden * self.kv_dim
        m, h, heads = self.mla, self.hidden, self.heads
        q = (h * m.q_lora_rank + m.q_lora_rank * heads * m.qk_head_dim if m.q_lora_rank
             else h * heads * m.qk_head_dim)
        kv = h * m.kv_cache_width + m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
        return q + kv + heads * m.v_head_dim * h

    @property
    def dense_mlp_params(self) -> int:
        """The dense MLP of a dense layer (ffn_hidden wide)."""
        return self.ffn_matrices * self.hidden * self.ffn_hidden

    @property
    def expert_params(self) -> int:
        """One MLP of an MoE layer (one routed or shared expert); the dense MLP otherwise."""
        return self.ffn_matrices * self.hidden * self.expert_ffn_hidden

    @property
    def shared_expert_params(self) -> int:
        """The shared experts of one MoE layer."""
        return self.moe.shared_experts * self.expert_params if self.moe else 0

    @property
    def router_params(self) -> int:
        """The MoE router of one layer (0 for a dense model)."""
        return self.hidden * self.moe.experts if self.moe else 0

    @property
    def norm_params(self) -> int:
        """Norm gains of one layer: one norm in a parallel block, two in a serial one (MLA
        adds the norms of its query and KV latents)."""
        latents = self.mla.q_lora_rank + self.mla.kv_lora_rank if self.mla else 0
        return (1 if self.parallel_attention else 2) * self.hidden + latents

    @property
    def dense_layer_params(self) -> int:
        """All parameters of one layer with a dense MLP."""
        return self.attention_params + self.dense_mlp_params + self.norm_params

    @property
    def layer_params(self) -> int:
        """All parameters of one transformer layer (an MoE layer in an MoE model)."""
        if self.moe is None:
            return self.dense_layer_params
        return (self.attention_params + self.experts * self.expert_params
                + self.shared_expert_params + self.router_params + self.norm_params)

    @property
    def active_layer_params(self) -> int:
        """Parameters one token touches in one layer (top_k routed and the shared experts of
        an MoE layer in an MoE model)."""
        if self.moe is None:
            return self.dense_layer_params
        return (self.attention_params + self.top_k * self.expert_params
                + self.shared_expert_params + self.router_params + self.norm_params)

    def _over_layers(self, moe_layer: int, dense_layer: int) -> int:
        return self.moe_layers * moe_layer + (self.layers - self.moe_layers) * dense_layer

    @property
    def embedding_params(self) -> int:
        """The input embedding table (vocab x hidden)."""
        return self.vocab * self.hidden

    @property
    def output_params(self) -> int:
        """The output projection, 0 when it is the (tied) input embedding."""
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def non_embedding_params(self) -> int:
        """Transformer layers and the final norm (Kaplan et al. 2020's N)."""
        return self._over_layers(self.layer_params, self.dense_layer_params) + self.hidden

    @property
    def description(self) -> str:
        """One line for ``clustersim presets``: size and shape.

        >>> get_model("llama3-8b").description
        'llama3-8b: 8.0B parameters, 32 layers, hidden 4096, 32 heads (8 KV), swiglu MLP 14336, vocab 128256, seq 8192'
        """
        kv = f" ({self.kv_heads} KV)" if self.kv_heads != self.heads else ""
        kv = f" (MLA, KV latent {self.mla.kv_lora_rank})" if self.mla else kv
        kv += f", window {self.attention_window}" if self.attention_window else ""
        moe = ""
        if self.moe:
            moe = (f", MoE {self.moe.experts} experts of {self.expert_ffn_hidden} top-"
                   f"{self.moe.top_k} in {self.moe_layers} layers")
            moe += f" + {self.moe.shared_experts} shared" if self.moe.shared_experts else ""
        block = ", parallel attention+MLP" if self.parallel_attention else ""
        return (f"{self.name}: {self.total_params / 1e9:.1f}B parameters, {self.layers} layers, "
                f"hidden {self.hidden}, {self.heads} heads{kv}, {self.ffn} MLP "
                f"{self.ffn_hidden}{moe}{block}, vocab {self.vocab}, seq {self.seq_len}")

    @property
    def total_params(self) -> int:
        """Every parameter: layers, final norm, embedding and (untied) output projection.

        >>> round(model_presets()["palm-540b"].total_params / 1e9, 1)
        540.4
        """
        return self.non_embedding_params + self.embedding_params + self.output_params

    @property
    def active_params(self) -> int:
        """Parameters one token touches (equal to total_params for a dense model)."""
        return (self._over_layers(self.active_layer_params, self.dense_layer_params)
                + self.hidden + self.embedding_params + self.output_params)

    @property
    def matmul_params(self) -> int:
        """Active parameters that take part in a matrix multiply, once per token.

        This is the N of the 6N rule as PaLM counts it: layer matrices plus the output
        projection (the shared embedding when tied); the input lookup and norms are out.
        PaLM 540B's 46.2% MFU is reproduced with this N (see flops.model_flops_per_token).
        """
        moe_layer = (self.attention_params + self.top_k * self.expert_params
                     + self.shared_expert_params + self.router_params)
        dense_layer = self.attention_params + self.dense_mlp_params
        return self._over_layers(moe_layer, dense_layer) + self.vocab * self.hidden


def default_ffn_hidden(hidden: int, ffn: str) -> int:
    """MLP width when not given: 4h for GELU (GPT); 2/3 of 4h rounded up to a multiple of 256
    for SwiGLU, the rule of LLaMA's reference code (Touvron et al. 2023).

    >>> default_ffn_hidden(4096, "gelu"), default_ffn_hidden(4096, "swiglu")
    (16384, 11008)
    """
    if ffn == "gelu":
        return 4 * hidden
    multiple = 256
    width = int(2 * 4 * hidden / 3)
    return multiple * -(-width // multiple)


# ---------------------------------------------------------------------------- presets

_FIELDS = {"layers", "hidden", "heads", "kv_heads", "head_dim", "ffn_hidden", "vocab",
           "seq_len", "ffn", "moe", "mla", "attention_window", "parallel_attention",
           "tied_embeddings", "dropout", "source"}


def _spec_from_entry(name: str, entry: dict[str, Any]) -> ModelSpec:
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise InputError(f"model preset {name!r}: unknown key {unknown[0]!r} "
                         f"(allowed: {', '.join(sorted(_FIELDS))})")
    data = dict(entry)
    if data.get("moe") is not None:
        data["moe"] = moe_from_dict(data["moe"])
    if data.get("mla") is not None:
        data["mla"] = MLASpec(**data["mla"])
    return ModelSpec(name=name, **data)


@functools.cache
def _presets() -> dict[str, ModelSpec]:
    doc = load_yaml_file(_DATA)
    presets, errors = {}, []
    for name, entry in doc.data.items():
        try:
            if not entry.get("source"):
                raise InputError(f"model preset {name!r} has no source")
            presets[name] = _spec_from_entry(name, entry)
        except (InputError, TypeError) as exc:
            errors.append(InputError(str(exc), *doc.where((name,))))
    if errors:
        raise InputErrors(errors)
    return presets


def model_presets() -> dict[str, ModelSpec]:
    """Every model preset by name (the YAML is read once per process).

    >>> sorted(model_presets())[:3]
    ['deepseek-v3', 'gpt3-175b', 'llama2-70b']
    """
    return dict(_presets())


def get_model(name: str) -> ModelSpec:
    """The model preset ``name``; an unknown name suggests the closest ones.

    >>> get_model("gpt3-175b").layers
    96
    >>> get_model("llama3-7b")
    Traceback (most recent call last):
    ...
    clustersim.errors.InputError: unknown model preset 'llama3-7b'; did you mean ...
    """
    return lookup(_presets(), name, "model preset")


_INLINE = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn_hidden", "vocab",
           "seq_len", "ffn", "attention_window", "parallel_attention", "tied_embeddings",
           "dropout")


def resolve_model(cfg) -> ModelSpec:
    """The ModelSpec an experiment's ``model:`` section (a ModelConfig) describes.

    A preset with inline keys takes the preset and replaces what is written. Dimensions that
    follow from others are derived again when their inputs change and they were not given:
    head_dim (= hidden/heads) when hidden or heads change, kv_heads (= heads) when heads
    change and the preset's kv_heads no longer divides them, ffn_hidden (same ratio to hidden)
    when hidden changes.

    >>> from clustersim.config.experiment import ModelConfig
    >>> resolve_model(ModelConfig(preset="llama3-8b", layers=16)).layers
    16
    >>> m = resolve_model(ModelConfig(layers=4, hidden=256, heads=8, vocab=1000))
    >>> m.name, m.head_dim, m.ffn_hidden, m.seq_len, m.dropout
    ('custom', 32, 1024, 2048, False)
    >>> resolve_model(ModelConfig(preset="llama3-8b", dropout=True)).dropout
    True
    """
    given = {k: getattr(cfg, k) for k in _INLINE if getattr(cfg, k) is not None}
    moe = moe_from_dict(cfg.moe.model_dump()) if cfg.moe else None
    mla = MLASpec(**cfg.mla.model_dump()) if cfg.mla else None
    if cfg.preset is None:
        return ModelSpec(name=cfg.name or "custom", moe=moe, mla=mla, source="inline", **given)
    base = get_model(cfg.preset)
    if not given and moe is None and mla is None:
        return base if cfg.name is None else replace(base, name=cfg.name)
    changes: dict[str, Any] = dict(given)
    if moe is not None:
        changes["moe"] = moe
    if mla is not None:
        changes.update(mla=mla, kv_heads=0, head_dim=0)
    hidden = given.get("hidden", base.hidden)
    heads = given.get("heads", base.heads)
    mla_kept = (mla or base.mla) is not None
    if ("hidden" in given or "heads" in given) and "head_dim" not in given and not mla_kept:
        if hidden % heads:
            raise InputError(f"model: hidden={hidden} is not divisible by heads={heads}; "
                             "give head_dim explicitly")
        changes["head_dim"] = hidden // heads
    if "heads" in given and "kv_heads" not in given and (heads % base.kv_heads or mla_kept):
        changes["kv_heads"] = heads
    if "hidden" in given and "ffn_hidden" not in given:
        changes["ffn_hidden"] = round(base.ffn_hidden * hidden / base.hidden)
    written = ", ".join(f"{k}={v}" for k, v in given.items())
    what = "moe" if mla is None else ("mla" if moe is None else "moe, mla")
    name = cfg.name or (f"{base.name} ({written})" if written else f"{base.name} ({what})")
    return replace(base, name=name, source=f"{base.source}; changed inline: {written}",
                   **changes)
