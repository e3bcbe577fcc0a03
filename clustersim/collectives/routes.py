"""The routes of a phase's transfers as CSR arrays over the cluster's link table, built once
per (cluster, members, transfer pattern) and shared by everything that reads them: the wire
factors of each protocol, the max-min rates and the path latencies. Rings and trees are
priced with three protocols over the same transfers, so this is where their cost is paid once
(a 4,096-GPU ring is 32,768 routes).

>>> from clustersim.network import build_cluster
>>> import numpy as np
>>> c = build_cluster("dgx-h100", 8)
>>> ptr, link, weight, lat = transfer_routes(c, c.devices, np.array([0]), np.array([1]))
>>> int(ptr[-1]) == len(link), round(float(lat[0]) * 1e9)   # 2 NVLink hops + the switch
(True, 300)
"""

from __future__ import annotations

import numpy as np

__all__ = ["transfer_routes", "routes_of_pairs"]

_CACHE: dict = {}


def routes_of_pairs(cluster, pairs) -> tuple:
    """``(ptr, links, weights, latency_s)``: CSR routes of the node ``pairs``."""
    pairs = list(pairs)
    return cluster.routes([a for a, _ in pairs], [b for _, b in pairs])


def transfer_routes(cluster, members, src, dst) -> tuple:
    """CSR routes of the transfers ``src[k] -> dst[k]`` (positions in ``members``), cached
    (the cache holds the cluster, so a rebuilt cluster never reads another's routes)."""
    key = (id(cluster), tuple(members), np.asarray(src).tobytes(), np.asarray(dst).tobytes())
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is cluster:
        return hit[1]
    routes = routes_of_pairs(cluster, [(members[s], members[d]) for s, d in zip(src, dst)])
    if len(_CACHE) > 512:
        _CACHE.clear()
    _CACHE[key] = (cluster, routes)
    return routes
