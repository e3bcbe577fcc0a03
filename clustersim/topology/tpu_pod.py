"""TPU-style pods: chips on a 3-D ICI torus of 4x4x4 cubes joined by optical circuit switches,
hosts of four chips on PCIe, and several pods joined by the data-centre network (DCN).

A request for ``devices`` chips builds the most compact slice of whole cubes when it fits in
one pod (PaLM's 3072-chip pods are 12x16x16); beyond one pod it builds equal pods and joins
their hosts' NICs with a fat-tree.

>>> G = build_tpu_pod(TpuPodParams(), devices=128)
>>> G.graph["torus_dims"], len(G.graph["devices"])
((4, 4, 8), 128)
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
from pydantic import Field

from clustersim.config.quantities import Bandwidth, Count, NonNegativeTime, Size
from clustersim.config.validation import StrictModel
from clustersim.topology.fattree import add_fat_tree
from clustersim.topology.gpu_cluster import HostParams, resolve_device
from clustersim.topology.graph import add_link, add_node, attach, new_graph
from clustersim.topology.memory_tiers import add_device_memory, add_host
from clustersim.topology.torus import add_torus, slice_shape

__all__ = ["TpuPodParams", "build_tpu_pod"]


class DcnParams(StrictModel):
    technology: str = "dcn"
    nics_per_host: Count = 1
    switch: str = "eth-51t"
    radix: Count | None = None
    oversubscription: float = Field(1.0, ge=1)
    bandwidth: Bandwidth | None = Field(None, description="per-NIC override")


class TpuHostParams(HostParams):
    """A TPU host: the GPU-cluster host with its chip count and TPU v4 defaults."""

    chips: Count = Field(4, description="chips per host")
    link: str = "pcie4"
    memory_channels: Count = 8
    memory_capacity: Size = 512 * 2**30


class TpuPodParams(StrictModel):
    device: str = "tpu-v4"
    device_overrides: dict[str, Any] = Field(default_factory=dict)
    ici: str = "ici-v4"
    ici_links: Count = Field(1, description="links between torus neighbours")
    ici_bandwidth: Bandwidth | None = Field(None, description="per-link override")
    cube: list[Count] = Field(default_factory=lambda: [4, 4, 4])
    optical: bool = Field(True, description="join cubes through optical circuit switches")
    ocs_latency: NonNegativeTime = 0.0
    pod: list[Count] = Field(default_factory=lambda: [16, 16, 16],
                                   description="largest torus of one pod")
    shape: list[Count] | None = Field(None, description="explicit slice shape")
    host: TpuHostParams = Field(default_factory=TpuHostParams)
    dcn: DcnParams = Field(default_factory=DcnParams)


def _pod_shapes(p: TpuPodParams, devices: int) -> list[tuple[int, ...]]:
    """One slice when ``devices`` fits a pod, else the fewest equal pods that hold them
    (6144 chips: two 3072-chip pods of 12x16x16, PaLM's layout)."""
    pod_chips = math.prod(p.pod)
    if p.shape is not None:
        shape = tuple(p.shape)
        if devices % math.prod(shape):
            raise ValueError(f"shape {list(shape)} ({math.prod(shape)} chips) does not divide "
                             f"{devices} devices")
        return [shape] * (devices // math.prod(shape))
    problems = []
    for pods in range(math.ceil(devices / pod_chips), devices + 1):
        if devices % pods:
            continue
        try:
            shape = slice_shape(devices // pods, tuple(p.cube))
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if all(s <= m for s, m in zip(sorted(shape), sorted(p.pod))):
            return [shape] * pods
    raise ValueError(f"{devices} chips do not split into equal slices of whole cubes that "
                     f"fit a {'x'.join(map(str, p.pod))} pod; give `shape`"
                     + (f" ({problems[0]})" if problems else ""))


def build_tpu_pod(p: TpuPodParams, devices: int, name: str = "tpu-pod") -> nx.DiGraph:
    """Build ``devices`` chips as one torus slice or several pods joined by the DCN."""
    device = resolve_device(p.device, p.device_overrides)
    shapes = _pod_shapes(p, devices)
    G = new_graph(name, device=device, pods=len(shapes), torus_dims=shapes[0])
    G.graph["device_specs"] = {device.name: device}
    cube = tuple(p.cube) if p.optical else None
    # Slices below one cube have no wrap-around links (Cloud TPU v4 docs).
    wrap = math.prod(shapes[0]) >= math.prod(p.cube)
    nics, up_paths = [], {}
    for k, shape in enumerate(shapes):
        prefix = f"pod{k}/" if len(shapes) > 1 else ""
        fabric = add_torus(G, shape, p.ici, device=device.name, fabric_id=f"torus:{k}",
                           prefix=prefix, cube=cube, wrap=wrap, count=p.ici_links,
                           bw_Bps=p.ici_bandwidth, ocs_latency_s=p.ocs_latency,
                           node_attrs={"pod": k})
        chips = list(fabric.coords)
        for chip in chips:
            add_device_memory(G, chip, device)
        for h in range(0, len(chips), p.host.chips):
            host = f"{prefix}h{h // p.host.chips}"
            members = chips[h:h + p.host.chips]
            add_host(G, host, members, p.host.link, p.host.memory, p.host.memory_channels,
                     p.host.memory_capacity, power_W=p.host.power)
            if len(shapes) == 1:
                continue
            for i in range(p.dcn.nics_per_host):
                nic = f"{host}/nic{i}"
                add_node(G, nic, "nic", pod=k, label=f"{p.dcn.technology} NIC")
                add_link(G, host, nic, p.host.link)
                nics.append(nic)
                up_paths[nic] = [(chip, host, nic) for chip in members[i::p.dcn.nics_per_host]]
    if len(shapes) > 1:
        first = {nic: paths[0] for nic, paths in up_paths.items()}
        fabric = add_fat_tree(G, nics, p.dcn.technology, p.dcn.switch, radix=p.dcn.radix,
                              oversubscription=p.dcn.oversubscription, fabric_id="dcn",
                              level="dcn", prefix="dcn/", bw_Bps=p.dcn.bandwidth,
                              up_paths=first)
        for nic, paths in up_paths.items():
            for path in paths[1:]:
                attach(G, path[0], fabric, entry=nic, up=path)
    return G
