"""Refit the collective calibration (``collectives/calibration.yaml``) on the bundled
nccl-tests sweeps, with every parameter held inside its physical range, and report predicted
against measured on the rows fitted and, apart, on the rows held out.

Each technology of :data:`FIT_PLAN` gets its bulk efficiency, its per-hop cost under each
protocol (Simple, LL128, LL), its LL and LL128 efficiencies and, where its switches reduce,
the in-network efficiency: the values that minimise the squared log error of predicted busbw
over its fitted rows. Every value is mapped through a logistic onto its range in
:data:`clustersim.collectives.calibration.BOUNDS`, and NVLink's per-hop cost is capped at the
PCIe (``host``) figure of the same protocol, which is itself below the NET one, so no fit can
invert the transports. The host-side launch overhead of the system (``host_launch``) is
fitted with them. One row in five of each sweep (every fifth by size, starting at the
third) is held out of the fit and reported apart
(:func:`clustersim.validate.collectives.held_out_ids`). The launch latencies
are NCCL's base latencies and are not fitted.

The collectives layer only reads the values; fitting them needs the measurements and the
validation's predictions, which sit above it.
"""

from __future__ import annotations

import numpy as np

from clustersim.calibrate.nelder_mead import nelder_mead, squash, unsquash
from clustersim.collectives.calibration import BOUNDS, Calibration, default_calibration
from clustersim.validate.collectives import (HOLD_OUT_EVERY, held_out_ids, load_measurements,
                                             never_fitted_mask, predict_rows)

__all__ = ["FIT_PLAN", "HOLD_OUT_EVERY", "held_out_ids", "fit_calibration",
           "calibration_report", "fit_loss", "fit_ranges"]


# What each technology is fitted on: (tech, in-network kind or None, row id prefixes/ids).
FIT_PLAN = (("nvlink3", None, ("AZ-A100-AR-",)),
            ("nvlink4", "nvls", ("AZ-H100-AR-", "NVTEST212-RING")))
_PROTOS = ("simple", "ll128", "ll")


def _rows_for(frame, patterns):
    """The rows of ``frame`` an id prefix (ending in ``-``) or id of ``patterns`` names, never
    one tagged validation-only (:func:`clustersim.validate.collectives.never_fitted_mask`)."""
    frame = frame[~never_fitted_mask(frame)]
    ids = frame["id"].astype(str)
    mask = np.zeros(len(frame), dtype=bool)
    for pat in patterns:
        mask |= ids.str.startswith(pat).to_numpy() if pat.endswith("-") else \
            (ids == pat).to_numpy()
    return frame[mask]


def fit_ranges(cal: Calibration, kind):
    """(field, low, high) per fitted value; NVLink hops capped at the host (PCIe) figure."""
    host = cal.categories["host"]
    hop_lo, hop_hi = BOUNDS["hop_s"]
    out = [("efficiency", *BOUNDS["efficiency"])]
    out += [(f"hop_{p}_s", hop_lo, min(hop_hi, host.hop_s(p))) for p in _PROTOS]
    out += [("host_launch_s", *BOUNDS["host_launch_s"]),
            ("ll_efficiency", *BOUNDS["ll_efficiency"]),
            ("ll128_efficiency", *BOUNDS["ll128_efficiency"])]
    if kind:
        out.append(("in_network", *BOUNDS["in_network_efficiency"]))
    return out


def fit_loss(pred) -> float:
    """What the fit minimises over predicted rows: the sum of (log error)^8, so the worst
    rows, not the many mid-size ones, set the values."""
    return float(np.sum(np.log(pred["predicted_busbw_GBps"] /
                               pred["measured_busbw_GBps"]) ** 8))


def _fit_one(cal, tech, kind, rows):
    ranges = fit_ranges(cal, kind)
    t = cal.tech(tech)
    start = [cal.in_network[kind] if name == "in_network" else getattr(t, name)
             for name, _, _ in ranges]
    z0 = [unsquash(v, lo, hi) for v, (_, lo, hi) in zip(start, ranges)]
    ids = tuple(rows["id"])

    def make(z):
        vals = {name: float(squash(x, lo, hi)) for x, (name, lo, hi) in zip(z, ranges)}
        eff = vals.pop("in_network", None)
        new = cal.with_tech(tech, fitted_on=ids, estimated=False, **vals)
        return new.with_in_network(kind, eff) if kind else new

    def loss(z):
        return fit_loss(predict_rows(rows, make(z)))

    z, best = nelder_mead(loss, np.array(z0), step=0.5, iters=400)
    for _ in range(2):  # restarts: a simplex can collapse early on these ridges
        z, value = nelder_mead(loss, z, step=0.5, iters=400)
        if value > best - 1e-6:
            break
        best = value
    return make(z)


def fit_calibration(start: Calibration | None = None):
    """Re-run the fit on the bundled CSV: returns ``(calibration, report)``, the report being
    :func:`calibration_report` of the fitted values (fitted and held-out rows, marked)."""
    frame = load_measurements()
    held = set(held_out_ids(frame))
    cal = start or default_calibration()
    for tech, kind, patterns in FIT_PLAN:
        rows = _rows_for(frame, patterns)
        cal = _fit_one(cal, tech, kind, rows[~rows["id"].isin(held)])
    return cal, calibration_report(cal)


def calibration_report(cal: Calibration | None = None):
    """Predicted vs measured busbw on every row of the fitted sweeps, with ``held_out``
    True on the rows the fit never saw."""
    cal = cal or default_calibration()
    frame = load_measurements()
    rows = _rows_for(frame, [p for _, _, pats in FIT_PLAN for p in pats])
    return predict_rows(rows, cal)
