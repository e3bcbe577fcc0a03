"""The hierarchical GPU-style cluster: die -> package -> node -> scale-up domain -> scale-out
fabric, in one graph.

One builder covers DGX A100/H100 (8 GPUs on NVSwitch planes per node, one NIC per GPU on a
rail-optimised InfiniBand fat-tree), GB200 NVL72 (a 72-GPU NVLink domain spanning 18 compute
trays), PCIe- or CXL-switched servers, MI300X-style full meshes, and chiplet packages whose
compute dies sit on a UCIe mesh. ``devices`` counts compute endpoints (ranks): GPUs, or dies of
a chiplet package. Optional host DRAM and CXL memory pools hang off each node. The scale-out
fabric (``scale_out.topology``) is a fat-tree (``planes`` > 1: several independent planes), a
rail-only fabric or a dragonfly.

>>> G = build_gpu_cluster(GpuClusterParams(), devices=16)
>>> len(G.graph["devices"]), G.graph["nodes"]
(16, 2)
"""

from __future__ import annotations

import math
from typing import Any, Literal

import networkx as nx
from pydantic import Field

from clustersim.config.quantities import (Bandwidth, Count, NonNegativePower, NonNegativeTime,
                                          Size)
from clustersim.config.validation import StrictModel
from clustersim.errors import InputError, InputErrors
from clustersim.hardware.catalog import get_device, get_link, override_device
from clustersim.topology.dragonfly import DragonflyParams, add_dragonfly
from clustersim.topology.fattree import add_fat_tree
from clustersim.topology.graph import new_graph, add_node, attach, add_link
from clustersim.topology.memory_tiers import add_cxl_pool, add_device_memory, add_host
from clustersim.topology.multiplane import add_multiplane_fat_tree
from clustersim.topology.rail_only import add_rail_only
from clustersim.topology.scaleup import add_direct_mesh, add_switch_domain
from clustersim.topology.torus import add_torus, mesh_path

__all__ = ["GpuClusterParams", "build_gpu_cluster", "resolve_device"]


class PackageParams(StrictModel):
    dies: Count = Field(1, description="compute dies per package (1 = monolithic)")
    grid: list[Count] | None = Field(None, description="die mesh shape, e.g. [2, 2]")
    d2d: str = Field("ucie-advanced", description="die-to-die link technology")
    d2d_links: Count = Field(1, description="modules between two adjacent dies")
    d2d_bandwidth: Bandwidth | None = Field(None, description="per-module override")


class ScaleUpParams(StrictModel):
    topology: Literal["switch", "mesh", "none"] = "switch"
    technology: str = "nvlink4"
    links_per_device: Count = 18
    switch: str = "nvswitch3"
    switches: Count = Field(4, description="switch planes per domain")
    domain_size: Count = Field(8, description="devices per scale-up domain")
    bandwidth: Bandwidth | None = Field(None, description="per-link override")
    latency: NonNegativeTime | None = Field(None, description="per-link latency override")


class ScaleOutParams(StrictModel):
    topology: Literal["fat-tree", "rail-only", "dragonfly"] = Field(
        "fat-tree", description="fat-tree (planes > 1: multi-plane), rail-only, dragonfly")
    technology: str = "ib-ndr"
    nics_per_node: Count = 8
    switch: str = "quantum2-ndr"
    radix: Count | None = None
    oversubscription: float = Field(1.0, ge=1)
    levels: Literal[1, 2, 3] | None = None
    rail_optimized: bool = True
    planes: Count = Field(1, description="independent fat-tree planes, one NIC port each")
    dragonfly: DragonflyParams = Field(default_factory=DragonflyParams)
    bandwidth: Bandwidth | None = Field(None, description="per-port override")
    latency: NonNegativeTime | None = Field(None, description="per-link latency override")


class HostParams(StrictModel):
    link: str = "pcie5"
    links_per_device: Count = 1
    memory: str = "ddr5"
    memory_channels: Count = 16
    memory_capacity: Size = 2 * 2**40
    power: NonNegativePower = Field(0.0, description="CPUs and DRAM of one node's host")


class MemoryPoolParams(StrictModel):
    technology: str = "cxl2"
    switch: str = "cxl-switch"
    expanders: Count = 4
    expander_capacity: Size = 512 * 2**30
    expander_links: Count = 1
    device_links: Count = 1
    per: Literal["node", "domain"] = "node"
    bandwidth: Bandwidth | None = Field(None, description="per-link override")


