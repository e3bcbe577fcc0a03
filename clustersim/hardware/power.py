"""Energy of computing and of moving bytes to memory, derived from datasheet power.

Datasheets give a device's TDP and idle power, not energy per FLOP. We split the dynamic power
at full load into memory and compute: streaming memory at its full bandwidth costs
``bandwidth x 8 x energy_per_bit`` of the memory technology (e.g. HBM3 at 3.35 TB/s and
3.2 pJ/bit: 86 W), and the rest of ``TDP - idle`` is what the math units draw when they run as
fast as they can. That is not the datasheet peak: a GPU reaches its power limit while running
large GEMMs at their sustained rate (H100: ~80% of peak in cuBLAS, less inside a training step,
where clocks sit at the power limit), so

    energy per FLOP = (TDP - idle - memory power at full bandwidth)
                      / (peak FLOP/s (dtype) x GEMM plateau x training efficiency)

with the plateau and training efficiency of the device's compute family
(``hardware/data/compute.yaml``). H100 SXM, BF16: (700 - 70 - 86) W / (989 TFLOP/s x 0.80 x
0.81) = 0.85 pJ/FLOP, in line with the 0.3-1 pJ per 16-bit tensor FLOP reported for 4-7 nm
accelerators (Horowitz ISSCC 2014 scaled by Dally et al., "Evolution of the GPU", Hot Chips
2021). A device then draws ``idle + FLOP/s x J/FLOP + bytes/s x 8 x J/bit``, which reaches its
TDP when its math units run at their sustained rate and its memory streams flat out.

The energy per FLOP belongs to the compute die: a catalog device whose memory alone is swapped
(``device_overrides: {memory.technology: lpddr5x}``, same TDP, idle power and peak FLOP/s)
keeps the catalog's J/FLOP, so only memory energy and memory-bound time change. A device whose
TDP, idle power or peak FLOP/s is overridden too is a new design and is budgeted with its own
memory.

>>> from clustersim.hardware import get_device
>>> h100 = get_device("h100-sxm-80gb")
>>> round(joules_per_flop(h100, "bf16") * 1e12, 2)
0.85
>>> lpddr = h100.with_overrides({"memory.technology": "lpddr5x", "memory.stacks": 16,
...                              "memory.bandwidth": "1092 GB/s"})
>>> joules_per_flop(lpddr, "bf16") == joules_per_flop(h100, "bf16")
True
"""

from __future__ import annotations


from clustersim.errors import InputError
from clustersim.hardware.catalog import device_presets
from clustersim.hardware.compute import calibrated_cache, compute_params, power_limited_clock
from clustersim.hardware.memory_power import (budgeted_memory_power_W, joules_per_memory_byte,
                                              memory_power_at_peak_W)

__all__ = ["memory_power_at_peak_W", "joules_per_flop", "joules_per_memory_byte"]


@calibrated_cache(maxsize=256)
def joules_per_flop(device, dtype: str) -> float:
    """Dynamic energy of one FLOP of ``dtype`` at the device's sustained rate (see the module
    docstring for the derivation).

    A spec whose memory alone would draw all of ``TDP - idle`` leaves nothing for the math
    units: that is an InputError (the energy of its FLOPs would silently be zero). A device on
    the same silicon as another with its math units capped (``same_die_as``: H20 is a GH100 at
    148 of 989 TFLOP/s) spends that device's energy per FLOP (the same transistors switch),
    or less where its own rating would be exceeded. Under a ``power_limit`` the FLOP costs
    ``clock^2`` of that (:func:`~clustersim.hardware.compute.power_limited_clock`), so a
    sustained GEMM draws exactly the limit.
    """
    memory_W = budgeted_memory_power_W(device)
    budget = device.tdp_W - device.idle_W - memory_W
    if budget <= 0:
        raise InputError(
            f"device {device.name!r}: its memory at full bandwidth draws {memory_W:.0f} W, "
            f"at least tdp - idle_power = {device.tdp_W - device.idle_W:.0f} W, leaving no "
            f"power for its math units; raise tdp or lower memory.bandwidth")
    family = compute_params(device)
    sustained = family.max_efficiency(dtype) * family.training_efficiency
    own = budget / (device.flops_for(dtype) * sustained)
    if device.same_die_as:
        own = min(own, joules_per_flop(device_presets()[device.same_die_as], dtype))
    # under a power limit the die runs at a lower clock and supply voltage: CV^2 per
    # operation, with V scaling as the clock (hardware.compute.power_limited_clock)
    return own * power_limited_clock(device) ** 2
