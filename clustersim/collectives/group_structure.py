"""The structure of a communication group read off the real graph: which fabric joins it,
how it splits into local domains (nodes), and where its members sit on a torus.

A group is an ordered list of device nodes of a :class:`~clustersim.network.Cluster`.
Members are split by their innermost attachment (``attach[0]``: a scale-up domain, a chiplet
package, a torus): one part means the group lives inside one fabric ("flat"); several parts of
one member each are flat on the fabric that joins the parts; several parts of equal size
``L > 1`` are two-level ("nodes" of ``L`` local ranks joined by an outer fabric).

>>> from clustersim.network import build_cluster
>>> c = build_cluster("dgx-h100", 16)
>>> info = group_info(c, c.devices)
>>> info.flat, info.local_size, len(info.nodes), info.fabric.level
(False, 8, 2, 'scaleout')
>>> one = group_info(c, c.devices[:8])
>>> one.flat, one.fabric.level, one.in_network_reduction
(True, 'scaleup', 'nvls')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clustersim.errors import InputError
from clustersim.topology.graph import Fabric, TorusFabric

__all__ = ["GroupInfo", "group_info", "check_group", "sub_lattice", "shape_key"]


@dataclass(frozen=True)
class GroupInfo:
    """What the algorithms need to know about a group (positions are 0..p-1 in group order)."""

    members: tuple
    nodes: tuple            # tuple of tuples of positions, one per local domain, group order
    fabric: Fabric | None   # the fabric joining the whole group (None for one member)
    inner: Fabric | None    # the local domains' fabric when two-level
    flat: bool              # every pair of members uses the same fabric

    @property
    def p(self) -> int:
        return len(self.members)

    @property
    def local_size(self) -> int:
        """Ranks per local domain (1 when the group is flat across domains)."""
        return len(self.nodes[0]) if self.nodes else 0

    @property
    def uniform(self) -> bool:
        return len({len(n) for n in self.nodes}) <= 1

    @property
    def in_network_reduction(self) -> str | None:
        """``nvls`` / ``sharp`` when the fabric joining a flat group reduces in its switches."""
        if not self.flat or self.fabric is None:
            return None
        return getattr(self.fabric, "in_network_reduction", None)

    @property
    def torus(self) -> TorusFabric | None:
        return self.fabric if self.flat and isinstance(self.fabric, TorusFabric) else None


def check_group(cluster, group) -> tuple:
    """The group as a tuple, or an InputError saying what is wrong with it."""
    members = tuple(group)
    if not members:
        raise InputError("a collective needs a group of at least one device")
    ranks = cluster.rank_of
    unknown = [m for m in members if m not in ranks]
    if unknown:
        raise InputError(f"group member {unknown[0]!r} is not a device of cluster "
                         f"{cluster.name!r} (it has {len(cluster.devices)} devices, e.g. "
                         f"{cluster.devices[0]!r})")
    if len(set(members)) != len(members):
        raise InputError("a group lists the same device twice; members must be distinct")
    return members


def group_info(cluster, group) -> GroupInfo:
    """Split ``group`` into local domains and find the fabric that joins it."""
    members = check_group(cluster, group)
    G = cluster.graph
    parts: dict[Any, list[int]] = {}
    for i, m in enumerate(members):
        attach = G.nodes[m]["attach"]
        key = attach[0].fabric if attach else ("alone", m)
        parts.setdefault(key, []).append(i)
    nodes = tuple(tuple(v) for v in parts.values())
    fabrics = cluster.router.fabrics
    if len(members) == 1:
        return GroupInfo(members, nodes, None, None, True)
    if len(nodes) == 1:
        return GroupInfo(members, nodes, fabrics[next(iter(parts))], None, True)
    outer = cluster.router.shared_fabric(members[nodes[0][0]], members[nodes[1][0]])
    if all(len(n) == 1 for n in nodes):
        return GroupInfo(members, tuple((i,) for i in range(len(members))), outer, None, True)
    inner = fabrics[next(iter(parts))]
    return GroupInfo(members, nodes, outer, inner, False)


def sub_lattice(info: GroupInfo) -> tuple[list[int], dict[int, tuple]] | None:
    """``(varying dims, coords by position)`` when a flat torus group is a full sub-grid (the
    product of its coordinate values per dimension), else None.

    >>> from clustersim.network import Cluster
    >>> from clustersim.topology import torus
    >>> c = Cluster.from_graph(torus((4, 4)))
    >>> dims, _ = sub_lattice(group_info(c, c.devices))
    >>> dims
    [0, 1]
    """
    f = info.torus
    if f is None:
        return None
    coords = {i: f.coords[m] for i, m in enumerate(info.members)}
    values = [sorted({c[d] for c in coords.values()}) for d in range(len(f.dims))]
    count = 1
    for v in values:
        count *= len(v)
    if count != info.p:
        return None
    return [d for d, v in enumerate(values) if len(v) > 1], coords


def shape_key(cluster, group) -> tuple:
    """What an algorithm's phases depend on, without the members themselves: the split into
    local domains, the fabrics (by kind and level) and, on a torus, the coordinates relative to
    the first member. Groups with equal keys expand to the same positional phases (the 512
    FSDP groups of PaLM's layout are translations of one another).

    >>> from clustersim.network import build_cluster
    >>> c = build_cluster("dgx-h100", 16)
    >>> shape_key(c, c.devices[:8]) == shape_key(c, c.devices[8:])
    True
    """
    info = group_info(cluster, group)

    def fabric_kind(f):
        return None if f is None else (type(f).__name__, f.level)

    relative = None
    lattice = sub_lattice(info)
    if lattice is not None:
        dims, coords = lattice
        sizes = info.torus.dims
        origin = coords[0]
        relative = (tuple(sizes), tuple(info.torus.wrap), tuple(
            tuple((coords[i][d] - origin[d]) % sizes[d] for d in range(len(sizes)))
            for i in range(info.p)))
    return (info.p, info.nodes, info.flat, fabric_kind(info.fabric), fabric_kind(info.inner),
            info.in_network_reduction, relative)
