"""Algorithm selection (``algorithm="auto"``) and the price of a collective: vectorised over
sizes (:func:`price`) or for one size (:func:`collective_time_s`).

``auto`` prices every candidate the platform's collective library would consider, with each
of its protocols, and keeps the fastest per size, as NCCL's tuner does with its own cost
model:

- switched GPU fabrics (NVSwitch, InfiniBand; NCCL): ring and tree (double binary tree) with
  the LL and Simple protocols, and NVLS/SHARP where the fabric reduces; all_to_all and
  send_recv are direct point-to-point, as in NCCL;
- tori (TPU ICI): bidirectional rings and, on sub-grids, multi-dimensional rings.

``nccl`` chooses among the same candidates as NCCL's tuner would, by its beliefs
(:mod:`.nccl_tuner`: e.g. a tree is never credited with moving fewer bytes over the NICs),
and charges the chosen one at this model's price: what a job running NCCL's default gets.
``auto`` is the fastest candidate by this model's prices.

Every protocol (Simple, LL128, LL) is priced for rings and trees, on one node and across
nodes alike, each at its own per-hop latency and wire efficiency (``calibration.yaml``), so the
choice follows from the same prices a forced algorithm gets.

``rhd``, ``direct`` (MPI-style) and ``hierarchical`` are priced only when forced: NCCL, whose
sweeps the calibration comes from, has none of them (its rings and trees are node-aware
instead), and including them would make the fit describe algorithms that never ran. A forced name without a protocol (``ring``) still picks its faster
protocol; ``ring/simple`` forces both.

>>> from clustersim.network import build_cluster
>>> c = build_cluster("dgx-h100", 8)
>>> times, algos = price(c, c.devices, "all_reduce", [1024.0, 2.0**33])
>>> list(algos)
['tree/ll', 'nvls/simple']
>>> t = collective_time_s(c, c.devices, "all_reduce", 2**30, "ring/simple")
>>> round(1.75 * 2**30 / t / 1e9)   # busbw, GB/s: NVLink4 450 GB/s x efficiency, - latency
316
"""

from __future__ import annotations

import numpy as np

from clustersim.collectives.algorithms import (PROTOCOLS, SIMPLE_ONLY, expand, split_algorithm,
                                               valid_algorithms)
from clustersim.collectives.calibration import Calibration, default_calibration
from clustersim.collectives.cost import profile
from clustersim.collectives.group_structure import group_info
from clustersim.collectives.kernels import price_points_kernel
from clustersim.collectives.nccl_tuner import nccl_estimates
from clustersim.collectives.op_types import check_op
from clustersim.errors import InputError
from clustersim.topology.graph import DirectFabric

__all__ = ["auto_candidates", "candidates", "candidate_times", "price", "select_algorithm",
           "collective_time_s"]


def auto_candidates(cluster, group, op: str) -> list[str]:
    """Algorithm names (without protocol) ``auto`` considers for ``op`` on ``group``."""
    info = group_info(cluster, group)
    if op == "all_to_all":
        wanted = ["direct", "pxn"]   # NCCL forwards cross-rail messages over NVLink (PXN)
    elif op == "send_recv":
        wanted = ["direct"]
    elif info.torus is not None:
        wanted = ["ring", "multidim"]
    elif info.flat and isinstance(info.fabric, DirectFabric):
        # a full mesh (MI300X): RCCL's multi-ring over every link, and direct transfers to
        # every peer at once for all_gather / reduce_scatter (one step over all 7 links)
        wanted = ["ring", "tree", "direct"] if op != "all_reduce" else ["ring", "tree"]
    else:
        wanted = ["ring", "tree", "nvls", "sharp", "pat"]
    found = valid_algorithms(cluster, group, op, wanted)
    return found or valid_algorithms(cluster, group, op)[:1]


def _protocols(cluster, group, name: str) -> tuple:
    """The protocols a library runs ``name`` with on ``group``: in-switch reduction and TPU
    tori (one bulk DMA protocol) run Simple only; NCCL's rings and trees all three."""
    if name in SIMPLE_ONLY or group_info(cluster, group).torus is not None:
        return ("simple",)
    return PROTOCOLS


