"""Power of a device's memory traffic: the memory technology's energy per bit times the bytes.

It sits below both the compute model (a power-limited device's clock depends on what its
memory draws, :func:`clustersim.hardware.compute.power_limited_clock`) and the energy model
(:mod:`clustersim.hardware.power`), so neither imports the other for it.

>>> from clustersim.hardware.catalog import get_device
>>> round(memory_power_at_peak_W(get_device("h100-sxm-80gb")))   # 3.35 TB/s x 8 x 3.2 pJ/bit
86
"""

from __future__ import annotations

from clustersim.hardware.catalog import device_presets, get_link

__all__ = ["joules_per_memory_byte", "memory_power_at_peak_W", "budgeted_memory_power_W"]


def joules_per_memory_byte(device, technology: str | None = None) -> float:
    """Energy to move one byte to or from the device's memory (its technology's J/bit x 8)."""
    return 8.0 * get_link(technology or device.memory.technology).energy_J_per_bit


def memory_power_at_peak_W(device) -> float:
    """Power of streaming the device's memory at its full bandwidth."""
    return device.memory.bw_Bps * joules_per_memory_byte(device)


def budgeted_memory_power_W(device) -> float:
    """Memory power the device's TDP was specified with: the catalog entry's when ``device``
    is that entry with only its memory changed (or its power limit), else the device's own."""
    base = device_presets().get(device.name)
    if base is not None and (base.tdp_W, base.idle_W, base.peak_flops) == (
            device.tdp_W, device.idle_W, device.peak_flops):
        return memory_power_at_peak_W(base)
    return memory_power_at_peak_W(device)
