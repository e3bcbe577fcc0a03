"""The compute model: how long one kernel (an OpCost) takes on one device.

A roofline with efficiency curves by shape. An op takes ``max(compute, memory)`` plus a fixed
per-kernel overhead, where

- compute = FLOPs / (peak(dtype) x efficiency). For a GEMM the efficiency is
  ``max_eff(dtype) x occupancy x m/(m+c) x n/(n+c) x k/(k+c_k)``: occupancy is the fraction of
  the device's SMs that get a whole output tile (a batched GEMM offers ``batch`` times the
  tiles of one; split-K spreads a long k over idle SMs), and each dimension acts as if padded
  by a constant (tile quantisation, per-tile prologue/epilogue). A GEMM thinner than a tile
  (a decode step's ``m`` = batch) thus pays the padding once, not twice, and lands on the
  memory floor it really has (its weights read once). Every factor is non-decreasing in
  m, n, k and batch and at most 1, so a bigger GEMM is never less efficient and no op runs
  faster than its FLOPs at peak. Flash attention has the same form over key length and head
  dimension, on families that have flash kernels (a family without them, V100, refuses
  ``attention`` ops: unfused attention is GEMMs and elementwise ops); elementwise ops run on
  the vector units.
- memory = bytes / (memory_efficiency x bandwidth), where the bandwidth is that of the memory
  edges (``mem_bw_Bps``, default the device's own), so swapping HBM for LPDDR slows exactly
  the memory-bound ops.

Parameters per device family live in ``hardware/data/compute.yaml`` with their sources; the
GEMM curves are fitted on measured cuBLASLt sweeps. Pure-Python arithmetic: this runs
thousands of times per second in sweeps, so family lookups are cached by device name.

>>> from clustersim.hardware.catalog import get_device
>>> from clustersim.workload.flops import OpCost
>>> a100 = get_device("a100-sxm-80gb")
>>> big = OpCost("gemm", "gemm", 2 * 16384**3, 3 * 16384**2 * 2, 16384, 16384, 16384)
>>> round(big.flops / op_time_s(big, a100, "bf16", in_training=False) / 1e12)  # Azure: 256.5
251
"""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, model_validator

from clustersim.config.quantities import Count, NonNegativeTime
from clustersim.config.validation import StrictModel, validate
from clustersim.config.yamlio import load_yaml_file
from clustersim.errors import InputError, InputErrors
from clustersim.hardware.memory_power import budgeted_memory_power_W

__all__ = ["calibrated_cache", "ComputeParams", "compute_params", "compute_families", "clear_caches",
           "gemm_efficiency", "attention_efficiency", "op_time_s", "OP_KINDS"]

OP_KINDS = ("gemm", "attention", "elementwise", "embedding", "optimizer")
_DATA = Path(__file__).parent / "data" / "compute.yaml"
_FALLBACK = "generic"
_ATTENTION_FIELDS = ("attention_max_efficiency", "attention_seq_overhead",
                     "attention_head_dim_overhead", "attention_bwd_ratio")
Fraction = float


