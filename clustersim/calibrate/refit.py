"""Every fitted number in the catalog, refitted from the bundled measurements: what
``clustersim calibrate`` writes and what ``clustersim calibrate --check`` compares.

A :class:`FittedValue` is one number of one catalog file with its committed value, its refit
and its physical bounds; :data:`REFITS` names the fits (training factors of the compute
model, collective calibration), each returning its values and the report of predicted
against measured on the rows it was fitted on and the rows held out of it.

>>> v = FittedValue("compute.yaml", ("h100", "training_efficiency"), 0.80, 0.803, (0.5, 1.0))
>>> v.problems(tolerance=0.01)
[]
>>> FittedValue("calibration.yaml", ("nvlink4", "ll_efficiency"), 0.02, 0.0202, (0.25, 0.5)
...             ).problems(0.05)   # doctest: +NORMALIZE_WHITESPACE
['calibration.yaml nvlink4.ll_efficiency: committed 0.02 lies outside its bounds [0.25, 0.5]',
 'calibration.yaml nvlink4.ll_efficiency: refit 0.0202 lies outside its bounds [0.25, 0.5]']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clustersim.calibrate import collectives, training
from clustersim.calibrate.catalog_files import rounded, write_values
from clustersim.collectives import calibration
from clustersim.hardware import compute

__all__ = ["FittedValue", "REFITS", "refit", "write_refits", "summary", "COMPUTE_FILE",
           "COLLECTIVES_FILE"]

COMPUTE_FILE = Path(compute.__file__).parent / "data" / "compute.yaml"
COLLECTIVES_FILE = calibration.CALIBRATION_FILE


@dataclass(frozen=True)
class FittedValue:
    """One fitted number: where it lives, what is committed, what the refit gives."""

    file: str | Path
    keys: tuple
    committed: float
    refit: float
    bounds: tuple[float, float]
    unit: str = ""          # written as "<value> <unit>" (latencies: "us")
    scale: float = 1.0      # refit / scale is what the file holds (seconds -> us: 1e-6)

    @property
    def name(self) -> str:
        return f"{Path(self.file).name} {'.'.join(self.keys)}"

    def problems(self, tolerance: float) -> list[str]:
        """What ``--check`` refuses: a refit that moved, a value out of its bounds."""
        out = []
        low, high = self.bounds
        for label, value in (("committed", self.committed), ("refit", self.refit)):
            if not low <= value <= high:
                out.append(f"{self.name}: {label} {value:.4g} lies outside its bounds "
                           f"[{low:.4g}, {high:.4g}]")
        moved = abs(self.refit - self.committed) / max(abs(self.committed), 1e-300)
        if moved > tolerance:
            out.append(f"{self.name}: committed {self.committed:.4g}, refit "
                       f"{self.refit:.4g} ({moved:+.1%}); run `clustersim calibrate`")
        return out

    def written(self):
        value = rounded(self.refit / self.scale)
        return f"{value:.4g} {self.unit}" if self.unit else value


def _training():
    fitted, report = training.fit_training()
    values, extra = [], {}
    for family, params, _ in training.TRAINING_FIT_PLAN:
        committed = training.current_values(family, params)
        for param in params:
            values.append(FittedValue(COMPUTE_FILE, (family, *param.split(".")),
                                      committed[param], fitted[family][param],
                                      training.BOUNDS[param]))
        rows = report[(report["family"] == family) & (report["role"] == "fitted")]
        extra[(COMPUTE_FILE, (family, "training_efficiency_fitted_on"))] = list(rows["id"])
    return values, extra, report, []


def _collectives():
    committed = calibration.default_calibration()
    fitted, report = collectives.fit_calibration()
    kept = collectives.calibration_report(committed)
    # several values barely move the fit (LL128's efficiency on a sweep that LL128 hardly
    # wins): a refit that does not lower the loss by 0.1% leaves the committed values, so the
    # committed ones are checked for being an optimum, not for being the one a simplex found
    if collectives.fit_loss(report[~report["held_out"]]) > \
            (1 - 1e-3) * collectives.fit_loss(kept[~kept["held_out"]]):
        fitted, report = committed, kept
    values, extra = [], {}
    for tech, kind, _ in collectives.FIT_PLAN:
        for name, low, high in collectives.fit_ranges(committed, kind):
            if name == "in_network":
                values.append(FittedValue(COLLECTIVES_FILE, ("in_network", kind, "efficiency"),
                                          committed.in_network[kind], fitted.in_network[kind],
                                          (low, high)))
                continue
            seconds = name.endswith("_s")
            values.append(FittedValue(
                COLLECTIVES_FILE, ("technologies", tech, name[:-2] if seconds else name),
                getattr(committed.tech(tech), name), getattr(fitted.tech(tech), name),
                (low, high), unit="us" if seconds else "", scale=1e-6 if seconds else 1.0))
        extra[(COLLECTIVES_FILE, ("technologies", tech, "fitted_on"))] = list(
            fitted.tech(tech).fitted_on)
    report = report.assign(role=report["held_out"].map({True: "held-out", False: "fitted"}))
    problems = calibration.check_bounds(committed) + calibration.check_bounds(fitted)
    return values, extra, report, sorted(set(problems))


# name -> () -> (fitted values, other updates {(file, keys): value}, report frame, problems
# no single value shows: the ordering of transports, say)
REFITS = {"training": _training, "collectives": _collectives}


def refit(only: str | None = None):
    """Run the fits (all, or ``only`` one): ``(values, extra updates, {name: report},
    problems)``."""
    values, extra, reports, problems = [], {}, {}, []
    for name, fit in REFITS.items():
        if only in (None, name):
            v, e, report, p = fit()
            values += v
            extra.update(e)
            reports[name] = report
            problems += p
    return values, extra, reports, problems


def write_refits(values, extra) -> list[Path]:
    """Write every refitted value (and the fitted-on lists) into its file."""
    by_file: dict[Path, dict] = {}
    for v in values:
        by_file.setdefault(Path(v.file), {})[v.keys] = v.written()
    for (file, keys), value in extra.items():   # e.g. the ids a value was fitted on
        by_file.setdefault(Path(file), {})[keys] = value
    for file, updates in by_file.items():
        write_values(file, updates)
    return list(by_file)


def summary(report: pd.DataFrame, error: str = "error") -> pd.DataFrame:
    """Median and max absolute error per role (fitted, held-out, ...)."""
    return report.assign(abs_error=report[error].abs()).groupby("role")["abs_error"].agg(
        rows="count", median="median", max="max")
