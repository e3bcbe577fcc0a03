"""The compute model: roofline properties, and the fitted curves against the measurements
they came from (errors reported, bounded)."""

import itertools
import random
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from clustersim.errors import InputError
from clustersim.hardware.catalog import device_presets, get_device
from clustersim.hardware.compute import (ComputeParams, attention_efficiency,
                                         compute_families, compute_params, gemm_efficiency,
                                         op_time_s)
from clustersim.workload.flops import OpCost, Shard, layer_ops
from clustersim.workload.models import get_model

A100, H100 = get_device("a100-sxm-80gb"), get_device("h100-sxm-80gb")


def gemm(m, n, k, in_B=2):
    return OpCost("gemm", "gemm", 2.0 * m * n * k, (m * k + k * n) * in_B + m * n * 2, m, n, k)


# ------------------------------------------------------------------ roofline properties

def test_large_gemm_is_compute_bound_and_ignores_memory_bandwidth():
    op = gemm(8192, 8192, 8192)
    base = op_time_s(op, H100, "bf16")
    for bw in (0.5e12, 1e12, 3.35e12, 8e12):
        assert op_time_s(op, H100, "bf16", mem_bw_Bps=bw) == base
    lpddr = H100.with_overrides({"memory.technology": "lpddr5x", "memory.bandwidth": "1 TB/s"})
    assert op_time_s(op, lpddr, "bf16") == base


def test_elementwise_time_scales_inversely_with_memory_bandwidth():
    op = OpCost("add", "elementwise", 1e8, 3e9)
    overhead = compute_params(H100).kernel_overhead_s
    times = {bw: op_time_s(op, H100, "bf16", mem_bw_Bps=bw) - overhead
             for bw in (0.5e12, 1e12, 2e12, 4e12)}
    for bw, t in times.items():
        assert t * bw == pytest.approx(times[1e12] * 1e12)


SIZES = [1, 7, 64, 100, 128, 257, 512, 1000, 1024, 2048, 3000, 4096, 8192, 16384, 65536]


@pytest.mark.parametrize("family", sorted(compute_families()))
def test_gemm_efficiency_monotone_and_at_most_one(family):
    params = compute_families()[family]
    device = SimpleNamespace(name=(params.devices or ["unknown-device"])[0])
    for dtype in list(params.gemm_max_efficiency) + ["bf16", "fp8"]:
        for m, n, k in itertools.product(SIZES, repeat=3):
            eff = gemm_efficiency(m, n, k, device, dtype)
            assert 0 < eff <= 1
            for bigger in ((m * 2, n, k), (m, n * 2, k), (m, n, k * 2), (m + 1, n, k),
                           (m, n + 1, k), (m, n, k + 1)):
                assert gemm_efficiency(*bigger, device, dtype) >= eff


FLASH_FAMILIES = sorted(name for name, p in compute_families().items() if p.flash_attention)


@pytest.mark.parametrize("family", FLASH_FAMILIES)
def test_attention_efficiency_monotone_and_at_most_one(family):
    params = compute_families()[family]
    device = SimpleNamespace(name=(params.devices or ["unknown-device"])[0])
    for rows, keys, d in itertools.product([128, 4096, 10**6], [64, 1024, 32768],
                                           [64, 128, 256]):
        eff = attention_efficiency(rows, keys, d, device)
        assert 0 < attention_efficiency(rows, keys, d, device, backward=True) <= eff <= 1
        assert attention_efficiency(rows * 2, keys * 2, d * 2, device) >= eff


