"""Per-technology protocol calibration: bandwidth efficiency and per-step latency, fitted to
the nccl-tests sweeps bundled in ``clustersim/validate/data/collectives.csv``. This module
reads the fitted values; :mod:`clustersim.calibrate.collectives` refits them.

Physical model (2-4 numbers per link technology, ``calibration.yaml``):

- ``efficiency``: the fraction of a link's raw rate the bulk protocol (NCCL "Simple") moves
  as payload (headers, flow control, the copy engine's limits). Every link's effective
  capacity is ``capacity * efficiency`` (:func:`clustersim.collectives.cost.effective_capacity_Bps`).
- ``alpha_simple``: per-step latency of the bulk protocol (kernel launch share,
  synchronisation, and filling a chunk pipeline before data flows).
- ``alpha_ll`` and ``ll_efficiency``: NCCL's low-latency protocol (LL) pays less per step but
  moves fewer payload bytes per wire byte: an LL line is 4 data bytes + a 4-byte flag, so at
  most 0.5; small messages also run on few channels, which lowers it further. Its transfers
  carry ``payload / ll_efficiency`` wire bytes.
- ``in_network.<kind>.efficiency``: the fraction of the raw port rate at which a switch
  reduces (NVLS, SHARP); in-switch transfers carry ``payload * efficiency(link) /
  efficiency(kind)`` wire bytes.

A route crossing several technologies takes the largest per-step latency and the smallest
efficiencies of its links. Technologies without fitted values fall back to their category's
documented default (``categories:``), flagged ``estimated``.

>>> cal = default_calibration()
>>> t = cal.tech("nvlink3")
>>> 0.6 < t.efficiency < 0.9, t.fitted_on[0].startswith("AZ-A100")
(True, True)
>>> cal.tech("ib-ndr").efficiency
0.94
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from clustersim.errors import InputError
from clustersim.hardware.catalog import get_link
from clustersim.units import parse

__all__ = ["TechCalibration", "Calibration", "CALIBRATION_FILE", "load_calibration",
           "default_calibration", "tech_table", "wire_factors"]

CALIBRATION_FILE = Path(__file__).with_name("calibration.yaml")


@dataclass(frozen=True)
class TechCalibration:
    efficiency: float
    alpha_simple_s: float
    alpha_ll_s: float
    ll_efficiency: float
    fitted_on: tuple = ()
    estimated: bool = False


@dataclass(frozen=True, eq=False)
class Calibration:
    """Fitted and default values; compared by identity (caches key on it)."""

    techs: dict = field(default_factory=dict)
    categories: dict = field(default_factory=dict)
    in_network: dict = field(default_factory=dict)
    memory_efficiency: float = 0.9

    def tech(self, name: str) -> TechCalibration:
        found = self.techs.get(name)
        if found is not None:
            return found
        category = get_link(name).category
        if category not in self.categories:
            raise InputError(f"no collective calibration for link technology {name!r} "
                             f"(category {category}); add it to {CALIBRATION_FILE.name}")
        return self.categories[category]

    def with_tech(self, name: str, **values) -> Calibration:
        """A copy with some values of one technology replaced (for fits and what-ifs)."""
        techs = dict(self.techs)
        techs[name] = replace(self.tech(name), **values)
        return replace(self, techs=techs)

    def with_in_network(self, kind: str, efficiency: float) -> Calibration:
        return replace(self, in_network={**self.in_network, kind: efficiency})


def _entry(d: dict) -> TechCalibration:
    return TechCalibration(float(d["efficiency"]), parse(str(d["alpha_simple"]), "time"),
                           parse(str(d["alpha_ll"]), "time"), float(d["ll_efficiency"]),
                           tuple(d.get("fitted_on", ())), bool(d.get("estimated", False)))


def load_calibration(path: str | Path = CALIBRATION_FILE) -> Calibration:
    """Read a calibration YAML (the bundled one by default)."""
    data = yaml.safe_load(Path(path).read_text())
    return Calibration({k: _entry(v) for k, v in data["technologies"].items()},
                       {k: _entry(v) for k, v in data["categories"].items()},
                       {k: float(v["efficiency"]) for k, v in data["in_network"].items()},
                       float(data["memory"]["efficiency"]))


@functools.cache
def default_calibration() -> Calibration:
    """The bundled calibration (read once)."""
    return load_calibration()


_TABLES: dict = {}


def tech_table(cluster, cal: Calibration) -> np.ndarray:
    """``[n_techs, 4]`` array over ``cluster.links.techs``: efficiency, alpha_simple_s,
    alpha_ll_s, ll_efficiency."""
    key = (id(cluster), id(cal))
    hit = _TABLES.get(key)
    if hit is not None and hit[0] is cluster and hit[1] is cal:
        return hit[2]
    rows = []
    for name in cluster.links.techs:
        t = cal.tech(name)
        rows.append((t.efficiency, t.alpha_simple_s, t.alpha_ll_s, t.ll_efficiency))
    table = np.array(rows, dtype=np.float64).reshape(-1, 4)
    if len(_TABLES) > 256:
        _TABLES.clear()
    _TABLES[key] = (cluster, cal, table)
    return table


def wire_factors(cluster, members, phase, name: str, protocol: str,
                 cal: Calibration) -> np.ndarray:
    """Wire bytes per payload byte of each transfer of ``phase`` (see module docstring)."""
    n = len(phase.src)
    if protocol == "simple" and name not in ("nvls", "sharp"):
        return np.ones(n)
    table = tech_table(cluster, cal)
    out = np.empty(n)
    for k in range(n):
        links, _, _ = cluster.route(members[phase.src[k]], members[phase.dst[k]])
        techs = cluster.links.tech_id[links]
        if name in ("nvls", "sharp"):
            out[k] = table[techs, 0].min() / cal.in_network[name]
        else:
            out[k] = 1.0 / table[techs, 3].min()
    return out
