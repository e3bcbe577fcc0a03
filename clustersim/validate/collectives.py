"""Predict every row of the bundled nccl-tests measurements (``data/collectives.csv``, a copy
of the project's ground-truth file with its source columns) and report the error.

How a row becomes a prediction:

- the system: A100 rows on ``dgx-a100``, H100 rows on ``dgx-h100``, MI300X rows on
  ``mi300x-node``, MI325X rows on ``mi325x-node``, MI250X rows on ``mi250x-frontier``, sized to
  the row's accelerator count; rows whose nodes had 4 NICs per 8 GPUs get
  ``scale_out.nics_per_node: 4``;
- the algorithm: ``nccl`` (what NCCL's tuner would pick, charged at this model's price;
  :mod:`clustersim.collectives.nccl_tuner`) for "NCCL default" rows, ``nvls`` where a
  row names NVLS/SHARP on H100, ``ring`` where it names NCCL_ALGO=RING or "no SHARP";
  "RCCL default" rows are priced as ``nccl`` too (RCCL shares NCCL's tuner; its MSCCL/MSCCL++
  paths for small sizes on MI300X are not modelled);
- the size: the row's ``msg_bytes``; rows reporting a peak without a size are priced at
  ``PEAK_SIZE_B`` (4 GiB, past every bandwidth knee) unless the row states one (``up to 1 GB``
  -> 1 GiB, ``up to 128 MB`` -> 128 MiB, ``~1 GB/device`` -> 1 GiB);
- busbw as nccl-tests defines it; the NDR row reports busbw per NIC, so the prediction is
  divided by the NICs per node.

Rows whose ``source`` starts with :data:`NEVER_FITTED_TAG` (the RCCL rows on MI300X/MI325X) are
validation only: no calibration is fitted on them, they are never picked as held-out rows, and
they are reported under their own role, ``never fitted (tagged)``.

>>> frame = predict_rows(load_measurements().head(2))
>>> list(frame.columns)[:4]
['id', 'system', 'collective', 'devices']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clustersim.collectives.calibration import as_timed_by_host, default_calibration
from clustersim.collectives.op_types import bus_factor
from clustersim.collectives.select import price
from clustersim.network.cluster import build_cluster

__all__ = ["DATA_FILE", "PEAK_SIZE_B", "HOLD_OUT_EVERY", "NEVER_FITTED_TAG", "TAGGED_ROLE",
           "load_measurements", "held_out_ids", "never_fitted_mask", "row_spec", "predict_rows",
           "collective_validation", "summarize"]

DATA_FILE = Path(__file__).parent / "data" / "collectives.csv"
PEAK_SIZE_B = 4 * 2**30
# A row whose ``source`` starts with this is validation only: never fitted, never held out.
NEVER_FITTED_TAG = "[never fitted]"
TAGGED_ROLE = "never fitted (tagged)"
# Accelerator-name substring -> the preset its rows are priced on (first match wins).
_TOPOLOGY_BY_ACCEL = (("H100", "dgx-h100"), ("MI300X", "mi300x-node"), ("MI325X", "mi325x-node"),
                      ("MI250X", "mi250x-frontier"))

# Rows whose text needs reading by a human: (size, algorithm, overrides, busbw divisor, note)
_SPECIAL = {
    "NVTEST175-2N": (2**30, "nccl", {"scale_out.nics_per_node": 4}, 1,
                     "size not given: 1 GiB assumed; 4 HDR NICs per node"),
    "NVTEST119-3N": (2**27, "nccl", {"scale_out.nics_per_node": 4}, 1,
                     "peak over sizes up to 128 MB: 128 MiB; 4 HDR NICs per node"),
    "NVTEST149-1N": (2**30, "nccl", {}, 1, "peak over sizes up to 1 GB: 1 GiB"),
    "NVTEST290-NDR": (PEAK_SIZE_B, "ring", {}, 8, "busbw per NIC: ring busbw / 8 NICs"),
    "SCALEBOOK-H100-AR": (2**30, "ring", {}, 1, "ring/tree without SHARP at ~1 GB"),
}


def load_measurements(path: str | Path = DATA_FILE) -> pd.DataFrame:
    """The bundled measurement table, as published (source columns kept)."""
    return pd.read_csv(path)


HOLD_OUT_EVERY = 5


def never_fitted_mask(frame: pd.DataFrame) -> np.ndarray:
    """True on the rows tagged :data:`NEVER_FITTED_TAG` (validation only).

    >>> int(never_fitted_mask(load_measurements()).sum()) > 0
    True
    """
    return frame["source"].astype(str).str.startswith(NEVER_FITTED_TAG).to_numpy()


def held_out_ids(frame: pd.DataFrame | None = None) -> list[str]:
    """Ids of the rows no calibration is fitted on: in every sweep (rows sharing an id prefix)
    of at least :data:`HOLD_OUT_EVERY` rows, ordered by size, every fifth row starting at the
    third, so both ends of a sweep (which pin latency and bandwidth) stay fitted. Rows tagged
    :data:`NEVER_FITTED_TAG` are not candidates (they are outside every fit already).

    >>> ids = held_out_ids()
    >>> len(ids), ids[:2]
    (10, ['AZ-A100-AR-4K', 'AZ-A100-AR-132K'])
    """
    frame = load_measurements() if frame is None else frame
    frame = frame[~never_fitted_mask(frame)]
    sweep = frame["id"].astype(str).str.rsplit("-", n=1).str[0]
    out = []
    for _, rows in frame.groupby(sweep, sort=False):
        if len(rows) >= HOLD_OUT_EVERY:
            ordered = rows.sort_values("msg_bytes", kind="stable")["id"].tolist()
            out += ordered[2::HOLD_OUT_EVERY]
    return out


def row_spec(row) -> dict:
    """How to predict one row: topology, devices, overrides, op, size, algorithm, divisor."""
    accel = str(row["accel"])
    topology = next((t for key, t in _TOPOLOGY_BY_ACCEL if key in accel), "dgx-a100")
    op = str(row["collective"])
    op = "send_recv" if op == "sendrecv" else "all_reduce" if "allreduce" in op.replace(
        "_", "") or op.startswith("non-allreduce") else op
    mode = f"{row['algo_or_mode']} {row['collective']}"
    algorithm = "nccl"
    if "NCCL default" in mode:
        algorithm = "nccl"
    elif "NVLS" in mode and "H100" in accel:
        algorithm = "nvls"
    elif "RING" in mode.upper().replace("RING/TREE", "") or "no SHARP" in mode:
        algorithm = "ring"
    size = row["msg_bytes"]
    size = float(size) if pd.notna(size) and str(size).strip() else float(PEAK_SIZE_B)
    spec = dict(topology=topology, devices=int(row["num_accel"]), overrides={}, op=op,
                size_bytes=size, algorithm=algorithm, divisor=1, note="")
    special = _SPECIAL.get(str(row["id"]))
    if special:
        spec.update(size_bytes=float(special[0]), algorithm=special[1], overrides=special[2],
                    divisor=special[3], note=special[4])
    return spec


def predict_rows(frame: pd.DataFrame, calibration=None) -> pd.DataFrame:
    """One row per measurement: predicted and measured busbw (GB/s), time and the error
    (``predicted / measured - 1``). Timed as nccl-tests times a call: the host-side launch
    counted (:func:`clustersim.collectives.calibration.as_timed_by_host`)."""
    calibration = as_timed_by_host(calibration or default_calibration())
    records = []
    specs = [row_spec(row) for _, row in frame.iterrows()]
    # one price() call per (cluster, op, algorithm) so each sweep is one kernel call
    groups: dict = {}
    for i, spec in enumerate(specs):
        key = (spec["topology"], spec["devices"], tuple(sorted(spec["overrides"].items())),
               spec["op"], spec["algorithm"])
        groups.setdefault(key, []).append(i)
    predicted = [None] * len(specs)
    for (topology, devices, overrides, op, algorithm), idx in groups.items():
        cluster = build_cluster(topology, devices, dict(overrides))
        sizes = [specs[i]["size_bytes"] for i in idx]
        times, algos = price(cluster, cluster.devices, op, sizes, algorithm,
                             calibration=calibration)
        factor = bus_factor(op, devices)
        for i, t, a in zip(idx, times, algos):
            predicted[i] = (float(t), str(a), specs[i]["size_bytes"] / t * factor / 1e9
                            / specs[i]["divisor"])
    for (_, row), spec, (t, algo, busbw) in zip(frame.iterrows(), specs, predicted):
        measured = float(row["busbw_GBps"])
        records.append({
            "id": row["id"], "system": row["system"], "collective": spec["op"],
            "devices": spec["devices"], "size_bytes": spec["size_bytes"], "algorithm": algo,
            "measured_busbw_GBps": measured, "predicted_busbw_GBps": busbw,
            "error": busbw / measured - 1.0,
            "measured_time_us": float(row["time_us"]) if pd.notna(row["time_us"]) else np.nan,
            "predicted_time_us": t * 1e6, "assumption": spec["note"],
        })
    out = pd.DataFrame.from_records(records)
    if not len(out):
        return out.assign(held_out=[], role=[])
    cal = calibration or default_calibration()
    fitted = {i for t in cal.techs.values() for i in t.fitted_on}
    held = out["id"].isin(set(held_out_ids()))
    role = np.where(held, "held out", np.where(out["id"].isin(fitted), "fitted", "never fitted"))
    role = np.where(never_fitted_mask(frame), TAGGED_ROLE, role)
    return out.assign(held_out=held, role=role)


def collective_validation(calibration=None) -> pd.DataFrame:
    """Every bundled row predicted: what ``clustersim validate`` prints for collectives."""
    return predict_rows(load_measurements(), calibration)


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Max and median |error| per sweep (row id prefix) and size band, and over the rows
    fitted, held out of the fit (:func:`held_out_ids`) and never fitted, apart."""
    key = frame["id"].str.extract(r"^([A-Z]+-[A-Za-z0-9]+)")[0]
    band = np.where(frame["size_bytes"] <= 2**16, "<=64KiB",
                    np.where(frame["size_bytes"] >= 2**26, ">=64MiB", "mid"))
    out = frame.assign(sweep=key, band=band, abs_error=frame["error"].abs())
    table = out.groupby(["sweep", "band"])["abs_error"].agg(["count", "max", "median"])
    overall = out.groupby("role")["abs_error"].agg(["count", "max", "median"])
    overall.index = pd.MultiIndex.from_tuples([("all rows", k) for k in overall.index])
    return pd.concat([table, overall])