def test_no_op_runs_faster_than_peak_or_than_memory_allows():
    rng = random.Random(0)
    devices = list(device_presets().values())
    for _ in range(2000):
        device = rng.choice(devices)
        dtype = rng.choice(sorted(device.peak_flops))
        kinds = ["gemm", "elementwise", "optimizer", "embedding"]
        kind = rng.choice(kinds + ["attention"] * compute_params(device).flash_attention)
        m, n, k = (rng.choice(SIZES) for _ in range(3))
        batch = rng.choice([1, 1, 7, 96])
        op = OpCost("x", kind, 2.0 * m * n * k * batch, rng.uniform(1, 1e10), m, n, k,
                    batch=batch)
        bw = rng.choice([None, 1e11, 1e12, 1e13])
        t = op_time_s(op, device, dtype, mem_bw_Bps=bw)
        peak = device.peak_flops[dtype] if kind in ("gemm", "attention") else max(
            device.peak_flops.values())
        assert t >= op.flops / peak
        assert t >= op.bytes / (bw or device.memory.bw_Bps)


def test_batched_gemm_fills_the_device_like_its_whole_output():
    """A batch of B GEMMs offers B times the output tiles: at least as efficient as one of
    them, never above the plateau, and exactly one GEMM's efficiency when B = 1."""
    for device in (A100, H100):
        for m, n, k in ((512, 512, 64), (2048, 2048, 128), (1024, 64, 1024)):
            effs = [gemm_efficiency(m, n, k, device, "bf16", batch=b) for b in (1, 2, 24, 384)]
            assert effs[0] == gemm_efficiency(m, n, k, device, "bf16")
            assert effs == sorted(effs) and effs[-1] <= compute_params(device).max_efficiency(
                "bf16")
        # enough heads to give every SM a tile: the occupancy factor reaches one
        params = compute_params(device)
        c, ck, plateau = params.gemm_dim_overhead, params.k_overhead("bf16"), \
            params.max_efficiency("bf16")
        assert gemm_efficiency(512, 512, 64, device, "bf16", batch=384) == pytest.approx(
            plateau * (512 / (512 + c)) ** 2 * 64 / (64 + ck))


def test_v100_refuses_flash_attention_and_times_materialized_attention():
    """FlashAttention has no Volta kernels (Dao-AILab/flash-attention#148): a V100 run must
    model attention unfused, which needs nothing but the GEMM curve and the memory."""
    v100 = get_device("v100-sxm2-32gb")
    gpt = get_model("gpt3-175b")
    flash = layer_ops(gpt, Shard(tp=8), 1, 2048, "fp16")
    attn = next(op for op in flash["fwd"] if op.kind == "attention")
    with pytest.raises(InputError, match="training.attention: materialized"):
        op_time_s(attn, v100, "fp16")
    mat = layer_ops(gpt, Shard(tp=8), 1, 2048, "fp16", attention="materialized")
    assert not [op for op in mat["fwd"] + mat["bwd"] if op.kind == "attention"]
    for op in mat["fwd"] + mat["bwd"]:
        assert op_time_s(op, v100, "fp16") >= op.bytes / v100.memory.bw_Bps


def test_softmax_of_materialized_attention_is_memory_bound():
    gpt = get_model("gpt3-175b")
    ops = layer_ops(gpt, Shard(tp=8), 1, 2048, "bf16", attention="materialized")
    softmax = next(op for op in ops["fwd"] if op.name == "attention_softmax")
    params = compute_params(A100)
    assert op_time_s(softmax, A100, "bf16") == pytest.approx(
        softmax.bytes / (params.memory_efficiency * A100.memory.bw_Bps)
        + params.kernel_overhead_s)


def test_zero_op_takes_no_time_and_unknown_kind_is_refused():
    assert op_time_s(OpCost("nothing", "elementwise", 0, 0), A100, "bf16") == 0.0
    with pytest.raises(ValueError, match="unknown op kind"):
        op_time_s(OpCost("x", "conv", 1, 1), A100, "bf16")


def test_fp8_attention_runs_at_bf16_peak():
    ops = layer_ops(get_model("llama3-8b"), Shard(), 1, 8192, "fp8")["fwd"]
    attn = next(op for op in ops if op.kind == "attention")
    assert attn.dtype == "bf16"
    as_fp8 = OpCost(attn.name, attn.kind, attn.flops, attn.bytes, attn.m, attn.n, attn.k)
    assert op_time_s(attn, H100, "fp8") > op_time_s(as_fp8, H100, "fp8")


