"""Refit the compute model's training-step factors (``hardware/data/compute.yaml``) on the
published training runs bundled in ``validate/data/training_runs.csv``.

What a family's benchmark curves cannot know is how much of that throughput survives inside
a real multi-GPU step (power-capped clocks, SMs shared with NCCL, framework operand
layouts): ``training_efficiency``; for H100 the 16-bit GEMM k overhead too, because the
bundled GEMM sweep is FP8 only. :data:`TRAINING_FIT_PLAN` names, per family, the parameters
and the rows that pin them down. Each family's parameters minimise the squared log error of
the predicted step time over its rows (analytic fidelity, the same predictions ``clustersim
validate`` prints), inside the bounds of :data:`BOUNDS`.

Rows the validation lists as conflicting with their own stated configuration
(``CONFLICTING_ROWS``) are reported, never fitted on. A fifth of each family's rows is held out of the fit (:func:`held_out`: every fifth row in id
order, starting with the third) and reported apart, so the error on rows the fit never saw
is visible next to the in-sample error.

>>> [(family, params) for family, params, _ in TRAINING_FIT_PLAN]
[('h100', ('training_efficiency', 'gemm_k_overhead.default')), ('a100', ('training_efficiency',)), ('v100', ('training_efficiency',))]
>>> held_out(["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"])
('r3', 'r8')
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import numpy as np
import pandas as pd

from clustersim.calibrate.nelder_mead import nelder_mead, squash, unsquash
from clustersim.hardware import compute
from clustersim.validate.training import CONFLICTING_ROWS, load_runs, predict_runs

__all__ = ["TRAINING_FIT_PLAN", "BOUNDS", "held_out", "family_rows", "current_values",
           "trial_values", "fit_training", "training_report", "cross_validate"]

# (family, parameters, row-id prefixes): which published runs pin down which parameters.
TRAINING_FIT_PLAN = (
    ("h100", ("training_efficiency", "gemm_k_overhead.default"), ("MCORE24-",)),
    ("a100", ("training_efficiency",), ("MLM20-A100", "NAR21-")),
    ("v100", ("training_efficiency",), ("MLM20-V100",)),
)

# Physical range of each fitted parameter (its bound is part of `clustersim calibrate --check`).
BOUNDS = {
    # Upper: a framework cannot run faster than the kernels it calls. Lower (a judgement,
    # not a measurement): NCCL takes at most 32 channels (NCCL's MAXCHANNELS), one SM each,
    # of H100's 132 SMs (24%), and the clock under the 700 W cap stays above 1.5 of the
    # 1.98 GHz boost (datasheet); together they cannot halve the kernels' throughput.
    "training_efficiency": (0.5, 1.0),
    # The k-dimension padding of a tiled GEMM, from none to 2048 elements (16 of cuBLAS's
    # 128-deep k tiles of prologue and epilogue per output tile: a generous judgement).
    "gemm_k_overhead.default": (0.0, 2048.0),
}


def held_out(ids) -> tuple[str, ...]:
    """The rows kept out of a fit: every fifth in id order, starting with the third."""
    ordered = sorted(ids, key=_natural)
    return tuple(ordered[i] for i in range(2, len(ordered), 5))


def _natural(row_id: str):
    return [int(p) if p.isdigit() else p for p in str(row_id).replace("-", " ").split()]


def family_rows(prefixes, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The bundled runs whose ids start with one of ``prefixes``."""
    frame = load_runs() if frame is None else frame
    return frame[frame["id"].astype(str).str.startswith(tuple(prefixes))]


def current_values(family: str, params) -> dict[str, float]:
    """The committed values of ``params`` (``a.b`` reaches into a per-dtype mapping)."""
    entry = compute.compute_families()[family]
    out = {}
    for name in params:
        field, _, key = name.partition(".")
        value = getattr(entry, field)
        out[name] = float(value[key] if key and isinstance(value, dict) else value)
    return out


def _forget() -> None:
    # every cache of a compute time or what it is made of registers with the compute model
    # (hardware.compute.calibrated_cache); step plans and templates are keyed by value
    compute.clear_caches()


@contextmanager
def trial_values(family: str, values: dict[str, float]):
    """Run the block with ``family``'s parameters set to ``values`` (restored after)."""
    families = compute.compute_families()
    original = families[family]
    update = {}
    for name, value in values.items():
        field, _, key = name.partition(".")
        if key:
            current = getattr(original, field)
            base = dict(current) if isinstance(current, dict) else {"default": current}
            update[field] = {**update.get(field, base), key: value}
        else:
            update[field] = value
    families[family] = original.model_copy(update=update)
    _forget()
    try:
        yield
    finally:
        families[family] = original
        _forget()


