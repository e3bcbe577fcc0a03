"""The presets added for issue 13 against datasheets and first principles: device counts,
per-device scale-up bandwidth, torus shapes with their wrap-around and Google's bisection
figures, the MI250X package link against the links between packages, and a short analytic
training step on each whose time is bounded by the peak-FLOP ratio to a reference system."""

from __future__ import annotations

import pytest

from clustersim.cli.main import main
from clustersim.config.experiment import ExperimentConfig
from clustersim.experiment.scenario import Scenario, run_scenario
from clustersim.hardware import get_device, get_link
from clustersim.hardware.compute import compute_params
from clustersim.network import build_cluster
from clustersim.network.metrics import bisection_bandwidth, flow_rates, injection_bandwidth
from clustersim.topology import topology_presets

GB, TB = 1e9, 1e12
# preset: (device, default device count, scale-up bandwidth per device and direction, source)
NEW_PRESETS = {
    "hgx-h800": ("h800", 8, 200 * GB),          # 400 GB/s bidirectional (H800 datasheet)
    "hgx-h20": ("h20", 8, 450 * GB),            # 900 GB/s bidirectional (H20 brief)
    "mi250x-frontier": ("mi250x-gcd", 8, None),  # package link + xGMI: tested below
    "mi325x-node": ("mi325x", 8, 448 * GB),     # 7 x 128 GB/s bidirectional (AMD)
    "tpu-v3-pod": ("tpu-v3", 1024, 400 * GB),   # 4 ICI links x 100 GB/s one way
    "tpu-v6e-pod": ("tpu-v6e", 256, 400 * GB),  # 800 GBps bidirectional ICI (Google)
    "gb300-nvl72": ("gb300", 72, 900 * GB),     # 1.8 TB/s bidirectional NVLink5
}


