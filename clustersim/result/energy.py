"""Energy of one training step, from what the step did.

- compute: every FLOP at its device's J/FLOP (``hardware.power``);
- memory: every byte the kernels move to and from device memory at the memory technology's
  J/bit (HBM, LPDDR, GDDR: the device's memory edges);
- network: every byte over every link at that link's J/bit (NVLink, UCIe, CXL, PCIe,
  InfiniBand, ICI, host DRAM: whatever the flows crossed), summed per technology;
- static: idle power of every device, and the power of every switch, optical switch and host
  CPU, over the step time;
- facility overhead: ``(PUE - 1)`` times all of the above (cooling, power delivery), so the
  parts add up to the total (``simulation.pue``, default 1).

>>> import numpy as np
>>> from clustersim.network import build_cluster
>>> from clustersim.result.outcome import StepOutcome
>>> c = build_cluster("dgx-h100", devices=8)
>>> idle = StepOutcome(1.0, 0.0, 0.0, 0.0, 1.0, flops=0.0, mem_bytes=0.0,
...                    link_bytes=np.zeros(len(c.links)))
>>> e = step_energy(c, idle, "bf16")
>>> e["energy_static_j"] == 8 * c.device.idle_W + e["energy_switches_j"] + e["energy_hosts_j"]
True
"""

from __future__ import annotations

import numpy as np

from clustersim.hardware import get_switch
from clustersim.hardware.power import joules_per_flop, joules_per_memory_byte
from clustersim.result.outcome import StepOutcome

__all__ = ["step_energy", "static_power_W"]


def static_power_W(cluster) -> dict[str, float]:
    """Power drawn whatever the step does: idle devices, switches, hosts (computed once per
    cluster: a sweep prices thousands of scenarios on the same one)."""
    return cluster.memo("static_power_W", lambda: _static_power_W(cluster))


def _static_power_W(cluster) -> dict[str, float]:
    G = cluster.graph
    switches = hosts = 0.0
    for _, data in G.nodes(data=True):
        if data["kind"] in ("switch", "optical_switch"):
            switches += get_switch(data.get("model", "ocs")).power_W
        elif data["kind"] == "host":
            hosts += data.get("power_W", 0.0)
    return {"devices": len(cluster.devices) * cluster.device.idle_W, "switches": switches,
            "hosts": hosts}


def step_energy(cluster, activity: StepOutcome, dtype: str, pue: float = 1.0
                ) -> dict[str, float]:
    """Joules of one step by part and by link technology, and the total (x PUE), from what
    the step did on every device (its time, FLOPs, memory bytes and bytes per link)."""
    device = cluster.device
    compute = activity.flops * joules_per_flop(device, dtype)
    memory = activity.mem_bytes * joules_per_memory_byte(device,
                                                        cluster.graph.nodes[cluster.memory_node(
                                                            cluster.devices[0])]["technology"])
    per_link = activity.link_bytes * 8.0 * cluster.links.energy_J_per_bit
    by_tech = np.bincount(cluster.links.tech_id, weights=per_link,
                          minlength=len(cluster.links.techs))
    network = float(per_link.sum())
    static = static_power_W(cluster)
    t = activity.step_time_s
    out = {"energy_compute_j": compute, "energy_memory_j": memory,
           "energy_network_j": network,
           "energy_devices_idle_j": static["devices"] * t,
           "energy_switches_j": static["switches"] * t,
           "energy_hosts_j": static["hosts"] * t}
    out["energy_static_j"] = (out["energy_devices_idle_j"] + out["energy_switches_j"]
                              + out["energy_hosts_j"])
    for tech, joules in zip(cluster.links.techs, by_tech):
        if joules > 0:
            out[f"energy_link_{tech}_j"] = float(joules)
    subtotal = compute + memory + network + out["energy_static_j"]
    out["energy_facility_overhead_j"] = subtotal * (pue - 1.0)  # cooling, power delivery
    out["energy_j"] = subtotal * pue
    out["avg_power_w"] = out["energy_j"] / t if t > 0 else 0.0
    return out
