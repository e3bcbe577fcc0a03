"""What one kernel on one rank is: the :class:`OpCost` record every op builder returns, how a
rank's share of a layer is cut (:class:`Shard`) and the sizes that follow
(:func:`layer_dims`), and the bytes per element of each training precision.

The op builders (:mod:`~clustersim.workload.flops`, :mod:`~clustersim.workload.attention`)
and the collectives between them (:mod:`~clustersim.workload.comms`) all start from these.

>>> from clustersim.workload.models import get_model
>>> d = layer_dims(get_model("gpt3-175b"), Shard(tp=8), 1, 2048, "fp8")
>>> d.q, d.act_B, d.in_B
(1536, 2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

from clustersim.errors import InputError
from clustersim.workload.models import ModelSpec

__all__ = ["OpCost", "Work", "Shard", "PRECISIONS", "element_bytes", "LayerDims",
           "layer_dims", "ELEMENTWISE_FLOPS"]

PRECISIONS = ("bf16", "fp16", "fp8", "fp4", "fp32")
# NVFP4 (NVIDIA, Blackwell): 4-bit E2M1 values in blocks of 16 sharing one FP8 E4M3 scale,
# plus one FP32 scale per tensor -> 0.5 + 1/16 bytes per element of a GEMM operand
_NVFP4_B = 0.5 + 1.0 / 16
# Rough arithmetic per element of the memory-bound ops (forward; the backward does twice as
# much). They only matter on a device whose vector unit is slow next to its memory. Dropout:
# compare a random number, select, scale (the Philox generator's integer work not counted).
# FP8 quantize: abs-max, scale, convert.
ELEMENTWISE_FLOPS = {"norm": 5, "residual": 1, "gelu": 8, "swiglu": 5, "permute": 0,
                     "softmax": 5, "dropout": 3, "embedding": 0, "quantize": 3}


@dataclass(frozen=True)
class OpCost:
    """One kernel on one rank. For a GEMM, (m, n, k) is its shape and ``batch`` the number of
    such GEMMs one batched kernel runs (one per attention head; ``flops`` and ``bytes`` are
    the kernel's totals); for flash attention, m is query rows (tokens x heads on this rank),
    n the mean number of keys a query sees, k head_dim. ``dtype`` overrides the run's
    precision for this op ('' = the run's)."""

    name: str
    kind: str        # "gemm" | "attention" | "elementwise" | "embedding" | "optimizer"
    flops: float
    bytes: float
    m: int = 0
    n: int = 0
    k: int = 0
    dtype: str = ""
    batch: int = 1


@dataclass(frozen=True)
class Work:
    """Kernels timed on one rank: seconds, FLOPs executed, bytes moved to and from memory.

    >>> Work(1.0, 2.0, 3.0) * 0.5 + Work(1.0)
    Work(seconds=1.5, flops=1.0, bytes=1.5)
    """

    seconds: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(self.seconds + other.seconds, self.flops + other.flops,
                    self.bytes + other.bytes)

    def __mul__(self, k: float) -> Work:
        return Work(self.seconds * k, self.flops * k, self.bytes * k)


@dataclass(frozen=True)
class Shard:
    """How one rank's share of a layer is cut: tp (with sp: sequence-parallel norms), cp, ep.

    >>> Shard(tp=8, sp=True).tp
    8
    """

    tp: int = 1
    sp: bool = False
    cp: int = 1
    ep: int = 1


def element_bytes(precision: str) -> tuple[float, float]:
    """(activation bytes, GEMM-input bytes) per element for a training precision: fp8 and
    fp4 quantise the GEMM operands only (activations, gradients on the wire and weights
    stay 16-bit, as Transformer Engine's recipes keep them).

    >>> element_bytes("bf16"), element_bytes("fp8"), element_bytes("fp4"), element_bytes("fp32")
    ((2, 2), (2, 1), (2, 0.5625), (4, 4))
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    act = 4 if precision == "fp32" else 2
    return act, {"fp8": 1, "fp4": _NVFP4_B}.get(precision, act)


@dataclass(frozen=True)
class LayerDims:
    """The sizes one rank's share of a layer works on (see :func:`layer_dims`)."""

    b: int
    s_local: int     # tokens of one sequence on this rank (seq_len / cp)
    s_full: int
    t: float         # tokens on this rank (b * s_local)
    t_norm: float    # tokens the norms/residuals run on (t / tp with SP)
    h: int
    heads: int       # query heads on this rank
    kv: int          # KV heads on this rank (>= 1: replicated when tp > kv_heads)
    q: int           # query width on this rank
    kvw: int         # key (and value) width on this rank
    ffn: int         # MLP width on this rank
    vocab: int       # vocabulary slice on this rank (Megatron pads the vocab to divide)
    experts: int     # MoE experts held on this rank
    act_B: int
    in_B: int


def layer_dims(model: ModelSpec, shard: Shard, b: int, seq_len: int, precision: str
               ) -> LayerDims:
    """The sizes of one layer on a rank holding ``shard`` of it, for ``b`` sequences of
    ``seq_len`` tokens: tokens split over cp (and over tp for sequence-parallel norms), heads,
    widths and the vocabulary over tp (KV heads replicated when tp exceeds them), experts
    over ep.

    >>> from clustersim.workload.models import get_model
    >>> d = layer_dims(get_model("llama3-8b"), Shard(tp=4, sp=True), 1, 8192, "bf16")
    >>> d.t, d.t_norm, d.heads, d.kv, d.ffn
    (8192, 2048.0, 8, 2, 3584)
    """
    act_B, in_B = element_bytes(precision)
    tp = shard.tp
    kv = model.kv_heads // tp if model.kv_heads % tp == 0 else 1
    s_local = seq_len // shard.cp
    t = b * s_local
    return LayerDims(b, s_local, seq_len, t, t / tp if shard.sp else t, model.hidden,
                     model.heads // tp, kv, model.heads // tp * model.head_dim,
                     kv * model.head_dim, -(-model.ffn_hidden // tp), -(-model.vocab // tp),
                     max(1, model.experts // shard.ep), act_B, in_B)
