"""Memory in the graph: each device's HBM/LPDDR/GDDR stacks, the host CPU with its DRAM, and
CXL memory pools (a CXL switch with memory expanders).

Memory is reached over edges like any other link, so an op that streams memory is timed by
those edges' bandwidth and pays their energy per bit, and offload traffic to host or CXL memory
crosses PCIe/CXL links where it contends with everything else.

>>> from clustersim.topology.graph import new_graph, add_node
>>> from clustersim.hardware import get_device
>>> G = new_graph("m")
>>> add_node(G, "gpu0", "accelerator", device="h100-sxm-80gb")
>>> mem = add_device_memory(G, "gpu0", get_device("h100-sxm-80gb"))
>>> G.edges["gpu0", mem]["bw_Bps"] == get_device("h100-sxm-80gb").memory.bw_Bps
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx

from clustersim.hardware.catalog import get_switch
from clustersim.topology.graph import SwitchFabric, add_fabric, add_link, add_node, attach

__all__ = ["add_device_memory", "add_host", "add_cxl_pool"]


def add_device_memory(G: nx.DiGraph, device_node: Any, device) -> str:
    """Attach the device's memory stacks as one ``memory`` node joined by ``stacks`` links.

    The per-stack bandwidth is the device's total over its stacks (devices often run their
    stacks below the technology's peak pin rate, e.g. H100 SXM HBM3 at 3.35 TB/s over 5).
    """
    mem = device.memory
    node = f"{device_node}/mem"
    add_node(G, node, "memory", technology=mem.technology, stacks=mem.stacks,
             capacity_B=mem.capacity_B, label=f"{mem.stacks}x {mem.technology}")
    add_link(G, device_node, node, mem.technology, count=mem.stacks,
             bw_Bps=mem.per_stack_bw_Bps)
    G.nodes[device_node]["memory"] = node
    return node


def add_host(G: nx.DiGraph, name: str, devices: Sequence[Any], link: str,
             memory: str, memory_channels: int, memory_capacity_B: float,
             link_count: int = 1, fabric_id: str | None = None,
             power_W: float = 0.0) -> SwitchFabric:
    """A host CPU joined to ``devices`` by ``link`` (PCIe, NVLink-C2C) and to its DRAM.

    Devices and host memory are attached to a ``host`` fabric through the CPU, the path
    offloaded optimizer states take (ZeRO-Offload).
    """
    add_node(G, name, "host", label="host CPU", power_W=power_W)
    mem = f"{name}/mem"
    add_node(G, mem, "memory", technology=memory, stacks=memory_channels,
             capacity_B=memory_capacity_B, label=f"{memory_channels}x {memory} channels")
    add_link(G, name, mem, memory, count=memory_channels)
    for d in devices:
        add_link(G, d, name, link, count=link_count)
    fabric = add_fabric(G, SwitchFabric(fabric_id or f"host:{name}", "host", planes=(name,)))
    for node in (*devices, mem):
        attach(G, node, fabric)
    return fabric


def add_cxl_pool(G: nx.DiGraph, name: str, devices: Sequence[Any], link: str, switch: str,
                 expanders: int, expander_capacity_B: float, expander_links: int = 1,
                 device_links: int = 1, link_bw_Bps: float | None = None) -> SwitchFabric:
    """A CXL switch joining ``devices`` to ``expanders`` memory expanders (a memory pool)."""
    spec = get_switch(switch)
    sw = f"{name}/sw"
    add_node(G, sw, "switch", tier="cxl", model=switch, label=spec.name)
    for d in devices:
        add_link(G, d, sw, link, count=device_links, bw_Bps=link_bw_Bps,
                 switch_latency_s=spec.latency_s)
    targets = []
    for i in range(expanders):
        exp = f"{name}/mem{i}"
        add_node(G, exp, "cxl_memory", capacity_B=expander_capacity_B,
                 label="CXL memory expander")
        # expander -> switch enters the switch too: reads from the pool pay its latency
        add_link(G, exp, sw, link, count=expander_links, bw_Bps=link_bw_Bps,
                 switch_latency_s=spec.latency_s)
        targets.append(exp)
    fabric = add_fabric(G, SwitchFabric(f"cxl:{name}", "cxl", planes=(sw,)))
    for node in (*devices, *targets):
        attach(G, node, fabric)
    return fabric
