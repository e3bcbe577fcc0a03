"""Energy of computing and of moving bytes to memory, derived from datasheet power.

Datasheets give a device's TDP and idle power, not energy per FLOP. We split the dynamic power
at full load into memory and compute: streaming memory at its full bandwidth costs
``bandwidth x 8 x energy_per_bit`` of the memory technology (e.g. HBM3 at 3.35 TB/s and
3.2 pJ/bit: 86 W), and the rest of ``TDP - idle`` is what the math units draw at their peak
rate. So

    energy per FLOP = (TDP - idle - memory power at full bandwidth) / peak FLOP/s (dtype)

(H100 SXM, BF16: (700 - 70 - 86) W / 989 TFLOP/s = 0.55 pJ/FLOP, in line with the
0.3-1 pJ per 16-bit tensor FLOP reported for 4-7 nm accelerators, e.g. Horowitz ISSCC 2014
scaled by Dally et al., "Evolution of the GPU", Hot Chips 2021). A device then draws
``idle + FLOP/s x J/FLOP + bytes/s x 8 x J/bit``, which reaches its TDP only when both its math
units and its memory run flat out.

>>> from clustersim.hardware import get_device
>>> round(joules_per_flop(get_device("h100-sxm-80gb"), "bf16") * 1e12, 2)
0.55
"""

from __future__ import annotations

import functools

__all__ = ["memory_power_at_peak_W", "joules_per_flop", "joules_per_memory_byte"]


def joules_per_memory_byte(device, technology: str | None = None) -> float:
    """Energy to move one byte to or from the device's memory (its technology's J/bit x 8)."""
    from clustersim.hardware import get_link

    return 8.0 * get_link(technology or device.memory.technology).energy_J_per_bit


def memory_power_at_peak_W(device) -> float:
    """Power of streaming the device's memory at its full bandwidth."""
    return device.memory.bw_Bps * joules_per_memory_byte(device)


@functools.lru_cache(maxsize=256)
def joules_per_flop(device, dtype: str) -> float:
    """Dynamic energy of one FLOP of ``dtype`` (see the module docstring for the derivation).

    Never negative: if a spec's memory power alone exceeded its dynamic budget, the compute
    share is taken as zero rather than inventing energy.
    """
    budget = device.tdp_W - device.idle_W - memory_power_at_peak_W(device)
    return max(0.0, budget) / device.flops_for(dtype)