class GpuClusterParams(StrictModel):
    device: str = "h100-sxm-80gb"
    device_overrides: dict[str, Any] = Field(default_factory=dict)
    devices_per_node: Count = 8
    package: PackageParams = Field(default_factory=PackageParams)
    scale_up: ScaleUpParams = Field(default_factory=ScaleUpParams)
    scale_out: ScaleOutParams | None = Field(default_factory=ScaleOutParams)
    host: HostParams = Field(default_factory=HostParams)
    memory_pool: MemoryPoolParams | None = None


def resolve_device(name: str, overrides: dict[str, Any]):
    """The device preset with overrides; a new memory technology brings its own bandwidth
    (stacks x the technology's per-stack figure) unless a bandwidth is given too."""
    device = get_device(name)
    if not overrides:
        return device
    overrides = dict(overrides)
    if "memory.technology" in overrides and "memory.bandwidth" not in overrides:
        stacks = overrides.get("memory.stacks", device.memory.stacks)
        overrides["memory.bandwidth"] = int(stacks) * get_link(
            overrides["memory.technology"]).bw_Bps
    try:
        return override_device(device, overrides)
    except InputErrors as exc:  # name the override and quote its value (sweeps locate it)
        raise InputErrors(InputError(e.message + "".join(
            f" (override 'device_overrides.{k}': {v!r})" for k, v in overrides.items()
            if e.message.startswith(f"{k}:")), e.file, e.line, e.col)
            for e in exc.errors) from None


