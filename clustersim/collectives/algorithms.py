"""The algorithm dispatch: which algorithms exist, what a name like ``ring/ll`` means, and the
one entry point :func:`expand` that turns a collective into its phases
(:class:`~clustersim.collectives.phase.Phase`).

Algorithm names are ``NAME`` or ``NAME/PROTOCOL``: ``ring``, ``tree``, ``rhd``, ``direct``,
``hierarchical``, ``multidim``, ``nvls``, ``sharp``, ``pat``, ``pxn``; protocols ``simple`` (bulk, the default),
``ll128`` and ``ll`` (NCCL's low-latency protocols: lower per-step latency, fewer payload bytes
per wire byte). Transfers carry **wire** bytes: payload divided by the protocol's efficiency (see
``calibration.yaml``), so the flow engine needs no protocol knowledge. Each phase records its
``algorithm`` and ``protocol`` as fields, and ``cost.phase_latency_s`` reads the protocol to
pick its per-step latency; the first phase carries the collective's ``launch_s`` (NCCL's base
latency of the protocol, or the switch's reduction latency for ``nvls``/``sharp``); the
``label`` (``"ALGORITHM/PROTOCOL: what"``) is for people.

>>> from clustersim.network import build_cluster
>>> c = build_cluster("dgx-a100", 8)
>>> [ph] = expand(c, c.devices, "all_reduce", 8e6, "ring")
>>> ph.steps, ph.src.tolist(), ph.dst.tolist()[:3], float(ph.bytes[0])
(14, [0, 1, 2, 3, 4, 5, 6, 7], [1, 2, 3], 14000000.0)
>>> ph.label, ph.algorithm, ph.protocol
('ring/simple: all_reduce', 'ring', 'simple')
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from clustersim.collectives.calibration import (PROTOCOLS, default_calibration, host_launch_s,
                                                wire_factors)
from clustersim.collectives.direct import expand_direct
from clustersim.collectives.group_structure import group_info
from clustersim.collectives.hierarchical import expand_hierarchical, expand_multidim
from clustersim.collectives.innetwork import expand_nvls, expand_sharp
from clustersim.collectives.op_types import all_to_all_matrix, check_op
from clustersim.collectives.phase import Phase
from clustersim.collectives.pxn import expand_pxn
from clustersim.collectives.rhd import expand_pat, expand_rhd
from clustersim.collectives.ring import expand_ring
from clustersim.collectives.tree import expand_tree
from clustersim.errors import InputError, closest

__all__ = ["ALGORITHMS", "PROTOCOLS", "expand", "split_algorithm", "valid_algorithms"]

# name -> the function laying out its payload phases; the order is the order of ALGORITHMS
_EXPANDERS = {"ring": expand_ring, "tree": expand_tree, "rhd": expand_rhd,
              "direct": expand_direct, "hierarchical": expand_hierarchical,
              "multidim": expand_multidim, "nvls": expand_nvls, "sharp": expand_sharp,
              "pat": expand_pat, "pxn": expand_pxn}
ALGORITHMS = tuple(_EXPANDERS)
SIMPLE_ONLY = ("nvls", "sharp", "pat", "pxn")   # NCCL runs these with Simple only


def split_algorithm(algorithm: str) -> tuple[str, str]:
    """``("ring", "ll")`` from ``"ring/ll"``; the protocol defaults to ``simple``."""
    name, _, protocol = str(algorithm).partition("/")
    protocol = protocol or "simple"
    if name not in ALGORITHMS:
        near = closest(name, ALGORITHMS)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise InputError(f"unknown collective algorithm {algorithm!r}; {hint}(allowed: "
                         f"{', '.join(ALGORITHMS)}, optionally /simple, /ll128 or /ll, or auto)")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r} in {algorithm!r}; allowed: "
                         f"{', '.join(PROTOCOLS)}")
    if name in SIMPLE_ONLY and protocol != "simple":
        raise InputError(f"{name} runs the bulk protocol only (NCCL has no LL variant of "
                         f"it); use {name!r}")
    return name, protocol


def _payload_phases(cluster, info, op, size_bytes, name, root, matrix):
    return _EXPANDERS[name](cluster, info, op, float(size_bytes), root=root, matrix=matrix)


def valid_algorithms(cluster, group, op: str, names=None) -> list[str]:
    """Names of the algorithms (among ``names``, default all) that accept ``op`` on ``group``
    (no protocol suffix). Checking means expanding, so ask only about the names you need: a
    direct all-reduce on 4,096 chips alone is 16.8 million transfers.

    >>> from clustersim.network import build_cluster
    >>> c = build_cluster("dgx-h100", 8)
    >>> valid_algorithms(c, c.devices, "all_reduce")
    ['ring', 'tree', 'rhd', 'direct', 'nvls']
    """
    check_op(op)
    info = group_info(cluster, group)
    out = []
    for name in ALGORITHMS if names is None else [n for n in ALGORITHMS if n in names]:
        try:
            _payload_phases(cluster, info, op, 1.0, name, 0, None)
        except InputError:
            continue
        out.append(name)
    return out


def expand(cluster, group, op: str, size_bytes: float, algorithm: str, *, root: int = 0,
           matrix=None, skew: float = 1.0, calibration=None) -> list[Phase]:
    """The phases of ``op`` of ``size_bytes`` (nccl-tests convention) on ``group`` by
    ``algorithm``; an InputError says why an algorithm does not fit the group or op and which
    ones do. ``root`` (a position) is for broadcast/reduce; ``matrix`` (p x p bytes) or
    ``skew`` shapes an all_to_all (see
    :func:`clustersim.collectives.op_types.all_to_all_matrix`)."""
    check_op(op)
    if size_bytes < 0 or not np.isfinite(size_bytes):
        raise InputError(f"collective size must be a finite number of bytes >= 0, got "
                         f"{size_bytes}")
    name, protocol = split_algorithm(algorithm)
    info = group_info(cluster, group)
    if not 0 <= root < info.p:
        raise InputError(f"root {root} is not a position of a {info.p}-rank group")
    if op == "all_to_all" and matrix is None and skew != 1.0:
        matrix = all_to_all_matrix(info.p, size_bytes, skew)
    if matrix is not None:
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (info.p, info.p) or np.any(matrix < 0):
            raise InputError(f"all_to_all matrix must be {info.p} x {info.p} non-negative "
                             f"bytes, got shape {matrix.shape}")
    try:
        phases = _payload_phases(cluster, info, op, size_bytes, name, root, matrix)
    except InputError as exc:
        valid = valid_algorithms(cluster, group, op)
        raise InputError(f"{exc.message}; valid for {op} on this {info.p}-rank group: "
                         f"{', '.join(valid) or 'none'}") from None
    cal = calibration or default_calibration()
    launch = launch_latency_s(cal, name, protocol, info.p) + host_launch_s(cluster, cal)
    out = []
    for k, ph in enumerate(phases):
        factor = wire_factors(cluster, info.members, ph, name, protocol, cal)
        out.append(replace(ph, bytes=ph.bytes * factor, label=f"{name}/{protocol}: {ph.label}",
                           algorithm=name, protocol=protocol,
                           launch_s=launch if k == 0 else 0.0))
    return out


# NCCL tuning.cc: PAT's latency "still [has] a linear part": 2.8 us per rank
PAT_PER_RANK_S = 2.8e-6


def launch_latency_s(cal, name: str, protocol: str, p: int = 1) -> float:
    """The fixed latency of one collective by ``name/protocol`` on ``p`` ranks: NCCL's base
    latency of the protocol, or for in-switch reduction the switch's reduction latency
    (NCCL's NVLS ``hwLat``; its base latency is 0); PAT adds its per-rank part."""
    if name in ("nvls", "sharp"):
        return cal.in_network_latency_s[name]
    if name == "pat":
        return cal.launch(protocol) + p * PAT_PER_RANK_S
    return cal.launch(protocol)
