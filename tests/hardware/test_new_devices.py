"""The devices added for issue 13 (H800, H20, MI250X GCD, MI325X, TPU v3, TPU v6e, GB300)
against their datasheets and against first principles: pin rates inside the memory standard,
per-GCD figures as half the package, rack and pod totals as the vendor's, cut-down parts as
the vendor's ratios to their full siblings."""

from __future__ import annotations

import pytest

from clustersim.hardware import get_device, get_link, get_switch, scale_up_bw_Bps
from clustersim.hardware.compute import compute_params
from clustersim.hardware.power import joules_per_flop

GB, TB, T, P = 1e9, 1e12, 1e12, 1e15
NEW = ["h800", "h20", "mi250x-gcd", "mi325x", "tpu-v3", "tpu-v6e", "gb300"]


def test_h800_is_an_h100_with_nvlink_cut_to_400_of_900_and_fp64_to_1_tflops():
    h800, h100 = get_device("h800"), get_device("h100-sxm-80gb")
    assert scale_up_bw_Bps(h800) / scale_up_bw_Bps(h100) == pytest.approx(400 / 900)
    assert 2 * scale_up_bw_Bps(h800) == pytest.approx(400 * GB)  # datasheet, bidirectional
    assert h800.flops_for("fp64") == pytest.approx(1 * T)
    for dtype in ("bf16", "fp16", "fp8", "tf32"):
        assert h800.flops_for(dtype) == h100.flops_for(dtype)
    assert (h800.memory, h800.tdp_W) == (h100.memory, h100.tdp_W)


def test_h20_datasheet_figures_and_full_nvlink():
    h20, h100 = get_device("h20"), get_device("h100-sxm-80gb")
    assert h20.flops_for("bf16") == pytest.approx(148 * T)
    assert h20.flops_for("fp8") == pytest.approx(2 * h20.flops_for("bf16"))  # Hopper's ratio
    assert h20.memory.capacity_B == 96 * 2**30 and h20.memory.bw_Bps == pytest.approx(4.0 * TB)
    assert scale_up_bw_Bps(h20) == scale_up_bw_Bps(h100) == pytest.approx(450 * GB)
    assert h20.tdp_W == 400


def test_mi250x_gcd_is_half_the_package_datasheet():
    gcd = get_device("mi250x-gcd")
    # AMD MI250X (per OAM = 2 GCDs): 383 TFLOP/s FP16/BF16, 95.7 FP64 matrix, 128 GB, 3.2 TB/s
    assert 2 * gcd.flops_for("bf16") == pytest.approx(383 * T)
    assert 2 * gcd.flops_for("fp64") == pytest.approx(95.7 * T)
    assert 2 * gcd.memory.capacity_B == 128 * 2**30
    assert 2 * gcd.memory.bw_Bps == pytest.approx(3.2 * TB, rel=0.03)
    assert 2 * gcd.tdp_W == 560
    # 8 Infinity Fabric links of 100 GB/s bidirectional per package = 800 GB/s
    assert 2 * 2 * scale_up_bw_Bps(gcd) == pytest.approx(800 * GB)
    # xGMI x16 at 25 GT/s: 16 x 25 Gb/s / 8 per direction (ROCm MI250 docs: 50 GB/s)
    assert get_link("infinity-fabric-cdna2").bw_Bps == pytest.approx(16 * 25e9 / 8)


def test_mi325x_is_mi300x_compute_with_more_and_faster_hbm3e():
    mi325, mi300 = get_device("mi325x"), get_device("mi300x")
    assert mi325.peak_flops == mi300.peak_flops
    assert mi325.memory.capacity_B == 256 * 2**30 and mi325.memory.bw_Bps == pytest.approx(6 * TB)
    assert 2 * scale_up_bw_Bps(mi325) == pytest.approx(7 * 128 * GB)
    assert mi325.tdp_W == 1000


def test_tpu_v3_and_v6e_pod_totals_match_google():
    v3, v6e = get_device("tpu-v3"), get_device("tpu-v6e")
    assert 1024 * v3.flops_for("bf16") == pytest.approx(126 * P, rel=0.001)   # 126 PF per pod
    assert 256 * v6e.flops_for("bf16") == pytest.approx(234.9 * P, rel=0.001)  # 234.9 PF per pod
    assert 2 * scale_up_bw_Bps(v6e) == pytest.approx(800 * GB)  # bidirectional ICI per chip
    # measured min/max chip power stands for idle and TDP, as for TPU v4
    assert (v3.idle_W, v3.tdp_W) == (123, 262)


def test_gb300_rack_totals_match_nvidia_nvl72():
    gb300, gb200 = get_device("gb300"), get_device("gb200")
    assert 72 * gb300.flops_for("fp4") == pytest.approx(1080 * P)        # dense FP4
    assert 72 * gb300.flops_for("fp8") == pytest.approx(720 / 2 * P)     # 720 PF sparse
    assert 72 * gb300.memory.bw_Bps == pytest.approx(576 * TB)
    # "20 TB" of HBM, in the catalog's convention that vendors' HBM "GB" are GiB
    assert 72 * gb300.memory.capacity_B / 2**30 == pytest.approx(20_000, rel=0.01)
    assert 72 * 2 * scale_up_bw_Bps(gb300) == pytest.approx(130 * TB, rel=0.01)
    assert get_link(gb300.nic).bw_Bps == pytest.approx(800e9 / 8)        # ConnectX-8
    assert gb300.flops_for("bf16") == gb200.flops_for("bf16")


@pytest.mark.parametrize("name", NEW)
def test_memory_runs_inside_its_standard_pin_rate(name):
    device = get_device(name)
    tech = get_link(device.memory.technology)
    assert device.memory.per_stack_bw_Bps <= tech.bw_Bps * 1.0001


@pytest.mark.parametrize("name", NEW)
def test_every_new_device_has_its_own_family_and_a_positive_flop_energy(name):
    device = get_device(name)
    family = compute_params(device)
    assert family.name != "generic" and name in family.devices
    # TDP must leave power for the math units once idle and memory are paid, and a 16-bit
    # tensor FLOP costs 0.1-2 pJ on 4-7 nm parts (Horowitz ISSCC 2014 scaled by Dally et al.,
    # Hot Chips 2021: 0.3-1 pJ; the range leaves room for older nodes and power-capped parts)
    assert 0.1e-12 < joules_per_flop(device, "bf16") < 2e-12


def test_unmeasured_families_flag_every_inherited_calibration():
    # none of the new parts has a measured HBM sweep or a fitted training run in our sources
    for name in NEW:
        family = compute_params(get_device(name))
        assert "memory_efficiency" in family.estimated and family.notes, name
        assert not family.training_efficiency_fitted_on, name
        if family.training_efficiency_from is None:   # a value of its own: an estimate
            assert "training_efficiency" in family.estimated, name


def test_rosetta_and_slingshot_are_the_200g_class():
    rosetta = get_switch("rosetta")
    assert rosetta.ports * get_link(rosetta.port_technology).bw_Bps == pytest.approx(12.8e12 / 8)
    assert get_link("slingshot-11").bw_Bps == get_link("ib-hdr").bw_Bps == pytest.approx(25 * GB)
