"""In-switch reduction: NVLink SHARP (``nvls``, NVSwitch gen 3+) and InfiniBand SHARP
(``sharp``, Quantum switches), valid when the fabric joining a flat group says so
(``in_network_reduction``); SHARP moreover only where the cluster sets ``network.sharp: true``
(:func:`sharp_enabled`).

Model: for all_reduce each rank sends its buffer ``S`` into the switch, which reduces the
contributions and multicasts the result: each rank receives ``S`` (NVIDIA: NVLS all-reduce
moves S each way per GPU instead of the ring's ``2(p-1)/p S``). The load is expressed as
concurrent transfers between group positions, ``S/(p-1)`` from every rank to every other:
this puts exactly ``S`` on every rank's link into the fabric and ``S`` on every link out of it,
so the flow engine can run it unchanged. Two steps: reduce (multimem.ld_reduce), then
multicast (multimem.st). The switch's reduction runs below the port rate; its efficiency is
calibrated (``calibration.yaml: in_network``) and applied as wire bytes.

Reduce-scatter: each rank sends its ``S`` in and receives its reduced ``S/p`` (pairs ``S/p``);
all-gather: each rank sends ``S/p`` once and the switch multicasts it (receives ``(p-1)/p S``).
For SHARP on a multi-switch fat-tree the pairwise pattern over-states spine traffic (the real
aggregation tree sends each leaf's partial once); on one switch it is exact.

>>> from clustersim.network import build_cluster
>>> from clustersim.collectives.group_structure import group_info
>>> c = build_cluster("dgx-h100", 8)
>>> [ph] = expand_nvls(c, group_info(c, c.devices), "all_reduce", 7.0)
>>> ph.steps, float(ph.bytes[ph.src == 0].sum()), float(ph.bytes[ph.dst == 0].sum())
(2, 7.0, 7.0)
"""

from __future__ import annotations

from clustersim.collectives.phase import Phase, make_phase
from clustersim.errors import InputError

__all__ = ["expand_nvls", "expand_sharp", "sharp_enabled", "IN_NETWORK_OPS"]

IN_NETWORK_OPS = ("all_reduce", "reduce_scatter", "all_gather")


def _in_switch(kind: str, info, op: str, S: float) -> list[Phase]:
    if op not in IN_NETWORK_OPS:
        raise InputError(f"{kind} is defined for {', '.join(IN_NETWORK_OPS)}, not {op}")
    if info.in_network_reduction != kind:
        where = info.fabric.id if info.fabric is not None else "one device"
        raise InputError(f"{kind} needs a group inside one fabric whose switches reduce "
                         f"({kind}); this group's fabric {where!r} has "
                         f"{info.in_network_reduction or 'no in-network reduction'}")
    p = info.p
    if p == 1:
        return []
    everyone = [(i, j) for i in range(p) for j in range(p) if i != j]
    if op == "all_reduce":
        return [make_phase([(i, j, S / (p - 1)) for i, j in everyone], 2, 0.0, op)]
    return [make_phase([(i, j, S / p) for i, j in everyone], 1, 0.0, op)]


def expand_nvls(cluster, info, op: str, size_bytes: float, root: int = 0, matrix=None
                ) -> list[Phase]:
    return _in_switch("nvls", info, op, size_bytes)


def sharp_enabled(cluster) -> bool:
    """Whether the job may use the InfiniBand switches' SHARP aggregation: only where
    ``network.sharp: true`` says so (it needs the SHARP daemon, NCCL's CollNet plug-in and
    switch resources most clusters do not hand to every job)."""
    return bool(cluster.params.get("network", {}).get("sharp", False))


def expand_sharp(cluster, info, op: str, size_bytes: float, root: int = 0, matrix=None
                 ) -> list[Phase]:
    if not sharp_enabled(cluster):
        raise InputError("sharp needs network.sharp: true (the fabric's SHARP aggregation is "
                         "off unless the cluster says it is offered; e.g. --set "
                         "network.sharp=true)")
    return _in_switch("sharp", info, op, size_bytes)
