"""Refit the collective calibration (``collectives/calibration.yaml``) on the bundled
nccl-tests sweeps, and report predicted against measured on the rows each technology was
fitted on.

Each technology of :data:`FIT_PLAN` gets its bulk efficiency, both per-step latencies, its LL
efficiency (capped at the LL format's 0.5) and, where its switches reduce, the in-network
efficiency: the values that minimise the squared log error of predicted busbw over its rows.
The collectives layer only reads the values; fitting them needs the measurements and the
validation's predictions, which sit above it.
"""

from __future__ import annotations

import numpy as np

from clustersim.calibrate.nelder_mead import nelder_mead
from clustersim.collectives.calibration import Calibration, default_calibration
from clustersim.validate.collectives import load_measurements, predict_rows

__all__ = ["FIT_PLAN", "fit_calibration", "calibration_report"]


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

        x, _ = nelder_mead(loss, np.log(x0))
        cal = make(x)
    return cal, calibration_report(cal)


def calibration_report(cal: Calibration | None = None):
    """Predicted vs measured busbw on every row a technology was fitted on."""
    cal = cal or default_calibration()
    frame = load_measurements()
    ids = sorted({i for t in cal.techs.values() for i in t.fitted_on})
    return predict_rows(frame[frame["id"].isin(ids)], cal)