def _fit_family(family: str, params, rows: pd.DataFrame) -> dict[str, float]:
    start = current_values(family, params)
    x0 = [unsquash(start[p], *BOUNDS[p]) for p in params]

    def values(x):
        return {p: float(squash(v, *BOUNDS[p])) for p, v in zip(params, x)}

    def loss(x):
        with trial_values(family, values(x)):
            pred = predict_runs(rows, fidelity="analytic")
        ratio = (pred["predicted_step_s"] / pred["measured_step_s"]).to_numpy(float)
        return float(np.sum(np.log(ratio) ** 2)) if np.all(ratio > 0) else float("inf")

    x, _ = nelder_mead(loss, x0, step=0.5, iters=60 * len(params), tol=1e-8)
    return values(x)


def fit_training() -> tuple[dict[str, dict[str, float]], pd.DataFrame]:
    """Refit every family of :data:`TRAINING_FIT_PLAN`: ``(values per family, report)``, the
    report being :func:`training_report` of the fitted values."""
    frame = load_runs()
    fitted = {}
    for family, params, prefixes in TRAINING_FIT_PLAN:
        rows = family_rows(prefixes, frame)
        keep = rows[~rows["id"].isin(held_out(rows["id"]) + tuple(CONFLICTING_ROWS))]
        fitted[family] = _fit_family(family, params, keep)
    return fitted, training_report(fitted, frame)


def _role(row_id: str, ids) -> str:
    if row_id in CONFLICTING_ROWS:
        return "conflicting"
    return "held-out" if row_id in held_out(ids) else "fitted"


def training_report(fitted: dict[str, dict[str, float]] | None = None,
                    frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Predicted against measured step time on every row of the plan, each marked
    ``fitted`` or ``held-out``, under ``fitted`` values (default: the committed ones)."""
    frame = load_runs() if frame is None else frame
    parts = []
    for family, params, prefixes in TRAINING_FIT_PLAN:
        rows = family_rows(prefixes, frame)
        values = (fitted or {}).get(family) or current_values(family, params)
        with trial_values(family, values):
            pred = predict_runs(rows, fidelity="analytic")
        pred.insert(1, "family", family)
        pred.insert(2, "role", [_role(i, rows["id"]) for i in pred["id"]])
        parts.append(pred)
    return pd.concat(parts, ignore_index=True)


def _prior(family: str, param: str, fitted: dict) -> float:
    """A parameter's value when no row of the fit speaks for its family: the training
    efficiency of the families that were fitted (their mean), the k overhead of the family's
    own measured benchmark curve (its FP8 sweep)."""
    if param == "training_efficiency":
        return float(np.mean([v["training_efficiency"] for v in fitted.values()]))
    if param == "gemm_k_overhead.default":
        return compute.compute_families()[family].k_overhead("fp8")
    raise KeyError(param)


@contextmanager
def _trial_all(values: dict[str, dict[str, float]]):
    with ExitStack() as stack:
        for family, v in values.items():
            stack.enter_context(trial_values(family, v))
        yield


def cross_validate() -> pd.DataFrame:
    """Leave one source out: each publication's rows predicted by a calibration fitted on the
    other publications only (a family none of them covers takes :func:`_prior`). One row
    per run with ``left_out`` (its source) and the error."""
    frame = load_runs()
    frame = frame[~frame["id"].isin(list(CONFLICTING_ROWS))]
    sources = frame["id"].astype(str).str.split("-").str[0]
    parts = []
    for source in sorted(sources.unique()):
        rest = frame[sources != source]
        fitted = {}
        for family, params, prefixes in TRAINING_FIT_PLAN:
            rows = family_rows(prefixes, rest)
            if len(rows):
                fitted[family] = _fit_family(family, params, rows)
        for family, params, _ in TRAINING_FIT_PLAN:
            if family not in fitted:
                fitted[family] = {p: _prior(family, p, fitted) for p in params}
        with _trial_all(fitted):
            pred = predict_runs(frame[sources == source], fidelity="analytic")
        parts.append(pred.assign(left_out=source))
    return pd.concat(parts, ignore_index=True)
