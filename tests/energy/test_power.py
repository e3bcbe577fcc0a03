"""The device power model and the static power of a cluster, from datasheet figures."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.result import StepOutcome, static_power_W, step_energy
from clustersim.errors import InputError
from clustersim.hardware import device_presets, get_device, get_switch
from clustersim.hardware.power import (joules_per_flop, joules_per_memory_byte,
                                       memory_power_at_peak_W)
from clustersim.network import build_cluster


@pytest.mark.parametrize("name", sorted(device_presets()))
def test_a_device_flat_out_draws_exactly_its_tdp(name):
    """idle + sustained FLOP/s x J/FLOP + full memory bandwidth x 8 x J/bit = TDP, per dtype:
    the math units reach the power limit at their sustained rate (peak x GEMM plateau x
    training efficiency), not at the datasheet peak."""
    from clustersim.hardware.compute import compute_params  # noqa: local, as it always was

    d = get_device(name)
    family = compute_params(d)
    for dtype, peak in d.peak_flops.items():
        sustained = peak * family.max_efficiency(dtype) * family.training_efficiency
        flat_out = d.idle_W + sustained * joules_per_flop(d, dtype) + memory_power_at_peak_W(d)
        if d.same_die_as:   # capped math units on a bigger die: below the rating it carries
            assert flat_out <= d.tdp_W * (1 + 1e-12)
        else:
            assert flat_out == pytest.approx(d.tdp_W, rel=1e-12)


def test_h100_by_hand():
    """H100 SXM datasheet: 700 W, 989.4 TFLOP/s BF16, 3.35 TB/s HBM3 (3.2 pJ/bit, links.yaml);
    70 W idle (estimate). HBM3 flat out: 3.35e12 x 8 x 3.2e-12 = 85.8 W."""
    h100 = get_device("h100-sxm-80gb")
    assert memory_power_at_peak_W(h100) == pytest.approx(3.35e12 * 8 * 3.2e-12)
    # BF16 plateau 0.80 (MAMF) x training efficiency 0.80 (compute.yaml)
    assert joules_per_flop(h100, "bf16") == pytest.approx((700 - 70 - 85.76)
                                                          / (989.4e12 * 0.80 * 0.80))
    assert joules_per_memory_byte(h100) == pytest.approx(8 * 3.2e-12)


@pytest.mark.parametrize("memory", [
    {"memory.technology": "hbm3e", "memory.bandwidth": "6144 GB/s"},
    {"memory.technology": "lpddr5x", "memory.stacks": 16, "memory.bandwidth": "1092 GB/s",
     "memory.capacity": "256 GiB"},
    {"memory.bandwidth": "2 TB/s"}])
def test_swapping_only_the_memory_keeps_the_energy_of_a_flop(memory):
    """J/FLOP belongs to the compute die: a memory swap changes memory energy, not compute."""
    h100 = get_device("h100-sxm-80gb")
    variant = h100.with_overrides(memory)
    assert joules_per_flop(variant, "bf16") == joules_per_flop(h100, "bf16")
    assert joules_per_memory_byte(variant) == 8 * {"hbm3e": 3.2e-12, "lpddr5x": 4e-12}.get(
        variant.memory.technology, 3.2e-12)


def test_a_new_power_envelope_is_budgeted_with_its_own_memory():
    """Overriding TDP (a new design, e.g. ucie-chiplets' monolithic package) re-derives it."""
    h100 = get_device("h100-sxm-80gb")
    capped = h100.with_overrides({"tdp": "500 W"})
    assert joules_per_flop(capped, "bf16") == pytest.approx(
        (500 - 70 - memory_power_at_peak_W(h100)) / 989.4e12)


def test_memory_eating_the_whole_budget_is_an_input_error_not_a_silent_zero():
    """TPU v4: 192 W max, 90 W min (Google), HBM2 38 W flat out; at 120 W nothing is left."""
    tpu = get_device("tpu-v4").with_overrides({"tdp": "120 W"})
    with pytest.raises(InputError, match="no power for its math units"):
        joules_per_flop(tpu, "bf16")


def test_static_power_counts_every_device_switch_and_host():
    """Two DGX H100 nodes: 16 x 70 W idle GPUs, 8 NVSwitch3 chips (113 W), the fat-tree's
    Quantum-2 chips (225 W) and two 950 W hosts (topology estimate)."""
    c = build_cluster("dgx-h100", devices=16)
    kinds = [data for _, data in c.graph.nodes(data=True)]
    nvswitch = sum(1 for d in kinds if d["kind"] == "switch" and d.get("model") == "nvswitch3")
    quantum = sum(1 for d in kinds if d["kind"] == "switch" and d.get("model") == "quantum2-ndr")
    assert nvswitch == 8 and quantum >= 1
    static = static_power_W(c)
    assert static["devices"] == 16 * 70
    assert static["switches"] == pytest.approx(nvswitch * get_switch("nvswitch3").power_W
                                               + quantum * get_switch("quantum2-ndr").power_W)
    assert static["hosts"] == 2 * 950


def test_parts_add_up_and_pue_scales_the_total():
    c = build_cluster("dgx-h100", devices=8)
    link_bytes = np.zeros(len(c.links))
    link_bytes[0] = 1e9
    act = StepOutcome(2.0, 0.0, 0.0, 0.0, 2.0, flops=1e15, mem_bytes=1e12,
                      link_bytes=link_bytes)
    e1, e12 = step_energy(c, act, "bf16"), step_energy(c, act, "bf16", pue=1.2)
    parts = ("energy_compute_j", "energy_memory_j", "energy_network_j", "energy_static_j")
    assert e1["energy_j"] == pytest.approx(sum(e1[k] for k in parts), rel=1e-12)
    assert e1["energy_compute_j"] == pytest.approx(1e15 * joules_per_flop(c.device, "bf16"))
    assert e1["energy_memory_j"] == pytest.approx(1e12 * 8 * 3.2e-12)
    assert e12["energy_j"] == pytest.approx(1.2 * e1["energy_j"], rel=1e-12)
    assert e12["avg_power_w"] == pytest.approx(e12["energy_j"] / 2.0)


@pytest.mark.parametrize("limit_W", [350, 500, 650])
def test_a_power_limited_device_flat_out_draws_exactly_its_limit(limit_W):
    """Under ``power_limit`` the math units run at clock c = ((P - idle - mem) / (TDP - idle -
    mem))^(1/3) (dynamic power C V^2 f with V following f): a sustained GEMM runs c times as
    fast and each FLOP costs c^2 the energy, so the device draws exactly the limit; kernels
    bound by memory keep their speed."""
    from clustersim.hardware.compute import (compute_params, op_time_s,  # noqa: local,
                                             power_limited_clock)      # as above
    from clustersim.workload.flops import OpCost

    h100 = get_device("h100-sxm-80gb")
    capped = h100.with_overrides({"power_limit": f"{limit_W} W"})
    mem = memory_power_at_peak_W(h100)
    clock = power_limited_clock(capped)
    assert clock == pytest.approx(((limit_W - 70 - mem) / (700 - 70 - mem)) ** (1 / 3))
    family = compute_params(capped)
    sustained = 989.4e12 * family.max_efficiency("bf16") * family.training_efficiency * clock
    assert (capped.idle_W + sustained * joules_per_flop(capped, "bf16") + mem
            == pytest.approx(limit_W, rel=1e-12))
    gemm = OpCost("gemm", "gemm", 2 * 8192 ** 3, 3 * 2 * 8192 ** 2, m=8192, n=8192, k=8192)
    assert op_time_s(gemm, capped, "bf16") - family.kernel_overhead_s == pytest.approx(
        (op_time_s(gemm, h100, "bf16") - family.kernel_overhead_s) / clock, rel=1e-9)
    copy = OpCost("copy", "elementwise", 0.0, 8e9)
    assert op_time_s(copy, capped, "bf16") == op_time_s(copy, h100, "bf16")


def test_a_power_limit_outside_idle_to_tdp_is_refused():
    h100 = get_device("h100-sxm-80gb")
    with pytest.raises(InputError, match="power_limit"):
        h100.with_overrides({"power_limit": "800 W"})
    from clustersim.hardware.compute import power_limited_clock  # noqa: local, as above
    with pytest.raises(InputError, match="leaves nothing"):
        power_limited_clock(h100.with_overrides({"power_limit": "100 W"}))
