"""Phases: what an algorithm turns a collective into, and the one entry point :func:`expand`.

A collective on a group is a list of phases run one after another. A phase is a set of
concurrent transfers between group positions plus the number of sequential algorithm steps it
contains (each pays the per-step latency) and the bytes each rank reduces in it. A pipelined
ring all-reduce is one phase: every rank sends ``2(p-1)/p * S`` to its successor over
``2(p-1)`` steps.

Algorithm names are ``NAME`` or ``NAME/PROTOCOL``: ``ring``, ``tree``, ``rhd``, ``direct``,
``hierarchical``, ``multidim``, ``nvls``, ``sharp``; protocols ``simple`` (bulk, the default)
and ``ll`` (NCCL's low-latency protocol: lower per-step latency, fewer payload bytes per wire
byte). Transfers carry **wire** bytes: payload divided by the protocol's efficiency (see
``calibration.yaml``), so the flow engine needs no protocol knowledge. Each phase's ``label``
starts with ``"ALGORITHM/PROTOCOL:"``; :func:`phase_protocol` reads it back, and
``cost.phase_latency_s`` uses it to pick the protocol's per-step latency.

>>> from clustersim.topology import build_cluster
>>> c = build_cluster("dgx-a100", 8)
>>> [ph] = expand(c, c.devices, "all_reduce", 8e6, "ring")
>>> ph.steps, ph.src.tolist(), ph.dst.tolist()[:3], float(ph.bytes[0])
(14, [0, 1, 2, 3, 4, 5, 6, 7], [1, 2, 3], 14000000.0)
>>> ph.label
'ring/simple: all_reduce'
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from clustersim.errors import InputError, closest

__all__ = ["Phase", "ALGORITHMS", "PROTOCOLS", "expand", "phase_protocol", "split_algorithm",
           "make_phase", "valid_algorithms"]

PROTOCOLS = ("simple", "ll")


@dataclass(frozen=True)
class Phase:
    src: np.ndarray      # int64, positions in the group (0..p-1) of each transfer's sender
    dst: np.ndarray      # int64, receiver positions
    bytes: np.ndarray    # float64, bytes of each transfer
    steps: int           # sequential algorithm steps inside the phase (each pays the per-step latency)
    reduce_bytes: float = 0.0   # bytes each rank reduces in this phase (reduction compute cost)
    label: str = ""


def make_phase(pairs, steps: int, reduce_bytes: float = 0.0, label: str = "") -> Phase:
    """A phase from ``[(src, dst, bytes), ...]``; zero-byte and self transfers are dropped."""
    kept = [(s, d, b) for s, d, b in pairs if s != d and b > 0]
    src = np.fromiter((s for s, _, _ in kept), dtype=np.int64, count=len(kept))
    dst = np.fromiter((d for _, d, _ in kept), dtype=np.int64, count=len(kept))
    nbytes = np.fromiter((b for _, _, b in kept), dtype=np.float64, count=len(kept))
    return Phase(src, dst, nbytes, int(steps), float(reduce_bytes), label)


def phase_protocol(phase: Phase) -> str:
    """The protocol named in a phase's label (``simple`` when it names none).

    >>> phase_protocol(make_phase([(0, 1, 1.0)], 1, label="ring/ll: all_gather"))
    'll'
    """
    head = phase.label.split(":", 1)[0]
    return head.split("/", 1)[1] if "/" in head else "simple"


def split_algorithm(algorithm: str) -> tuple[str, str]:
    """``("ring", "ll")`` from ``"ring/ll"``; the protocol defaults to ``simple``."""
    name, _, protocol = str(algorithm).partition("/")
    protocol = protocol or "simple"
    if name not in ALGORITHMS:
        near = closest(name, ALGORITHMS)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise InputError(f"unknown collective algorithm {algorithm!r}; {hint}(allowed: "
                         f"{', '.join(ALGORITHMS)}, optionally /ll or /simple, or auto)")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r} in {algorithm!r}; allowed: "
                         f"{', '.join(PROTOCOLS)}")
    if name in ("nvls", "sharp") and protocol != "simple":
        raise InputError(f"{name} runs the bulk protocol only (NCCL has no LL variant of "
                         f"in-switch reduction); use {name!r}")
    return name, protocol


def _algorithms() -> dict:
    from clustersim.collectives import direct, hierarchical, innetwork, rhd, ring, tree

    return {"ring": ring.expand_ring, "tree": tree.expand_tree, "rhd": rhd.expand_rhd,
            "direct": direct.expand_direct, "hierarchical": hierarchical.expand_hierarchical,
            "multidim": hierarchical.expand_multidim, "nvls": innetwork.expand_nvls,
            "sharp": innetwork.expand_sharp}


ALGORITHMS = ("ring", "tree", "rhd", "direct", "hierarchical", "multidim", "nvls", "sharp")


def _payload_phases(cluster, info, op, size_bytes, name, root, matrix):
    return _algorithms()[name](cluster, info, op, float(size_bytes), root=root, matrix=matrix)


def valid_algorithms(cluster, group, op: str, names=None) -> list[str]:
    """Names of the algorithms (among ``names``, default all) that accept ``op`` on ``group``
    (no protocol suffix). Checking means expanding, so ask only about the names you need: a
    direct all-reduce on 4,096 chips alone is 16.8 million transfers.

    >>> from clustersim.topology import build_cluster
    >>> c = build_cluster("dgx-h100", 8)
    >>> valid_algorithms(c, c.devices, "all_reduce")
    ['ring', 'tree', 'rhd', 'direct', 'nvls']
    """
    from clustersim.collectives.groups import group_info
    from clustersim.collectives.ops import check_op

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
    ``skew`` shapes an all_to_all (see :func:`clustersim.collectives.ops.all_to_all_matrix`)."""
    from clustersim.collectives.calibration import default_calibration, wire_factors
    from clustersim.collectives.groups import group_info
    from clustersim.collectives.ops import all_to_all_matrix, check_op

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
    out = []
    for ph in phases:
        factor = wire_factors(cluster, info.members, ph, name, protocol, cal)
        out.append(replace(ph, bytes=ph.bytes * factor, label=f"{name}/{protocol}: {ph.label}"))
    return out