def test_every_catalog_device_has_parameters_and_every_family_names_real_devices():
    presets = device_presets()
    for family in compute_families().values():
        assert family.source and all(d in presets for d in family.devices), family.name
    for device in presets.values():
        dtype = sorted(device.peak_flops)[0]
        seconds = op_time_s(gemm(4096, 4096, 4096), device, dtype)
        at_peak = 2 * 4096 ** 3 / device.flops_for(dtype)   # nothing beats the datasheet peak
        assert at_peak < seconds < 20 * at_peak, (device.name, dtype, seconds / at_peak)
    assert compute_params(SimpleNamespace(name="my-asic")).name == "generic"


# ------------------------------------------------------------------ fit against measurements

# Azure/AI-benchmarking-guide cuBLASLt sweeps (TFLOP/s): A100 FP16, H100 FP8
AZURE = {
    ("a100-sxm-80gb", "fp16", 2): [((1024,) * 3, 119.4), ((2048,) * 3, 221.8),
                                   ((4096,) * 3, 228.0), ((8192,) * 3, 253.7),
                                   ((16384,) * 3, 256.5), ((6144, 12288, 12288), 250.8),
                                   ((802816, 192, 768), 157.8)],
    ("h100-sxm-80gb", "fp8", 1): [((1024,) * 3, 274.1), ((2048,) * 3, 1011.3),
                                  ((4096,) * 3, 1216.9), ((8192,) * 3, 1290.1),
                                  ((16384,) * 3, 1377.3), ((32768,) * 3, 1382.2),
                                  ((6144, 12288, 12288), 1351.4),
                                  ((802816, 192, 768), 663.8)],
}


@pytest.mark.parametrize("key", sorted(AZURE))
def test_gemm_curve_reproduces_the_sweep_it_was_fitted_on(key):
    name, dtype, in_B = key
    device = get_device(name)
    errors = []
    for (m, n, k), measured in AZURE[key]:
        op = gemm(m, n, k, in_B)
        predicted = op.flops / op_time_s(op, device, dtype, in_training=False) / 1e12
        errors.append(predicted / measured - 1)
    print(name, [f"{e:+.1%}" for e in errors])
    assert max(abs(e) for e in errors) < 0.10
    assert sum(abs(e) for e in errors) / len(errors) < 0.05


def test_gemm_plateau_below_best_shape_measured():
    """MAMF (stas00/ml-engineering): the best shape found; our plateau may not exceed it."""
    for name, dtype, mamf in (("a100-sxm-80gb", "bf16", 271.2), ("h100-sxm-80gb", "bf16", 794.5),
                              ("b200", "bf16", 1745.0)):
        device = get_device(name)
        assert gemm_efficiency(65536, 65536, 65536, device, dtype) * device.flops_for(
            dtype) <= mamf * 1e12 * 1.001


def test_flash_attention_sweep_on_h100():
    """pytorch/benchmark ff65cb6: FlashAttention-3 forward, hd128, 16 heads, B*S = 16k."""
    measured = {512: 430.32, 1024: 517.099, 2048: 565.544, 4096: 590.233, 8192: 614.234,
                16384: 620.73}
    for s, tflops in measured.items():
        eff = attention_efficiency(16384 * 16, s, 128, H100)
        assert eff * 989.4 == pytest.approx(tflops, rel=0.05)


def test_a_family_describes_flash_attention_fully_or_not_at_all():
    a100 = compute_families()["a100"].model_dump(by_alias=True)
    without = {k: v for k, v in a100.items() if not k.startswith("attention_")}
    assert not ComputeParams.model_validate(without).flash_attention
    with pytest.raises(ValidationError, match="attention_seq_overhead"):
        ComputeParams.model_validate({**without, "attention_max_efficiency": 0.5})