def build_gpu_cluster(p: GpuClusterParams, devices: int, name: str = "gpu-cluster"
                      ) -> nx.DiGraph:
    """Build the whole cluster graph for ``devices`` compute endpoints."""
    device = resolve_device(p.device, p.device_overrides)
    dies = p.package.dies
    per_node = min(p.devices_per_node, devices)
    if p.devices_per_node % dies:
        raise ValueError(f"devices_per_node ({p.devices_per_node}) must be a whole number of "
                         f"{dies}-die packages")
    if devices % per_node:
        raise ValueError(f"{devices} devices is not a whole number of {p.devices_per_node}-"
                         f"device nodes; use a multiple of {p.devices_per_node}")
    if per_node % dies:
        raise ValueError(f"{devices} devices is not a whole number of {dies}-die packages")
    n_nodes = devices // per_node
    domain = min(p.scale_up.domain_size, devices)
    if domain % per_node and per_node % domain:
        raise ValueError(f"scale_up.domain_size ({p.scale_up.domain_size}) and "
                         f"devices_per_node ({p.devices_per_node}) must nest")
    G = new_graph(name, device=device, nodes=n_nodes, devices_per_node=per_node)
    G.graph["device_specs"] = {device.name: device}

    # Packages and their dies (or monolithic accelerators), node by node.
    node_devices: list[list] = []
    gateway_of: dict[Any, tuple] = {}  # device -> up path to the die that owns off-package I/O
    for n in range(n_nodes):
        members = _add_node_devices(G, p, device, n, per_node, gateway_of)
        for dev in members:
            add_device_memory(G, dev, device)
        node_devices.append(members)
    all_devices = [d for members in node_devices for d in members]

    # Scale-up domains.
    su = p.scale_up
    if su.topology != "none":
        for i in range(0, devices, domain):
            members = all_devices[i:i + domain]
            fid = f"scaleup:{i // domain}"
            if su.topology == "switch":
                add_switch_domain(G, members, su.technology, su.links_per_device, su.switch,
                                  planes=su.switches, fabric_id=fid, prefix=f"d{i // domain}/",
                                  bw_Bps=su.bandwidth, latency_s=su.latency)
            else:
                links = max(1, su.links_per_device // max(1, len(members) - 1))
                add_direct_mesh(G, members, su.technology, links, fabric_id=fid,
                                bw_Bps=su.bandwidth, latency_s=su.latency)

    # Hosts (and their DRAM), CXL pools: off-package I/O goes through each package's gateway.
    def attach_through_gateways(fabric, members):
        for dev in members:
            path = gateway_of[dev]
            if len(path) > 1:
                attach(G, dev, fabric, entry=path[-1], up=path)

    for n, members in enumerate(node_devices):
        gateways = [d for d in members if len(gateway_of[d]) == 1]
        fabric = add_host(G, f"n{n}/host", gateways, p.host.link, p.host.memory,
                          p.host.memory_channels, p.host.memory_capacity,
                          link_count=p.host.links_per_device, power_W=p.host.power)
        attach_through_gateways(fabric, members)
    if p.memory_pool is not None:
        mp = p.memory_pool
        groups = node_devices if mp.per == "node" else [
            all_devices[i:i + domain] for i in range(0, devices, domain)]
        for g, members in enumerate(groups):
            gateways = [d for d in members if len(gateway_of[d]) == 1]
            fabric = add_cxl_pool(G, f"cxl{g}", gateways, mp.technology, mp.switch,
                                  mp.expanders, mp.expander_capacity, mp.expander_links,
                                  mp.device_links, mp.bandwidth)
            attach_through_gateways(fabric, members)

    if p.scale_out is not None and n_nodes > 1:
        _add_scale_out(G, p, node_devices, gateway_of, per_node)
    return G


def _add_node_devices(G: nx.DiGraph, p: GpuClusterParams, device, n: int, per_node: int,
                      gateway_of: dict[Any, tuple]) -> list:
    """The accelerators of node ``n`` (or its packages' dies on their UCIe mesh); records
    each device's path to its package gateway in ``gateway_of``."""
    dies = p.package.dies
    members = []
    for k in range(per_node // dies):
        if dies == 1:
            dev = f"n{n}/g{k}"
            add_node(G, dev, "accelerator", device=device.name, node=n)
            members.append(dev)
            gateway_of[dev] = (dev,)
            continue
        grid = tuple(p.package.grid or _square_grid(dies))
        if math.prod(grid) != dies:
            raise ValueError(f"package.grid {list(grid)} does not hold {dies} dies")
        pkg = f"n{n}/p{k}"
        fabric = add_torus(G, grid, p.package.d2d, device=device.name, fabric_id=pkg,
                           level="package", prefix=f"{pkg}/", kind="die", wrap=False,
                           count=p.package.d2d_links, bw_Bps=p.package.d2d_bandwidth,
                           node_attrs={"node": n, "package": pkg})
        package_dies = list(fabric.coords)
        for die in package_dies:
            gateway_of[die] = mesh_path(fabric, die, package_dies[0])
        members.extend(package_dies)
    return members


def _add_scale_out(G: nx.DiGraph, p: GpuClusterParams, node_devices: list[list],
                   gateway_of: dict[Any, tuple], per_node: int) -> None:
    """NIC i of a node serves an equal share of its devices (through its gateway); the NICs
    join the scale-out fabric ``scale_out.topology`` names."""
    so = p.scale_out
    nics, up_paths, rail = [], {}, {}
    per_nic = max(1, per_node // so.nics_per_node)
    for n, members in enumerate(node_devices):
        for i in range(min(so.nics_per_node, per_node)):
            nic = f"n{n}/nic{i}"
            add_node(G, nic, "nic", node=n, label=f"{so.technology} NIC")
            served = members[i * per_nic:(i + 1) * per_nic]
            for gw in sorted({gateway_of[d][-1] for d in served}):
                add_link(G, gw, nic, p.host.link, count=p.host.links_per_device)
            nics.append(nic)
            rail[nic] = i
            up_paths[nic] = [gateway_of[d] + (nic,) for d in served]
    first = {nic: tuple(paths[0]) for nic, paths in up_paths.items()}
    common = dict(bw_Bps=so.bandwidth, latency_s=so.latency, prefix="net/")
    if so.topology == "rail-only":
        add_rail_only(G, nics, rail.get, so.technology, so.switch, radix=so.radix,
                      up_paths=up_paths, **common)
        return
    if so.topology == "dragonfly":
        fabric = add_dragonfly(G, nics, so.dragonfly, so.technology, so.switch,
                               up_paths=first, **common)
    elif so.planes > 1:
        fabric = add_multiplane_fat_tree(G, nics, so.planes, so.technology, so.switch,
                                         radix=so.radix, oversubscription=so.oversubscription,
                                         levels=so.levels, up_paths=first,
                                         rail_of=rail.get if so.rail_optimized else None,
                                         **common)
    else:
        fabric = add_fat_tree(G, nics, so.technology, so.switch, radix=so.radix,
                              oversubscription=so.oversubscription, levels=so.levels,
                              rail_of=rail.get if so.rail_optimized else None,
                              up_paths=first, **common)
    # The fabric attached one path per NIC; attach the others, in the same order.
    for nic, paths in up_paths.items():
        for path in paths[1:]:
            attach(G, path[0], fabric, entry=nic, up=tuple(path))


def _square_grid(dies: int) -> tuple[int, int]:
    """The most square 2-D grid holding ``dies`` (4 -> 2x2, 8 -> 2x4, 3 -> 1x3)."""
    a = int(math.isqrt(dies))
    while dies % a:
        a -= 1
    return (a, dies // a)
