"""Routes of many device pairs at once, in arrays.

Between two devices of a switched or fat-tree cluster a route is up to five *segments*: the
sender's way into the fabric they share (its up path, and on a fat-tree the link to its leaf;
on a switch, the links to every plane), on a fat-tree the sender's leaf up to its pod's
aggregation switches, across the cores to the receiver's pod, down to the receiver's leaf
(none inside one leaf, no crossing inside one pod), and the receiver's way out. There are a
few segments per device, leaf and pod pair, so they are built once, stored as one flat table,
and a batch of pairs is assembled by array gathers: no Python per transfer (speed: a
16,384-GPU step routes millions of transfers). Routes equal :meth:`Cluster.route`'s (the same
links, weights and latency; the order of links inside a route may differ). On request the
crossing goes over *link classes* instead (:meth:`RouteTable._pod_classes`).

Pairs this cannot cut into segments (a direct edge, non-devices, tori, dragonflies, graph
fabrics) are routed one by one with :meth:`Cluster.route`.

>>> from clustersim.network import build_cluster
>>> c = build_cluster("dgx-h100", devices=16)
>>> ptr, links, weights, latency_s = c.routes(c.devices[:2], [c.devices[9], c.devices[2]])
>>> a, w, lat = c.route(c.devices[0], c.devices[9])
>>> sorted(links[ptr[0]:ptr[1]].tolist()) == sorted(a.tolist()), bool(latency_s[0] == lat)
(True, True)
"""

from __future__ import annotations

import numpy as np

from clustersim.topology.graph import FatTreeFabric, SwitchFabric

__all__ = ["RouteTable"]