def candidates(cluster, group, op: str, algorithm: str = "auto") -> list[str]:
    """Concrete ``name/protocol`` candidates for a request (auto, a name, or name/protocol)."""
    check_op(op)
    if algorithm == "auto":
        names = auto_candidates(cluster, group, op)
        if not names:
            raise InputError(f"no algorithm implements {op} on this group")
    else:
        name, _ = split_algorithm(algorithm)
        if "/" in str(algorithm):
            return [str(algorithm)]
        names = [name]
    return [f"{name}/{proto}" for name in names for proto in _protocols(cluster, group, name)]


def _check_forced(cluster, group, op, algorithm):
    if algorithm in ("auto", "nccl"):
        return
    name, _ = split_algorithm(algorithm)
    if name not in valid_algorithms(cluster, group, op, [name]):
        expand(cluster, group, op, 1.0, algorithm)  # raises the InputError with the reason


def price(cluster, group, op: str, sizes, algorithm: str = "auto", groups=None,
          calibration: Calibration | None = None, root: int = 0, skew: float = 1.0,
          symmetric: bool = True):
    """``(times_s, algorithm per size)`` for ``op`` at every size of ``sizes`` (bytes);
    ``symmetric`` as for :func:`~clustersim.collectives.cost.profile`."""
    cal = calibration or default_calibration()
    _check_forced(cluster, group, op, algorithm)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if np.any(sizes < 0) or not np.all(np.isfinite(sizes)):
        raise InputError("collective sizes must be finite numbers of bytes >= 0")
    family = [list(group)] + [list(g) for g in (groups or []) if list(g) != list(group)]
    names = candidates(cluster, group, op, "auto" if algorithm == "nccl" else algorithm)
    profs = [profile(cluster, family, op, name, cal, root=root, skew=skew, symmetric=symmetric)
             for name in names]
    ptr = np.zeros(len(profs) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(pr.steps) for pr in profs])

    def cat(attr, dtype=np.float64):
        parts = [getattr(pr, attr) for pr in profs]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    n = len(sizes)
    point_profile = np.repeat(np.arange(len(profs), dtype=np.int64), n)
    point_size = np.tile(sizes, len(profs))
    times = price_points_kernel(ptr, cat("steps", np.int64), cat("alpha_s"), cat("coef"),
                                cat("rate_Bps"), cat("reduce_coef"), cat("reduce_Bps"),
                                point_profile, point_size).reshape(len(profs), n)
    if algorithm == "nccl":  # chosen by NCCL's beliefs, charged at this model's price
        best = np.argmin(nccl_estimates(cluster, group, op, sizes, names, times, profs, cal),
                         axis=0)
    else:
        best = np.argmin(times, axis=0)
    return times[best, np.arange(n)], np.array(names, dtype=object)[best]


def candidate_times(cluster, group, op: str, sizes, algorithm: str = "auto",
                    calibration: Calibration | None = None) -> tuple[list[str], np.ndarray]:
    """``(candidates, times_s [candidate, size])``: every ``name/protocol`` that ``algorithm``
    (``auto`` or a name) weighs, priced at every size, for explaining a choice.

    >>> from clustersim.network import build_cluster
    >>> c = build_cluster("dgx-h100", 8)
    >>> names, times = candidate_times(c, c.devices, "all_reduce", [2.0**30])
    >>> names[int(times[:, 0].argmin())]
    'nvls/simple'
    """
    _check_forced(cluster, group, op, algorithm)
    names = candidates(cluster, group, op, "auto" if algorithm == "nccl" else algorithm)
    rows = [price(cluster, group, op, sizes, name, calibration=calibration)[0]
            for name in names]
    return names, np.array(rows).reshape(len(names), -1)


def select_algorithm(cluster, group, op: str, size_bytes: float, groups=None,
                     calibration: Calibration | None = None) -> str:
    """The fastest ``name/protocol`` for one size (``auto``)."""
    return str(price(cluster, group, op, [size_bytes], "auto", groups, calibration)[1][0])


def collective_time_s(cluster, group, op: str, size_bytes: float, algorithm: str = "auto",
                      groups=None, calibration: Calibration | None = None) -> float:
    """Seconds for ``op`` of ``size_bytes`` on ``group`` (and its concurrent family
    ``groups``) by ``algorithm`` (``auto`` picks the fastest)."""
    times, _ = price(cluster, group, op, [size_bytes], algorithm, groups=groups,
                     calibration=calibration)
    return float(times[0])