def test_presets_command_lists_the_new_presets(capsys):
    assert main(["presets", "--kind", "topologies"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in NEW_PRESETS)
    assert set(NEW_PRESETS) <= set(topology_presets())


@pytest.mark.parametrize("name", sorted(NEW_PRESETS))
def test_preset_builds_its_default_size_with_the_datasheet_scale_up(name):
    device, count, scale_up = NEW_PRESETS[name]
    cluster = build_cluster(name)
    assert len(cluster.devices) == count
    assert {cluster.graph.nodes[d]["device"] for d in cluster.devices} == {device}
    if scale_up is None:
        return
    levels = {row["level"]: row["bw_Bps"] for row in injection_bandwidth(cluster,
                                                                         cluster.devices[0])}
    fabric = "torus" if name.startswith("tpu") else "scaleup"
    assert levels[fabric] == pytest.approx(scale_up)


@pytest.mark.parametrize("name", sorted(NEW_PRESETS))
def test_preset_scales_past_one_node_or_pod(name):
    count = NEW_PRESETS[name][1]
    assert len(build_cluster(name, devices=2 * count).devices) == 2 * count


def test_h800_node_has_400_of_900_of_the_h100_nvlink():
    def nvlink(topology):
        cluster = build_cluster(topology, devices=8)
        return injection_bandwidth(cluster, cluster.devices[0])[0]["bw_Bps"]
    assert nvlink("hgx-h800") / nvlink("dgx-h100") == pytest.approx(400 / 900)


def test_mi250x_node_has_8_gcds_and_the_package_link_beats_the_links_between_packages():
    cluster = build_cluster("mi250x-frontier", devices=8)
    gcds = cluster.devices
    assert len(gcds) == 8
    packages = [cluster.graph.nodes[g]["package"] for g in gcds]
    assert len(set(packages)) == 4 and all(packages.count(p) == 2 for p in packages)
    sibling = next(g for g in gcds[1:] if packages[gcds.index(g)] == packages[0])
    other = next(g for g in gcds if packages[gcds.index(g)] != packages[0])
    link = get_link("infinity-fabric-cdna2").bw_Bps
    inside, between = (flow_rates(cluster, [(gcds[0], g)])[0] for g in (sibling, other))
    assert inside == pytest.approx(4 * link)   # 4 xGMI links: 200 GB/s (ROCm MI250 docs)
    assert between <= 3 * link                 # at most the GCD's 3 off-package GPU links
    assert inside > between


@pytest.mark.parametrize("name, side, link, bisection", [
    ("tpu-v3-pod", 32, "ici-v3", 6.4 * TB),    # Google Cloud TPU v3 docs
    ("tpu-v6e-pod", 16, "ici-v6e", 3.2 * TB),  # Google Cloud TPU v6e docs
])
def test_tpu_pod_is_a_wrapped_2d_torus_with_googles_bisection(name, side, link, bisection):
    cluster = build_cluster(name)
    G = cluster.graph
    assert G.graph["torus_dims"] == (side, side)
    for chip in cluster.devices:
        ici = [(v, d) for _, v, d in G.out_edges(chip, data=True) if d["tech"] == link]
        assert len(ici) == 4 and all(d["count"] == 1 for _, d in ici)
    # wrap-around: the corner chip's neighbours include the far ends of both rings
    corner = {v for _, v, d in G.out_edges("c0.0", data=True) if d["tech"] == link}
    assert {f"c{side - 1}.0", f"c0.{side - 1}"} <= corner
    assert bisection_bandwidth(cluster) == pytest.approx(bisection)


# ------------------------------------------------------------------ a short training step

MODEL = {"layers": 16, "hidden": 4096, "heads": 32, "kv_heads": 8, "ffn_hidden": 14336,
         "vocab": 32000, "seq_len": 4096, "ffn": "swiglu"}


def step_row(topology, devices, global_batch, **parallelism):
    config = ExperimentConfig.model_validate({
        "name": "new-presets", "cluster": {"topology": topology, "devices": devices},
        "model": MODEL, "simulation": {"fidelity": "analytic"},
        "training": {"global_batch": global_batch, "micro_batch": 1, "precision": "bf16",
                     "parallelism": {"zero": 1, **parallelism}}})
    row = run_scenario(Scenario(0, "new-presets/0", config))
    assert row["status"] == "ok", row["error"]
    assert 0 < row["mfu"] <= 1  # no device runs faster than its peak
    return row["step_time_s"]


def sustained_bf16(device_name):
    """Peak x GEMM plateau x training efficiency: the catalog's sustained matmul rate."""
    device = get_device(device_name)
    family = compute_params(device)
    return device.flops_for("bf16") * family.max_efficiency("bf16") * family.training_efficiency


# new preset, reference preset, devices, global batch
AGAINST = [("hgx-h20", "dgx-h100", 8, 64), ("mi250x-frontier", "mi300x-node", 8, 64),
           ("mi325x-node", "mi300x-node", 8, 64), ("hgx-h800", "dgx-h100", 8, 64),
           ("gb300-nvl72", "gb200-nvl72", 144, 576), ("tpu-v3-pod", "tpu-v4-pod", 1024, 2048),
           ("tpu-v6e-pod", "tpu-v4-pod", 256, 512)]


@pytest.mark.parametrize("new, reference, devices, batch", AGAINST)
def test_step_time_is_bounded_by_the_sustained_flop_ratio(new, reference, devices, batch):
    # a compute-dominated data-parallel step: its time ratio is the devices' sustained-FLOP
    # ratio, moved at most 2x either way by memory-bound ops and the gradient all-reduce
    ratio = step_row(new, devices, batch) / step_row(reference, devices, batch)
    flop_ratio = (sustained_bf16(topology_presets()[reference].params["device"])
                  / sustained_bf16(topology_presets()[new].params["device"]))
    assert flop_ratio / 2 <= ratio <= 2 * flop_ratio


def test_same_compute_different_memory_or_links_orders_the_step_times():
    h100 = step_row("dgx-h100", 8, 16, tp=8)
    # H800: same die, NVLink 400/900: never faster, at most the NVLink ratio slower
    assert h100 <= step_row("hgx-h800", 8, 16, tp=8) <= h100 * 900 / 400
    # H20: compute 148/989.4 of H100's, faster HBM, same NVLink: at most the FLOP ratio slower
    flop_ratio = get_device("h100-sxm-80gb").flops_for("bf16") / get_device("h20").flops_for(
        "bf16")
    assert h100 < step_row("hgx-h20", 8, 16, tp=8) <= h100 * flop_ratio * (1 + 1e-9)
    # MI325X: MI300X compute with 6/5.3 the bandwidth: never slower, at most that much faster
    mi300 = step_row("mi300x-node", 8, 64)
    assert mi300 * 5.3 / 6 <= step_row("mi325x-node", 8, 64) <= mi300 * (1 + 1e-9)
    # GB300: GB200's BF16 rate and HBM bandwidth, 800G NICs instead of 400G: never slower
    assert step_row("gb300-nvl72", 144, 576) <= step_row("gb200-nvl72", 144, 576) * (1 + 1e-9)


def test_tpu_v6e_pod_peak_is_googles():
    cluster = build_cluster("tpu-v6e-pod")
    peak = sum(get_device(cluster.graph.nodes[d]["device"]).flops_for("bf16")
               for d in cluster.devices)
    assert len(cluster.devices) == 256 and peak == pytest.approx(234.9e15, rel=0.001)
