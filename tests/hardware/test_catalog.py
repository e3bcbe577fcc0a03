"""The hardware catalogs against first principles: line rates, link counts, stack counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clustersim.errors import InputError
from clustersim.hardware import (DeviceSpec, LinkTech, SwitchSpec, device_presets, get_device,
                                 get_link, get_switch, host_link_bw_Bps, link_presets,
                                 load_device_catalog, load_link_catalog, override_device,
                                 scale_up_bw_Bps, switch_presets)
from clustersim.hardware.specs import _field_keys

GB = 1e9
REQUIRED_DEVICES = ["a100-sxm-80gb", "h100-sxm-80gb", "h200", "b200", "tpu-v4", "tpu-v5p",
                    "mi300x", "v100-sxm2-32gb", "a100-sxm-40gb", "gb200", "tpu-v5e",
                    "chiplet-die"]
REQUIRED_LINKS = ["nvlink2", "nvlink3", "nvlink4", "nvlink5", "nvlink-c2c", "pcie4", "pcie5",
                  "pcie6", "cxl2", "cxl3", "ucie-standard", "ucie-advanced", "ucie-3d", "hbm2",
                  "hbm2e", "hbm3", "hbm3e", "hbm4", "lpddr5x", "ddr5", "gddr6", "gddr7",
                  "ib-hdr", "ib-ndr", "ib-xdr", "eth-400g", "eth-800g", "ici-v4", "ici-v5p",
                  "ici-v5e", "infinity-fabric", "dcn"]
REQUIRED_SWITCHES = ["nvswitch2", "nvswitch3", "nvlink-switch5", "quantum-hdr", "quantum2-ndr",
                     "quantum-x800", "eth-51t", "ocs", "cxl-switch", "pcie-switch"]


def all_entries():
    return [*device_presets().values(), *link_presets().values(), *switch_presets().values()]


@pytest.mark.parametrize("names, presets", [(REQUIRED_DEVICES, device_presets),
                                            (REQUIRED_LINKS, link_presets),
                                            (REQUIRED_SWITCHES, switch_presets)])
def test_required_presets_exist(names, presets):
    missing = [n for n in names if n not in presets()]
    assert not missing


def test_every_entry_names_a_source_and_only_real_fields_as_estimated():
    for entry in all_entries():
        assert entry.source.strip(), entry.name
        known = _field_keys(type(entry))
        assert set(entry.estimated) <= known, (entry.name, entry.estimated)
        if entry.estimated:
            assert entry.notes.strip(), f"{entry.name}: estimates need a derivation in notes"


def test_estimated_accepts_nested_and_rejects_unknown_fields():
    assert {"memory.bandwidth", "memory.bw_Bps", "tdp", "tdp_W"} <= _field_keys(DeviceSpec)
    with pytest.raises(ValueError, match="bandwith"):
        LinkTech(name="x", description="x", category="host", bandwidth="1 GB/s", unit="port",
                 latency="1 ns", energy_per_bit="1 pJ/bit", source="s", estimated=["bandwith"])


def test_scale_up_bandwidth_from_link_count_and_line_rate():
    # NVLink4: 2 lanes x 100 Gb/s per link per direction; H100 has 18 links.
    assert get_link("nvlink4").bw_Bps == pytest.approx(2 * 100e9 / 8)
    assert scale_up_bw_Bps(get_device("h100-sxm-80gb")) == pytest.approx(450 * GB)
    # NVLink3: 4 lanes x 50 Gb/s; A100 has 12 links -> 600 GB/s bidirectional.
    assert get_link("nvlink3").bw_Bps == pytest.approx(4 * 50e9 / 8)
    assert scale_up_bw_Bps(get_device("a100-sxm-80gb")) == pytest.approx(300 * GB)
    # NVLink5 doubles the lane rate: 1.8 TB/s bidirectional per Blackwell GPU.
    assert 2 * scale_up_bw_Bps(get_device("b200")) == pytest.approx(1800 * GB)
    # MI300X: 7 xGMI links of 128 GB/s bidirectional = 896 GB/s aggregate.
    assert 2 * scale_up_bw_Bps(get_device("mi300x")) == pytest.approx(896 * GB)
    # TPU v4: 6 ICI links of 45 GB/s one way (scaling book).
    assert scale_up_bw_Bps(get_device("tpu-v4")) == pytest.approx(6 * 45 * GB)


def test_network_ports_are_line_rate_over_eight():
    for name, gbit in [("ib-hdr", 200), ("ib-ndr", 400), ("ib-xdr", 800), ("eth-400g", 400),
                       ("eth-800g", 800)]:
        assert get_link(name).bw_Bps == pytest.approx(gbit * 1e9 / 8)
    assert get_link("ib-ndr").bw_Bps == pytest.approx(50 * GB)


def test_pcie_x16_port_from_transfer_rate_and_encoding():
    for name, gt_s in [("pcie3", 8), ("pcie4", 16), ("pcie5", 32)]:
        expected = 16 * gt_s * 1e9 * 128 / 130 / 8
        assert get_link(name).bw_Bps == pytest.approx(expected, rel=0.01)
        assert get_link(name).lanes == 16
    assert get_link("cxl2").bw_Bps == get_link("pcie5").bw_Bps  # same PHY
    # A host link of 8 lanes gets half an x16 port.
    half = get_device("h100-sxm-80gb").with_overrides({"host_link.lanes": 8})
    assert host_link_bw_Bps(half) == pytest.approx(get_link("pcie5").bw_Bps / 2)


def test_ucie_modules_are_lanes_times_32_gts():
    assert get_link("ucie-standard").bw_Bps == pytest.approx(16 * 32e9 / 8)
    assert get_link("ucie-advanced").bw_Bps == pytest.approx(64 * 32e9 / 8)


def test_hbm_stack_bandwidth_is_bus_width_times_pin_rate():
    for name, bits, gbps in [("hbm2", 1024, 2.4), ("hbm2e", 1024, 3.6), ("hbm3", 1024, 6.4),
                             ("hbm3e", 1024, 9.6), ("hbm4", 2048, 8.0)]:
        assert get_link(name).bw_Bps == pytest.approx(bits * gbps * 1e9 / 8)


@pytest.mark.parametrize("name", REQUIRED_DEVICES)
def test_memory_fits_its_technology(name):
    device = get_device(name)
    tech = get_link(device.memory.technology)
    assert tech.category == "memory" and tech.duplex == "half"
    per_stack = device.memory.bw_Bps / device.memory.stacks
    assert per_stack * device.memory.stacks == pytest.approx(device.memory.bw_Bps)
    # A device runs its stacks at or below the technology's top pin rate (published totals
    # are rounded, hence 0.1%), and above half of it: JEDEC generations overlap by less
    # than 2x, so a lower ratio would mean the wrong technology or stack count.
    assert 0.5 * tech.bw_Bps <= per_stack <= tech.bw_Bps * 1.001, (name, per_stack, tech.name)


def test_published_memory_figures():
    h100 = get_device("h100-sxm-80gb").memory
    assert (h100.technology, h100.stacks, h100.bw_Bps) == ("hbm3", 5, 3.35e12)
    a100 = get_device("a100-sxm-80gb").memory
    assert (a100.stacks, a100.bw_Bps, a100.capacity_B) == (5, 2039 * GB, 80 * 2**30)
    assert get_device("mi300x").memory.bw_Bps == 5.3e12
    assert get_device("tpu-v5p").memory.bw_Bps == 2765 * GB


def test_device_links_exist_with_the_right_category():
    links = link_presets()
    for device in device_presets().values():
        assert links[device.memory.technology].category == "memory"
        if device.scale_up:
            assert links[device.scale_up.technology].category != "memory"
        if device.nic:
            assert links[device.nic].category == "scale-out"
    for switch in switch_presets().values():
        assert switch.port_technology in links


def test_chiplet_die_is_a_quarter_of_b200_class_totals():
    die, b200 = get_device("chiplet-die"), get_device("b200")
    assert 4 * die.flops_for("bf16") == pytest.approx(b200.flops_for("bf16"))
    assert 4 * die.memory.bw_Bps == pytest.approx(b200.memory.bw_Bps)
    assert 4 * die.memory.stacks == b200.memory.stacks
    assert 4 * die.tdp_W == pytest.approx(b200.tdp_W)
    # Its UCIe edge carries at least its own HBM bandwidth, so neighbours can stream it.
    assert scale_up_bw_Bps(die) >= die.memory.bw_Bps
    assert "peak_flops" in die.estimated


def test_energy_per_bit_ordered_as_physics_says():
    e = {name: link.energy_J_per_bit for name, link in link_presets().items()}
    # Shorter, denser wires cost less per bit (UCIe consortium figures; PCIe estimate).
    assert e["ucie-3d"] < e["ucie-advanced"] < e["ucie-standard"] < e["pcie5"]
    # On-package C2C beats board-level SerDes (NVIDIA's published 1.3 pJ/bit).
    assert e["nvlink-c2c"] < e["nvlink4"]
    # Stacked DRAM on an interposer beats PCB-routed graphics DRAM (O'Connor; Micron).
    assert e["hbm2"] < e["gddr6"] and e["gddr7"] < e["gddr6"]
    # Optical scale-out links, transceivers included, cost far more than electrical ones.
    assert min(e["ib-ndr"], e["eth-800g"]) > e["nvlink4"]


def test_memory_technologies_are_half_duplex_and_others_full():
    for link in link_presets().values():
        assert (link.duplex == "half") == (link.category == "memory"), link.name


def test_idle_power_below_tdp():
    for device in device_presets().values():
        assert 0 < device.idle_W < device.tdp_W


def test_flops_for_names_the_available_dtypes():
    v100 = get_device("v100-sxm2-32gb")
    assert v100.flops_for("fp16") == 125e12
    with pytest.raises(InputError, match="available: fp64, fp32, fp16"):
        v100.flops_for("bf16")


def test_unknown_names_suggest_the_closest():
    with pytest.raises(InputError,
                       match="unknown device preset 'h100-sxm'; did you mean 'h100-sxm-80gb'"):
        get_device("h100-sxm")
    with pytest.raises(InputError, match="'nvlink4'"):
        get_link("nvlnk4")
    with pytest.raises(InputError, match="'quantum2-ndr'"):
        get_switch("quantum2")


def test_with_overrides_changes_exactly_the_named_fields():
    h100 = get_device("h100-sxm-80gb")
    new = h100.with_overrides({"memory.bandwidth": "4 TB/s", "peak_flops.bf16": "1 PFLOP/s"})
    assert new.memory.bw_Bps == 4e12 and new.flops_for("bf16") == 1e15
    before, after = h100.model_dump(), new.model_dump()
    before["memory"].pop("bw_Bps"), after["memory"].pop("bw_Bps")
    before["peak_flops"].pop("bf16"), after["peak_flops"].pop("bf16")
    assert before == after
    assert h100.memory.bw_Bps == 3.35e12  # the preset itself is untouched
    assert h100.with_overrides({"tdp_W": 600}).tdp_W == 600  # Python names work too


@pytest.mark.parametrize("overrides, message", [
    ({"memory.bandwith": "1 TB/s"}, "did you mean 'bandwidth'"),
    ({"tpd": "1 W"}, "did you mean 'tdp'"),
    ({"peak_flops.bf32": "1 PFLOP/s"}, "allowed in peak_flops: fp64"),
    ({"memory.technology": "hbm9"}, "memory link technology 'hbm9'"),
    ({"memory.technology": "nvlink4"}, "memory link technology 'nvlink4'"),
    ({"memory.bandwidth": "fast"}, "memory.bandwidth"),
    ({"peak_flops.bf16.x": 1}, "'bf16' is a value"),
    ({"tdp.x": 1}, "'tdp' is a value"),
    ({"tdp": "10 W"}, "idle_power"),
])
def test_override_device_rejects_bad_input(overrides, message):
    with pytest.raises(InputError, match=message):
        override_device(get_device("h100-sxm-80gb"), overrides)


def test_a_spec_is_a_value_the_catalog_checks_links_of():
    # with_overrides checks the record's own fields; the links it names are the catalog's
    h100 = get_device("h100-sxm-80gb")
    assert h100.with_overrides({"memory.technology": "hbm9"}).memory.technology == "hbm9"
    with pytest.raises(InputError, match="memory link technology 'hbm9'"):
        override_device(h100, {"memory.technology": "hbm9"})


def test_malformed_catalog_entry_is_located(tmp_path):
    path = tmp_path / "links.yaml"
    path.write_text("good:\n  description: d\n  category: host\n  bandwidth: 1 GB/s\n"
                    "  unit: port\n  latency: 1 ns\n  energy_per_bit: 1 pJ/bit\n  source: s\n"
                    "bad:\n  description: d\n  category: hoist\n  bandwidth: 1 GB/s\n"
                    "  unit: port\n  latency: 1 ns\n  energy_per_bit: 1 pJ/bit\n  source: s\n")
    with pytest.raises(InputError) as exc:
        load_link_catalog(path)
    assert f"{path}:11:3:" in str(exc.value) and "category" in str(exc.value)


def test_device_naming_a_missing_link_is_located(tmp_path):
    path = tmp_path / "d.yaml"
    entry = get_device("tpu-v4").model_dump(by_alias=True, exclude={"name"})
    entry["memory"]["technology"] = "hbm5"
    path.write_text(yaml.safe_dump({"tpu-x": entry}, sort_keys=False))
    with pytest.raises(InputError, match=r"d\.yaml:\d+:\d+: memory\.technology.*'hbm5'"):
        load_device_catalog(path)


def test_presets_are_cached_copies():
    assert device_presets() is not device_presets()
    assert device_presets()["h200"] is get_device("h200")  # one parse per process
    assert isinstance(get_switch("ocs"), SwitchSpec) and get_switch("ocs").ports == 136


def test_blank_source_is_rejected():
    with pytest.raises(ValueError, match="source must name"):
        SwitchSpec(name="s", description="d", ports=2, port_technology="pcie5", latency="1 ns",
                   power="1 W", source="  ")


def test_sources_document_lists_every_entry():
    doc = (Path(__file__).parents[2] / "docs" / "hardware-sources.md").read_text()
    missing = [e.name for e in all_entries() if f"`{e.name}`" not in doc]
    assert not missing, "add these to docs/hardware-sources.md"
