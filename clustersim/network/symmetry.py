"""Classes of equivalent communication groups: families of groups that are images of each
other under the fabric's symmetry, so a collective priced on one is priced on all.

On a *regular* cluster (every scale-up domain alike, every fat-tree leaf with the same
uplinks, every pod with the same aggregation switches, every device of one kind) a family's
routes, contention and latencies depend only on *which members share* a scale-up domain, a
NIC, a leaf and a pod, and on each member's position inside its domain (its rail): renaming
domains, leaves and pods is an automorphism of such a fabric. So the class of a family is
its members' coordinates (domain, position, entry, leaf, pod per attachment) with every name
replaced by its order of first appearance in the family. Two families with equal classes
have equal max-min rates, equal path latencies and equal prices.

Anything else (tori, dragonflies, graph fabrics, planes, rail-only, irregular trees) has no
class here: :func:`family_class` returns None and callers key by the members themselves.

>>> from clustersim.network import build_cluster
>>> c = build_cluster("dgx-h100", devices=32)
>>> a = family_class(c, [c.devices[0:16:8], c.devices[1:16:8]])
>>> b = family_class(c, [c.devices[16:32:8], c.devices[17:32:8]])
>>> a == b, a == family_class(c, [c.devices[0:16:8], c.devices[2:16:8]])
(True, False)
"""

from __future__ import annotations

import numpy as np

from clustersim.topology.graph import FatTreeFabric, SwitchFabric

__all__ = ["family_class", "device_coordinates"]


def _regular(cluster) -> bool:
    """True when renaming domains, leaves and pods is an automorphism (see the module)."""
    G = cluster.graph
    devices = cluster.devices
    if len({G.nodes[d].get("device") for d in devices}) > 1:
        return False
    domains: dict = {}
    for fabric in cluster.router.fabrics.values():
        if type(fabric) is SwitchFabric:
            caps = tuple(sorted(G.edges[e]["bw_Bps"] for s in fabric.planes
                                for e in G.in_edges(s)))
            domains.setdefault(fabric.level, set()).add(caps)
        elif type(fabric) is FatTreeFabric:
            if not _regular_tree(G, fabric):
                return False
        else:
            return False
    return all(len(kinds) == 1 for kinds in domains.values())


def _regular_tree(G, f: FatTreeFabric) -> bool:
    """Every leaf has the same uplinks and every pod the same aggregation switches."""
    ups = set()
    for leaf in set(f.leaf_of.values()):
        ups.add(tuple(sorted(G.edges[e]["bw_Bps"] for e in G.out_edges(leaf)
                             if e[1] not in f.leaf_of)))
        if len(ups) > 1:
            return False
    aggs = {len(v) for v in f.aggs.values()}
    cores = {tuple(sorted(len(v) for v in f.cores.values()))} if f.cores else set()
    return len(aggs) <= 1 and len(cores) <= 1


def device_coordinates(cluster) -> np.ndarray | None:
    """``[device rank, column]`` integer coordinates (per attachment: fabric, entry, leaf,
    pod; and the position inside the innermost domain), or None on an irregular cluster.
    Computed once per cluster."""
    return cluster.memo("device_coordinates", lambda: _coordinates(cluster))


def _codes(values) -> np.ndarray:
    """Each value as the order of its first appearance (any hashables)."""
    names: dict = {}
    return np.array([names.setdefault(v, len(names)) for v in values], dtype=np.int64)


def _coordinates(cluster):
    """Column by column (speed: 131,072 devices x 3 attachments)."""
    if not _regular(cluster):
        return None
    G, fabrics = cluster.graph, cluster.router.fabrics
    attach = [G.nodes[d]["attach"] for d in cluster.devices]
    if len({len(a) for a in attach}) > 1 or not attach or not attach[0]:
        return None
    columns = []
    for k in range(len(attach[0])):
        atts = [a[k] for a in attach]
        ids = [x.fabric for x in atts]
        trees = {isinstance(fabrics[f], FatTreeFabric) for f in set(ids)}
        if len(trees) > 1:
            return None
        columns += [_codes(ids), _codes([x.entry for x in atts])]
        if trees == {True}:
            leaves = [(x.fabric, fabrics[x.fabric].leaf_of[x.entry]) for x in atts]
            columns += [_codes(leaves),
                        _codes([(f, fabrics[f].pod_of[leaf]) for f, leaf in leaves])]
    counts: dict = {}
    position = []           # the device's position inside its innermost domain
    for a in attach:
        inner = a[0].fabric
        position.append(counts.get(inner, 0))
        counts[inner] = position[-1] + 1
    columns.append(np.array(position, dtype=np.int64))
    return np.stack(columns, axis=1)


def _first_appearance(column: np.ndarray) -> np.ndarray:
    """Each value replaced by the order in which it first appears."""
    _, first, inverse = np.unique(column, return_index=True, return_inverse=True)
    order = np.empty(len(first), dtype=np.int64)
    order[np.argsort(first, kind="stable")] = np.arange(len(first))
    return order[inverse.reshape(-1)]


def family_class(cluster, groups) -> tuple | None:
    """A hashable class of the family ``groups`` (lists of devices), equal for families that
    are images of each other under the fabric's symmetry; None when the cluster has no known
    symmetry (then only equal members are equivalent)."""
    coords = device_coordinates(cluster)
    if coords is None:
        return None
    rank_of = cluster.rank_of
    lengths = tuple(len(g) for g in groups)
    idx = np.fromiter((rank_of[m] for g in groups for m in g), dtype=np.int64,
                      count=sum(lengths))
    rows = coords[idx]
    canon = np.empty_like(rows)
    for c in range(rows.shape[1] - 1):
        canon[:, c] = _first_appearance(rows[:, c])
    canon[:, -1] = rows[:, -1]      # the position inside the domain (the rail) is kept
    return lengths, canon.tobytes()
