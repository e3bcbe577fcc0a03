"""Tori and meshes: TPU-style 3-D tori, 4x4x4 cubes joined by optical circuit switches, and
the 2-D die meshes of chiplet packages.

A TPU v4 pod is 64 cubes of 4x4x4 chips. Links inside a cube are electrical; every link that
leaves a cube face goes through an optical circuit switch (OCS), which is how the 16x16x16
torus closes its wrap-around (Jouppi et al., "TPU v4", ISCA 2023: 48 OCSes for 64 cubes, one
per dimension and face position: 3 dims x 16 positions).

>>> G = torus((4, 4, 4), link="ici-v4", device="tpu-v4")
>>> len(G.graph["devices"]), G.out_degree("c0.0.0")
(64, 6)
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import networkx as nx

from clustersim.topology.graph import (TorusFabric, add_fabric, add_link, add_node, attach,
                                       new_graph)

__all__ = ["torus", "add_torus", "slice_shape", "mesh_path"]


def slice_shape(n: int, cube: tuple[int, ...] = (4, 4, 4)) -> tuple[int, ...]:
    """The most cubic torus shape holding ``n`` chips, in whole cubes once ``n`` >= a cube.

    Below one cube, TPU slices are 2x2x1, 2x2x2, 2x2x4, 2x4x4 (Cloud TPU v4 docs); above,
    whole cubes arranged as compactly as possible (3072 chips -> 12x16x16, PaLM's pods).

    >>> slice_shape(4096), slice_shape(3072), slice_shape(8)
    ((16, 16, 16), (12, 16, 16), (2, 2, 2))
    """
    cube_size = math.prod(cube)
    if n < 1:
        raise ValueError("a torus needs at least one chip")
    if n < cube_size:
        shape = [1] * len(cube)
        remaining, i = n, len(cube) - 1
        while remaining > 1:
            if remaining % 2:
                raise ValueError(f"{n} chips is not a power-of-two slice below one cube "
                                 f"({cube_size} chips); use a power of two or whole cubes")
            shape[i] *= 2
            remaining //= 2
            i = (i - 1) % len(cube)
        return tuple(sorted(shape))
    if n % cube_size:
        raise ValueError(f"{n} chips is not a whole number of {'x'.join(map(str, cube))} "
                         f"cubes ({cube_size} chips each)")
    cubes = n // cube_size
    best = None
    for a in range(1, cubes + 1):
        if cubes % a:
            continue
        for b in range(a, cubes // a + 1):
            if (cubes // a) % b:
                continue
            c = cubes // a // b
            if c < b:
                continue
            key = (c, c - a)  # smallest longest side, then most even
            if best is None or key < best[0]:
                best = (key, (a, b, c))
    counts = best[1][: len(cube)] if len(cube) == 3 else (cubes,)
    return tuple(k * s for k, s in zip(counts, cube))


def _ocs_name(prefix: str, dim: int, face: tuple[int, ...]) -> str:
    return f"{prefix}ocs{dim}." + ".".join(map(str, face))


def add_torus(G: nx.DiGraph, dims: tuple[int, ...], link: str, device: str | None = None,
              fabric_id: str = "torus", level: str = "torus", prefix: str = "",
              kind: str = "accelerator", cube: tuple[int, ...] | None = None,
              wrap: bool | tuple[bool, ...] = True, count: int = 1,
              bw_Bps: float | None = None, ocs_latency_s: float = 0.0,
              node_attrs: dict[str, Any] | None = None) -> TorusFabric:
    """Add a torus (or mesh, with ``wrap=False``) of compute endpoints to ``G``.

    Nodes are named ``{prefix}c{x}.{y}.{z}`` and listed x-fastest, so consecutive ranks are
    neighbours along the first dimension. A dimension of size 1 has no links; a dimension of
    size 2 has one link pair (its wrap-around would duplicate it). With ``cube``, hops that cross
    a cube face go through an optical circuit switch shared by the same face position.
    """
    dims = tuple(int(d) for d in dims)
    wraps = tuple(wrap) if isinstance(wrap, (tuple, list)) else (wrap,) * len(dims)
    wraps = tuple(w and d > 2 for w, d in zip(wraps, dims))
    coords_list = [tuple(reversed(c)) for c in itertools.product(*(range(d) for d in
                                                                 reversed(dims)))]
    coords, at = {}, {}
    for c in coords_list:
        node = f"{prefix}c" + ".".join(map(str, c))
        attrs = dict(node_attrs or {})
        if device:
            attrs["device"] = device
        add_node(G, node, kind, coords=c, **attrs)
        coords[node], at[c] = c, node
    fabric = TorusFabric(id=fabric_id, level=level, dims=dims, wrap=wraps, coords=coords,
                         at=at, hops={})
    for c in coords_list:
        node = at[c]
        for d, size in enumerate(dims):
            if size == 1:
                continue
            if c[d] == size - 1 and not wraps[d]:
                continue
            if size == 2 and c[d] == 1:
                continue  # the pair was linked from c[d] == 0
            n = list(c)
            n[d] = (c[d] + 1) % size
            other = at[tuple(n)]
            crosses_cube = cube is not None and (c[d] + 1) % cube[d] == 0 and size >= cube[d]
            if crosses_cube:
                face = tuple(c[i] % cube[i] for i in range(len(dims)) if i != d)
                ocs = _ocs_name(prefix, d, face)
                if ocs not in G:
                    add_node(G, ocs, "optical_switch", model="ocs",
                             label=f"OCS dim {d} face {face}")
                add_link(G, node, ocs, link, count=count, bw_Bps=bw_Bps,
                         switch_latency_s=ocs_latency_s)
                add_link(G, ocs, other, link, count=count, bw_Bps=bw_Bps,
                         switch_latency_s=ocs_latency_s)
                path = (node, ocs, other)
            else:
                add_link(G, node, other, link, count=count, bw_Bps=bw_Bps)
                path = (node, other)
            fabric.hops[(node, d, +1)] = path
            fabric.hops[(other, d, -1)] = tuple(reversed(path))
            if size == 2:
                fabric.hops[(node, d, -1)] = path
                fabric.hops[(other, d, +1)] = tuple(reversed(path))
    add_fabric(G, fabric)
    for node in coords:
        attach(G, node, fabric)
    return fabric


def mesh_path(fabric: TorusFabric, a: Any, b: Any) -> tuple:
    """Dimension-order node path between two nodes of a (non-wrapping) mesh, e.g. from a
    die to its package's gateway die.

    >>> G = new_graph("m")
    >>> f = add_torus(G, (2, 2), "ucie-advanced", kind="die", wrap=False)
    >>> mesh_path(f, "c1.1", "c0.0")
    ('c1.1', 'c0.1', 'c0.0')
    """
    path, here = [a], list(fabric.coords[a])
    target = fabric.coords[b]
    for d in range(len(here)):
        while here[d] != target[d]:
            step = 1 if target[d] > here[d] else -1
            hop = fabric.hops[(fabric.at[tuple(here)], d, step)]
            path.extend(hop[1:])
            here[d] += step
    return tuple(path)


def torus(dims: tuple[int, ...], link: str = "ici-v4", device: str | None = "tpu-v4",
          cube: tuple[int, ...] | None = None, wrap: bool = True) -> nx.DiGraph:
    """A standalone torus graph (see :func:`add_torus`).

    >>> G = torus((4, 4), link="ici-v4", wrap=False)
    >>> G.out_degree("c0.0"), G.out_degree("c1.1")
    (2, 4)
    """
    G = new_graph(f"torus-{'x'.join(map(str, dims))}")
    add_torus(G, dims, link, device=device, cube=cube, wrap=wrap)
    return G