class RouteTable:
    """Device-to-fabric segments and leaf-pair middles of one cluster, as flat arrays."""

    def __init__(self, cluster):
        self.cluster = cluster
        G = cluster.graph
        self.n = len(cluster.devices)
        attach = [G.nodes[d]["attach"] for d in cluster.devices]
        self.levels = len(attach[0]) if attach else 0
        fabrics = cluster.router.fabrics
        self.ok = self.levels > 0 and all(len(a) == self.levels for a in attach) and all(
            type(fabrics[x.fabric]) in (SwitchFabric, FatTreeFabric) for a in attach for x in a
        ) and not any(s in cluster.rank_of for d in cluster.devices for s in G.successors(d))
        if not self.ok:
            return
        codes: dict = {}
        self.fabric = np.array([[codes.setdefault(x.fabric, len(codes)) for x in a]
                                for a in attach], dtype=np.int64)
        self.seg_in = np.full((self.n, self.levels), -1, dtype=np.int64)
        self.seg_out = np.full((self.n, self.levels), -1, dtype=np.int64)
        self.leaf = np.full((self.n, self.levels), -1, dtype=np.int64)
        self.pod = np.full((self.n, self.levels), -1, dtype=np.int64)
        self._leaf_code: dict = {}      # (fabric id, leaf) -> code
        self._leaves: list = []         # code -> (fabric, leaf)
        self._pod_code: dict = {}
        self._pods: list = []           # code -> (fabric, pod)
        self.leaf_up = np.zeros(0, np.int64)     # leaf code -> segment up to its aggs
        self.leaf_down = np.zeros(0, np.int64)   # leaf code -> segment down from them
        self._middle: dict = {}         # (pod code, pod code) -> segment across pods
        self._caps: dict = {}
        self._pod_classes()
        self._parts: list = []          # segments not yet in the flat table
        self._count = 0                 # segments made so far
        # (ptr, links, weights, latency) of every segment, grown as segments are made
        self._flat = (np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))

    # -- link classes -----------------------------------------------------------------------
    def _pod_classes(self) -> None:
        """The link classes of every pod of a 3-level fat-tree: the links from its
        aggregation switches up to the cores, and those down to them. Every flow leaving
        (entering) the pod crosses each of them with the same fraction (up/down ECMP spreads
        by capacity, and the capacities are equal), and no other flow crosses them, so they
        always carry equal loads and max-min sharing on one class link of their summed
        capacity is exact. Class ``c`` is link ``len(links) + c`` of the extended arrays
        (:meth:`class_capacity`). A leaf's own uplinks are one bundled link already."""
        c = self.cluster
        index, cap, tech = c.links.edge_index, c.links.capacity_Bps, c.links.tech_id
        self.class_members: list[np.ndarray] = []
        self._class_of: dict = {}       # (fabric id, pod, "up" | "down") -> class
        weights = []
        trees = {x.fabric for x in c.graph.nodes[c.devices[0]]["attach"]} if self.n else set()
        for f in (c.router.fabrics[t] for t in sorted(trees)):
            if not isinstance(f, FatTreeFabric) or not f.cores:
                continue
            for pod, aggs in f.aggs.items():
                for way in ("up", "down"):
                    share: dict = {}    # link -> the fraction of a unit flow it carries
                    for j, agg in enumerate(aggs):
                        for core in f.cores[j]:
                            link = index[(agg, core) if way == "up" else (core, agg)]
                            share[link] = share.get(link, 0.0) + 1.0 / len(f.cores[j])
                    links = np.array(sorted(share), dtype=np.int64)
                    w = np.array([share[x] for x in links.tolist()])
                    if len(links) < 2 or np.ptp(w) > 1e-12 * w.max() or \
                            np.ptp(cap[links]) > 0 or len(set(tech[links].tolist())) > 1:
                        continue   # not a class: these routes stay on the links themselves
                    self._class_of[(f.id, pod, way)] = len(self.class_members)
                    self.class_members.append(links)
                    weights.append(w / w.sum())
        self.first_class = len(c.links.capacity_Bps)
        self._latency = np.concatenate([c.links.latency_s, [
            float(np.dot(w, c.links.latency_s[x])) for x, w in zip(self.class_members, weights)
        ]]) if self.class_members else c.links.latency_s

    def class_capacity(self, capacity_Bps: np.ndarray) -> np.ndarray:
        """``capacity_Bps`` of every link, then of every link class (its links' sum)."""
        return np.concatenate([capacity_Bps, [float(capacity_Bps[x].sum())
                                              for x in self.class_members]])

    def physical(self, per_link: np.ndarray, spread: bool) -> np.ndarray:
        """A statistic of the extended links back on the links: each class's value on each
        of its links, divided among them (``spread``: bytes) or as it is (busy time, peak
        utilisation: equal on every link of a class)."""
        out = np.array(per_link[:self.first_class], dtype=np.float64, copy=True)
        for k, members in enumerate(self.class_members):
            value = per_link[self.first_class + k]
            out[members] += value / len(members) if spread else value
        return out

    # -- segments ---------------------------------------------------------------------------
    @staticmethod
    def _code(codes: dict, items: list, key, item) -> int:
        found = codes.get(key)
        if found is None:
            found = codes[key] = len(items)
            items.append(item)
        return found

    def _add(self, pairs) -> int:
        """A new segment of weighted edges; edges of one link (a bundle, a half-duplex pair)
        merge as in ``Cluster._edge_links``. Plain lists: segments are a few links long."""
        index = self.cluster.links.edge_index
        merged: dict = {}
        for e, w in pairs:
            link = index[e]
            merged[link] = merged.get(link, 0.0) + w
        return self._add_links(merged)

    def _add_links(self, merged: dict) -> int:
        """A new segment of ``{link: weight}`` (links of the extended arrays)."""
        self._parts.append(merged)
        self._count += 1
        return self._count - 1

    def _device(self, i: int, k: int) -> None:
        """Build device ``i``'s segments into and out of the fabric of its attachment k."""
        c = self.cluster
        G = c.graph
        att = G.nodes[c.devices[i]]["attach"][k]
        f = c.router.fabrics[att.fabric]
        up = list(zip(att.up, att.up[1:]))
        down = [(v, u) for u, v in reversed(up)]
        if isinstance(f, FatTreeFabric):
            leaf = f.leaf_of[att.entry]
            self.leaf[i, k] = self._code(self._leaf_code, self._leaves, (f.id, leaf), (f, leaf))
            self.pod[i, k] = self._code(self._pod_code, self._pods, (f.id, f.pod_of[leaf]),
                                        (f, f.pod_of[leaf]))
            into = [((u, v), 1.0) for u, v in up] + [((att.entry, leaf), 1.0)]
            out = [((leaf, att.entry), 1.0)] + [((u, v), 1.0) for u, v in down]
        else:  # a switch: striped over its planes by the entry's port bandwidth
            caps = [G.edges[att.entry, s]["bw_Bps"] for s in f.planes]
            total = sum(caps)
            # Cluster.route splits the way out by the *sender's* ports: equal only when
            # every entry has the same ports
            if self._caps.setdefault(f.id, caps) != caps:
                self.ok = False
            into = [((u, v), 1.0) for u, v in up] + [
                ((att.entry, s), cap / total) for s, cap in zip(f.planes, caps)]
            out = [((s, att.entry), cap / total) for s, cap in zip(f.planes, caps)] + [
                ((u, v), 1.0) for u, v in down]
        self.seg_in[i, k] = self._add(into)
        self.seg_out[i, k] = self._add(out)

    def _leaf_shares(self, f: FatTreeFabric, leaf) -> list[float]:
        """The fraction of a flow leaving ``leaf`` on each of its pod's aggregation switches;
        the router spreads by the *sender's* uplinks, so every leaf must have the same."""
        G = self.cluster.graph
        caps = [G.edges[leaf, agg]["bw_Bps"] for agg in f.aggs[f.pod_of[leaf]]]
        if self._caps.setdefault(f.id, caps) != caps:
            self.ok = False
        total = sum(caps)
        return [cap / total for cap in caps]

    def _leaf_segments(self, code: int) -> None:
        """A leaf's way up to its pod's aggregation switches and down from them."""
        f, leaf = self._leaves[code]
        aggs = f.aggs[f.pod_of[leaf]]
        shares = self._leaf_shares(f, leaf)
        self.leaf_up[code] = self._add([((leaf, agg), w) for agg, w in zip(aggs, shares)])
        self.leaf_down[code] = self._add([((agg, leaf), w) for agg, w in zip(aggs, shares)])

    def _pod_pair(self, key: tuple, classes: bool) -> int:
        """Aggregation switches of one pod, up to the cores, down to those of another (over
        the two pods' link classes, when asked and they have them)."""
        found = self._middle.get(key + (classes,))
        (f, pa), (_, pb) = self._pods[key[0]], self._pods[key[1]]
        up, down = self._class_of.get((f.id, pa, "up")), self._class_of.get((f.id, pb, "down"))
        even = len(set(self._caps[f.id])) == 1   # every aggregation switch takes an equal share
        if found is None and classes and even and up is not None and down is not None:
            found = self._middle[key + (classes,)] = self._add_links(
                {self.first_class + up: 1.0, self.first_class + down: 1.0})
        if found is None:
            caps = self._caps[f.id]
            total = sum(caps)
            pairs = []
            for j, (agg_a, agg_b) in enumerate(zip(f.aggs[pa], f.aggs[pb])):
                cores = f.cores[j]
                w = caps[j] / total / len(cores)
                pairs += [((agg_a, core), w) for core in cores]
                pairs += [((core, agg_b), w) for core in cores]
            found = self._middle[key + (classes,)] = self._add(pairs)
        return found

    def _middles(self, la: np.ndarray, lb: np.ndarray, pa: np.ndarray, pb: np.ndarray,
                 classes: bool):
        """``[route, 3]`` segment ids between two leaves: up from the sender's leaf, across
        pods, down to the receiver's (-1: not crossed; all -1 inside one leaf)."""
        out = np.full((len(la), 3), -1, dtype=np.int64)
        across = (la >= 0) & (la != lb)
        if not across.any():
            return out
        grow = len(self._leaves) - len(self.leaf_up)
        if grow > 0:
            for name in ("leaf_up", "leaf_down"):
                setattr(self, name, np.concatenate([getattr(self, name),
                                                    np.full(grow, -1, np.int64)]))
        ends = np.unique(np.concatenate([la[across], lb[across]]))
        for code in ends[self.leaf_up[ends] < 0].tolist():
            self._leaf_segments(code)
        out[across, 0] = self.leaf_up[la[across]]
        out[across, 2] = self.leaf_down[lb[across]]
        pods = across & (pa != pb)
        if pods.any():
            key = pa[pods] * len(self._pods) + pb[pods]
            uniq, inverse = np.unique(key, return_inverse=True)
            ids = np.array([self._pod_pair(divmod(k, len(self._pods)), classes)
                            for k in uniq.tolist()], dtype=np.int64)
            out[pods, 1] = ids[inverse.reshape(-1)]
        return out

    def _table(self):
        """The flat table, with the segments made since the last call appended."""
        if self._parts:
            ptr, links, weights, latency = self._flat
            lat = self._latency
            new_links = np.array([x for p in self._parts for x in p], dtype=np.int64)
            new_weights = np.array([w for p in self._parts for w in p.values()])
            lengths = np.array([len(p) for p in self._parts], dtype=np.int64)
            bounds = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=bounds[1:])
            # a segment's latency: its weighted link latencies (as Cluster._edge_links)
            new_lat = np.add.reduceat(new_weights * lat[new_links], bounds[:-1]) \
                if len(new_links) else np.zeros(len(lengths))
            new_lat[lengths == 0] = 0.0
            self._flat = (np.concatenate([ptr, ptr[-1] + bounds[1:]]),
                          np.concatenate([links, new_links]),
                          np.concatenate([weights, new_weights]),
                          np.concatenate([latency, new_lat]))
            self._parts = []
        return self._flat

    # -- public -----------------------------------------------------------------------------
    def device_routes(self, ia: np.ndarray, ib: np.ndarray, classes: bool = False) -> tuple:
        """CSR ``(ptr, links, weights, latency_s)`` from device ranks ``ia[k]`` to ``ib[k]``
        (empty from a device to itself); ``classes``: through the link classes (links of the
        extended arrays, see :meth:`class_capacity`). None when this cluster's routes cannot
        be cut into segments."""
        if not self.ok:
            return None
        ia = np.asarray(ia, dtype=np.int64)
        ib = np.asarray(ib, dtype=np.int64)
        shared = self.fabric[ia] == self.fabric[ib]
        if not shared.any(axis=1).all():
            raise ValueError("two devices share no fabric")
        level = np.argmax(shared, axis=1)
        ends = np.concatenate([ia, ib]) * self.levels + np.concatenate([level, level])
        need = np.unique(ends)
        need = need[self.seg_in.reshape(-1)[need] < 0]
        for i, k in zip((need // self.levels).tolist(), (need % self.levels).tolist()):
            if self.seg_in[i, k] < 0:
                self._device(i, k)
        if not self.ok:
            return None
        middles = self._middles(self.leaf[ia, level], self.leaf[ib, level],
                                self.pod[ia, level], self.pod[ib, level], classes)
        if not self.ok:
            return None
        pieces = np.concatenate([self.seg_in[ia, level][:, None], middles,
                                 self.seg_out[ib, level][:, None]], axis=1)
        pieces[ia == ib] = -1
        pieces = pieces.reshape(-1)
        seg_ptr, seg_links, seg_weights, seg_lat = self._table()
        used = pieces >= 0
        count = np.where(used, seg_ptr[pieces + 1] - seg_ptr[np.maximum(pieces, 0)], 0)
        start = seg_ptr[np.maximum(pieces, 0)]
        total = int(count.sum())
        # every entry's index into the segment table: its piece's start + its rank in it
        offset = np.zeros(len(count), dtype=np.int64)
        np.cumsum(count[:-1], out=offset[1:])
        idx = np.repeat(start - offset, count) + np.arange(total)
        per_route = count.reshape(-1, 5).sum(axis=1)
        ptr = np.zeros(len(ia) + 1, dtype=np.int64)
        np.cumsum(per_route, out=ptr[1:])
        latency = np.where(used, seg_lat[np.maximum(pieces, 0)], 0.0)
        latency = latency.reshape(-1, 5).sum(axis=1)
        return ptr, seg_links[idx], seg_weights[idx], latency