class ComputeParams(StrictModel):
    """Efficiency parameters of one device family (see compute.yaml for their meaning)."""

    name: str
    devices: list[str] = Field(default_factory=list)
    compute_units: Count
    tile: tuple[Count, Count]
    gemm_max_efficiency: dict[str, float]
    gemm_dim_overhead: float = Field(ge=0)
    gemm_k_overhead: float | dict[str, float] = Field(
        description="one value, or per dtype with a `default`")
    split_k_min: float = Field(gt=0)
    # None: no flash-attention kernel on this family (then the other three are absent too)
    attention_max_efficiency: float | None = Field(None, gt=0, le=1)
    attention_seq_overhead: float | None = Field(None, ge=0)
    attention_head_dim_overhead: float | None = Field(None, ge=0)
    attention_bwd_ratio: float | None = Field(None, gt=0, le=1)
    memory_efficiency: float = Field(gt=0, le=1)
    # Sustained fraction of benchmark compute throughput inside a real multi-GPU training
    # step (power-capped clocks with every GPU, NIC and switch loaded, SMs shared with NCCL
    # kernels, framework-shaped operands); fitted per family on published training runs.
    # Every family states its decision: a value fitted on the rows of `fitted_on`, a value
    # with its `basis` (why, where no run was fitted), or `from` another family's fit.
    training_efficiency: float | None = Field(None, gt=0, le=1)
    training_efficiency_fitted_on: list[str] = Field(default_factory=list)
    training_efficiency_basis: str = ""
    training_efficiency_from: str | None = None
    # Compute runs this much slower while a communication kernel shares the device's SMs or
    # CUs (NCCL/RCCL) -- clustersim.result.overlap; 1 where collectives run on DMA engines.
    overlap_slowdown: float = Field(ge=1.0, le=2.0)
    kernel_overhead_s: NonNegativeTime = Field(alias="kernel_overhead")
    source: str = Field(min_length=1)
    estimated: list[str] = Field(default_factory=list)
    notes: str = ""

    model_config = {**StrictModel.model_config, "populate_by_name": True}

    @model_validator(mode="after")
    def _attention_all_or_none(self):
        given = [getattr(self, k) is not None for k in _ATTENTION_FIELDS]
        if any(given) and not all(given):
            raise ValueError(f"give all of {', '.join(_ATTENTION_FIELDS)} (a family with "
                             "flash-attention kernels) or none of them (a family without)")
        return self

    @property
    def flash_attention(self) -> bool:
        """Whether the family has flash-attention kernels (their efficiency is described)."""
        return self.attention_max_efficiency is not None

    def k_overhead(self, dtype: str) -> float:
        """The GEMM k-dimension overhead for ``dtype``."""
        ck = self.gemm_k_overhead
        return ck if isinstance(ck, (int, float)) else ck.get(dtype, ck["default"])

    def max_efficiency(self, dtype: str) -> float:
        """The GEMM plateau for ``dtype`` (the family's default when not measured)."""
        return self.gemm_max_efficiency.get(dtype, self.gemm_max_efficiency["default"])


@functools.cache
def compute_families() -> dict[str, ComputeParams]:
    """Every device family in compute.yaml, validated (read once per process).

    >>> compute_families()["h100"].compute_units
    132
    """
    doc = load_yaml_file(_DATA)
    families, errors = {}, []
    for name, entry in doc.data.items():
        doc.data[name] = {**entry, "name": name}
        try:
            family = validate(ComputeParams, doc, prefix=(name,))
        except InputErrors as exc:
            errors.extend(exc.errors)
            continue
        bad = {k: v for k, v in family.gemm_max_efficiency.items() if not 0 < v <= 1}
        if "default" not in family.gemm_max_efficiency or bad:
            errors.append(doc.error((name, "gemm_max_efficiency"), "gemm_max_efficiency "
                                    "needs a `default` and values in (0, 1]"))
        families[name] = family
    for name, family in families.items():
        problem = _training_decision_problem(family, families)
        if problem:
            errors.append(doc.error((name, "training_efficiency"), problem))
    for _ in range(len(families)):   # a chain of `from`s resolves one link per pass
        for name, family in families.items():
            source = families.get(family.training_efficiency_from or "")
            if source is not None and family.training_efficiency is None:
                families[name] = family.model_copy(
                    update={"training_efficiency": source.training_efficiency})
    if errors:
        raise InputErrors(errors)
    return families


def _training_decision_problem(family: ComputeParams, families: dict) -> str:
    """Why a family's training_efficiency decision is incomplete ("" when it is not)."""
    given = family.training_efficiency is not None
    inherited = family.training_efficiency_from
    if given == bool(inherited):
        return ("give either training_efficiency (fitted_on or basis) or "
                "training_efficiency_from: <family>, exactly one")
    seen = {family.name}
    while inherited:   # follow the chain to a family that states a value
        if inherited not in families or inherited in seen:
            return f"training_efficiency_from: {inherited!r} leads to no family with a value"
        seen.add(inherited)
        inherited = families[inherited].training_efficiency_from
    if given and not (family.training_efficiency_fitted_on or family.training_efficiency_basis):
        return "say where training_efficiency comes from: training_efficiency_fitted_on or " \
               "training_efficiency_basis"
    return ""


@functools.cache
def _family_of(device_name: str) -> ComputeParams:
    families = compute_families()
    for family in families.values():
        if device_name in family.devices:
            return family
    return families[_FALLBACK]


def compute_params(device) -> ComputeParams:
    """The efficiency parameters for a device (its family's, or the generic fallback).

    >>> from clustersim.hardware.catalog import get_device
    >>> compute_params(get_device("h200")).memory_efficiency
    0.883
    """
    return _family_of(device.name)


