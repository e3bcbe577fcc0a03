"""Per-technology protocol calibration: bandwidth efficiency and per-step latency, fitted to
the nccl-tests sweeps bundled in ``clustersim/validate/data/collectives.csv``.

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
from clustersim.units import parse

__all__ = ["TechCalibration", "Calibration", "CALIBRATION_FILE", "load_calibration",
           "default_calibration", "tech_table", "wire_factors", "fit_calibration",
           "calibration_report"]

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
        from clustersim.hardware import get_link

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


# ------------------------------------------------------------------------------ fitting

def _nelder_mead(f, x0, step=0.25, iters=600, tol=1e-9):
    """Minimise ``f`` from ``x0`` (Nelder & Mead 1965); no scipy dependency for one fit."""
    pts = [np.array(x0, float)] + [np.array(x0, float) + step * e for e in np.eye(len(x0))]
    vals = [f(x) for x in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if vals[-1] - vals[0] < tol:
            break
        c = np.mean(pts[:-1], axis=0)
        xr = c + (c - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = c + 2 * (c - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = c + 0.5 * (pts[-1] - c)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0] + 0.5 * (x - pts[0]) for x in pts]
                vals = [f(x) for x in pts]
    best = int(np.argmin(vals))
    return pts[best], vals[best]


# What each technology is fitted on: (tech, in-network kind or None, row id prefixes/ids).
FIT_PLAN = (("nvlink3", None, ("AZ-A100-AR-",)),
            ("nvlink4", "nvls", ("AZ-H100-AR-", "NVTEST212-RING")))


def _rows_for(frame, patterns):
    ids = frame["id"].astype(str)
    mask = np.zeros(len(frame), dtype=bool)
    for pat in patterns:
        mask |= ids.str.startswith(pat).to_numpy() if pat.endswith("-") else \
            (ids == pat).to_numpy()
    return frame[mask]


def fit_calibration(start: Calibration | None = None):
    """Re-run the fit on the bundled CSV: returns ``(calibration, report)``, the report being
    :func:`calibration_report` of the fitted values (one row per fitted CSV row).

    Each technology's parameters minimise the squared log error of predicted busbw over its
    rows (the whole size sweep, so both protocols are pinned down)."""
    from clustersim.validate.collectives import load_measurements, predict_rows

    frame = load_measurements()
    cal = start or default_calibration()
    for tech, kind, patterns in FIT_PLAN:
        rows = _rows_for(frame, patterns)
        t = cal.tech(tech)
        x0 = [t.efficiency, t.alpha_simple_s * 1e6, t.alpha_ll_s * 1e6, t.ll_efficiency]
        if kind:
            x0.append(cal.in_network[kind])

        def make(x, cal=cal, tech=tech, kind=kind, ids=tuple(rows["id"])):
            v = np.exp(x)
            new = cal.with_tech(tech, efficiency=v[0], alpha_simple_s=v[1] * 1e-6,
                                alpha_ll_s=v[2] * 1e-6, ll_efficiency=min(v[3], 0.5),
                                fitted_on=ids, estimated=False)
            return new.with_in_network(kind, v[4]) if kind else new

        def loss(x, rows=rows, make=make):
            pred = predict_rows(rows, make(x))
            return float(np.sum(np.log(pred["predicted_busbw_GBps"] /
                                       pred["measured_busbw_GBps"]) ** 2))

        x, _ = _nelder_mead(loss, np.log(x0))
        cal = make(x)
    return cal, calibration_report(cal)


def calibration_report(cal: Calibration | None = None):
    """Predicted vs measured busbw on every row a technology was fitted on."""
    from clustersim.validate.collectives import load_measurements, predict_rows

    cal = cal or default_calibration()
    frame = load_measurements()
    ids = sorted({i for t in cal.techs.values() for i in t.fitted_on})
    return predict_rows(frame[frame["id"].isin(ids)], cal)