# Caches of results that depend on the families' values but whose arguments do not name
# them (a device's J/FLOP, a chunk's work): clear_caches forgets them with the families.
_CALIBRATED: list = []


def calibrated_cache(maxsize: int):
    """``functools.lru_cache`` for a function whose result depends on the compute families'
    values (``compute.yaml``) while its arguments do not name them, so that
    :func:`clear_caches` forgets it too, as a calibration trial needs.

    >>> @calibrated_cache(maxsize=8)
    ... def seconds(x):
    ...     return x * 2.0
    >>> seconds(1.0), seconds in _CALIBRATED
    (2.0, True)
    """
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        _CALIBRATED.append(cached)
        return cached
    return wrap


def clear_caches() -> None:
    """Forget every memoised family and GEMM efficiency, and every cache built on them
    (:func:`calibrated_cache`), after a family's values changed, as a calibration trial
    does."""
    _family_of.cache_clear()
    _gemm_eff.cache_clear()
    for cache in _CALIBRATED:
        cache.cache_clear()


@functools.lru_cache(maxsize=65536)
def _gemm_eff(m: int, n: int, k: int, family: str, dtype: str, batch: int = 1) -> float:
    p = compute_families()[family]
    top = p.max_efficiency(dtype)
    if m <= 0 or n <= 0 or k <= 0:   # shape unknown: the plateau
        return top
    c, ck = p.gemm_dim_overhead, p.k_overhead(dtype)
    # whole output tiles: a GEMM thinner than a tile (decode: m = batch) still occupies one
    # per column block, and split-K spreads a long k over the idle units
    tiles = max(1, batch) * -(-m // p.tile[0]) * -(-n // p.tile[1])
    occupancy = min(1.0, tiles * max(1.0, k / p.split_k_min) / p.compute_units)
    return top * occupancy * (m / (m + c)) * (n / (n + c)) * (k / (k + ck))


def gemm_efficiency(m: int, n: int, k: int, device, dtype: str, batch: int = 1) -> Fraction:
    """Fraction of peak(dtype) a GEMM of shape (m, n, k) reaches on ``device``; ``batch``
    such GEMMs in one batched kernel fill the SMs together.

    >>> from clustersim.hardware.catalog import get_device
    >>> h100 = get_device("h100-sxm-80gb")
    >>> [round(gemm_efficiency(s, s, s, h100, "fp8"), 2) for s in (1024, 4096, 32768)]
    [0.24, 0.64, 0.7]
    >>> [round(gemm_efficiency(1024, 1024, 64, h100, "fp8", batch=b), 2) for b in (1, 96)]
    [0.16, 0.34]
    """
    return _gemm_eff(int(m), int(n), int(k), compute_params(device).name, dtype, int(batch))


def attention_efficiency(rows: int, keys: int, head_dim: int, device,
                         backward: bool = False) -> Fraction:
    """Fraction of peak a flash-attention kernel reaches: ``rows`` query rows (tokens x
    heads), ``keys`` keys per query on average, head dimension ``head_dim``.

    A family without flash kernels refuses with an InputError that names the fix.

    >>> from clustersim.hardware.catalog import get_device
    >>> round(attention_efficiency(2 * 16 * 8192, 8192, 128, get_device("h100-sxm-80gb")), 2)
    0.61
    >>> attention_efficiency(8192, 2048, 128, get_device("v100-sxm2-32gb"))
    Traceback (most recent call last):
    ...
    clustersim.errors.InputError: v100-sxm2-32gb has no flash-attention kernels ...
    """
    p = compute_params(device)
    if not p.flash_attention:
        raise InputError(f"{device.name} has no flash-attention kernels (FlashAttention "
                         "runs on Turing and newer GPUs, not on Volta); set "
                         "`training.attention: materialized` to run attention as batched GEMMs "
                         "with the softmax through memory")
    eff = p.attention_max_efficiency
    if rows > 0:   # whole row blocks; flash-decoding splits long key ranges over idle units
        blocks = -(-int(rows) // p.tile[0]) * max(1.0, keys / p.split_k_min if keys > 0 else 1.0)
        eff *= min(1.0, blocks / p.compute_units)
    if keys > 0:
        eff *= keys / (keys + p.attention_seq_overhead)
    if head_dim > 0:
        eff *= head_dim / (head_dim + p.attention_head_dim_overhead)
    return eff * p.attention_bwd_ratio if backward else eff


@functools.lru_cache(maxsize=256)
def power_limited_clock(device) -> float:
    """The clock (a fraction of the rated one) at which ``device``'s math units run under its
    ``power_limit``; 1 without one.

    The catalog's energy per FLOP is derived so that GEMMs at their sustained rate bring the
    device to its TDP with its memory streaming flat out (:mod:`clustersim.hardware.power`).
    Their dynamic power is C V^2 f (CMOS switching power, Weste & Harris, *CMOS VLSI Design*,
    4th ed., Sec. 5.1), and DVFS lowers the supply voltage with the clock, so it scales as
    f^3. Under a limit P the math units get P - idle - memory of the TDP - idle - memory
    they draw at the rated clock: clock = (that ratio)^(1/3). Memory-bound kernels keep
    their speed (HBM runs on its own clock).

    >>> from clustersim.hardware.catalog import get_device
    >>> h100 = get_device("h100-sxm-80gb")
    >>> power_limited_clock(h100), round(power_limited_clock(
    ...     h100.with_overrides({"power_limit": "500 W"})), 3)   # ((500-70-86)/(700-70-86))^(1/3)
    (1.0, 0.858)
    """
    limit = device.power_limit_W
    if limit is None or limit >= device.tdp_W:
        return 1.0
    memory_W = budgeted_memory_power_W(device)
    rated, capped = device.tdp_W - device.idle_W - memory_W, limit - device.idle_W - memory_W
    if capped <= 0 or rated <= 0:
        raise InputError(f"device {device.name!r}: power_limit {limit:.0f} W leaves nothing "
                         f"for its math units once idle ({device.idle_W:.0f} W) and memory at "
                         f"full bandwidth ({memory_W:.0f} W) are paid; raise power_limit")
    return (capped / rated) ** (1 / 3)


def _vector_flops(device, dtype: str) -> float:
    """Peak of the non-matrix units that run elementwise ops: fp32 where the catalog has it."""
    if "fp32" in device.peak_flops:
        return device.peak_flops["fp32"]
    return device.flops_for(dtype)


def op_time_s(op, device, dtype: str, mem_bw_Bps: float | None = None,
              in_training: bool = True) -> float:
    """Seconds one op (a :class:`~clustersim.workload.flops.OpCost`) takes on ``device``.

    ``dtype`` is the run's precision (``op.dtype`` overrides it when set); ``mem_bw_Bps`` the
    bandwidth of the memory the device reads, default its own. ``in_training=False`` times the
    op alone, as a kernel benchmark would (without the family's ``training_efficiency``).

    >>> from clustersim.hardware.catalog import get_device
    >>> from clustersim.workload.flops import OpCost
    >>> h100 = get_device("h100-sxm-80gb")
    >>> add = OpCost("add", "elementwise", 1e9, 6e9)
    >>> round(op_time_s(add, h100, "bf16") * 1e3, 3), round(op_time_s(add, h100, "bf16",
    ...       mem_bw_Bps=0.5e12) * 1e3, 3)
    (1.978, 13.233)
    """
    if op.flops <= 0 and op.bytes <= 0:
        return 0.0
    p = _family_of(device.name)
    bw = device.memory.bw_Bps if mem_bw_Bps is None else mem_bw_Bps
    if bw <= 0:
        raise InputError(f"memory bandwidth must be positive, got {bw!r} B/s")
    memory_s = op.bytes / (p.memory_efficiency * bw)
    kind = op.kind
    dt = op.dtype or dtype
    if kind == "gemm":
        rate = device.flops_for(dt) * _gemm_eff(op.m, op.n, op.k, p.name, dt,
                                                getattr(op, "batch", 1))
    elif kind == "attention":
        rate = device.flops_for(dt) * attention_efficiency(op.m, op.n, op.k, device,
                                                           op.name.endswith("_bwd"))
    elif kind in OP_KINDS:
        rate = _vector_flops(device, dt)
    else:
        raise ValueError(f"unknown op kind {kind!r}; allowed: {', '.join(OP_KINDS)}")
    sustained = (p.training_efficiency if in_training else 1.0) * power_limited_clock(device)
    compute_s = op.flops / (rate * sustained) if op.flops > 0 else 0.0
    return max(compute_s, memory_s) + p.kernel_overhead_s
