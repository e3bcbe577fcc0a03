"""Predict published runs of today's techniques, never fitted: zero-bubble pipeline schedules
and FP8 training (``data/frontier_runs.csv``, columns in ``docs/frontier-runs.md``).

These rows stay out of every calibration (:mod:`clustersim.calibrate.training` reads
``training_runs.csv`` only): they test what the simulator predicts for techniques it was not
fitted on. Each row's measured throughput is turned back into the step time it implies and
compared with the predicted step time, like :mod:`clustersim.validate.training`:

- ``ZB24`` (Qi et al., ICLR 2024, Table 4): samples per GPU per second, so
  measured step = global batch / (rate x GPUs).
- ``TT24`` (torchtitan H100 benchmarks, Dec 2024), ``TT25`` (torchtitan Async TP benchmarks
  on the same H100s, June 2025) and ``TTMX25`` (torchtitan's MXFP8 MoE benchmark, Llama 4
  Scout on GB200, Dec 2025): tokens per second per GPU, so
  measured step = global batch x sequence length / (rate x GPUs).

What a source does not state is fixed in :func:`row_config`, the same for every row of a
source, never tuned per row; the CSV's notes say which settings are assumed.

>>> rows = load_runs()
>>> len(rows), sorted(set(rows["family"]))
(19, ['fp8', 'fp8-pipeline', 'moe', 'zero-bubble'])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from clustersim.validate.runs import predict_step

__all__ = ["DATA_FILE", "SOURCES", "SCHEDULES", "KNOWN_OOM", "CONFLICTING_ROWS", "load_runs",
           "row_source", "row_config", "measured_step_s", "measured_memory_gib", "predict_runs",
           "summarize", "frontier_validation"]

DATA_FILE = Path(__file__).parent / "data" / "frontier_runs.csv"
SOURCES = ("ZB24", "TT24", "TT25", "TTMX25")

# The sources' schedule names and the simulator's. ZB-1p (memory limit p M_B) has exactly
# ZB-H1's bubble rate in Qi et al.'s Table 5; ZB-2p (2p M_B) is at or below ZB-H2's.
SCHEDULES = {"1F1B": "1f1b", "ZB-1p": "zb-h1", "ZB-2p": "zb-h2",
             "Interleaved 1F1B": "1f1b-interleaved"}

# ZB24: the paper does not state the vocabulary; the repository's example script
# (examples/pretrain_zero_bubble.sh) uses a SentencePiece tokenizer: a 32,000-token
# vocabulary is assumed. Its Megatron-LM fork trains in fp16 (--fp16), without
# --use-flash-attn (Megatron's fused scale-mask-softmax, as for the 2021 Megatron rows) and
# with Megatron's default dropout of 0.1.
_ZB24_VOCAB = 32000


# TT24: the source's H100s are the 96 GB HBM2e variant (2.4 TB/s) run at a 500 W power
# limit; those stated figures replace the catalog H100's. Its peak FLOP/s "lies between SXM
# and NVL" and is not known: the SXM die is kept, run at the 500 W limit (its math units at
# the clock the limit allows, hardware.compute.power_limited_clock).
_TT24_DEVICE = {"device_overrides.memory.capacity": "96 GB",
                "device_overrides.memory.bandwidth": "2.4 TB/s",
                "device_overrides.power_limit": "500 W"}


def load_runs(path: str | Path = DATA_FILE) -> pd.DataFrame:
    """The bundled table of published frontier runs."""
    return pd.read_csv(path)


def row_source(row) -> str:
    """``ZB24``, ``TT24``, ``TT25`` or ``TTMX25``: which publication a row comes from."""
    return str(row["id"]).split("-")[0]


def _zb24(row) -> dict[str, Any]:
    pp = int(row["PP"])
    model = {"name": str(row["model"]), "layers": int(row["layers"]),
             "hidden": int(row["hidden"]), "heads": int(row["heads"]), "ffn": "gelu",
             "vocab": _ZB24_VOCAB, "seq_len": int(row["seq_len"]), "tied_embeddings": True,
             "dropout": True}
    parallelism = {"tp": 1, "pp": pp, "dp": 1, "schedule": SCHEDULES[str(row["schedule"])],
                   "stage_layers": [int(x) for x in str(row["stage_layers"]).split(";")]}
    training = {"global_batch": int(row["global_batch_seqs"]),
                "micro_batch": int(row["micro_batch"]), "precision": "fp16",
                "recompute": "none", "framework": "megatron-lm", "attention": "materialized",
                "overlap": {"grad_reduce": False, "param_gather": False},
                "parallelism": parallelism}
    return {"cluster": {"topology": "dgx-a100", "devices": int(row["num_accel"])},
            "model": model, "training": training}


def _tt24(row) -> dict[str, Any]:
    # torchtitan: FSDP2 (ZeRO-3) over the data-parallel ranks, TP with sequence parallelism,
    # PP with torch.distributed.pipelining; float8 on the linear layers only (torchao).
    tp, pp, dp = int(row["TP"]), int(row["PP"]), int(row["DP"])
    parallelism: dict[str, Any] = {"tp": tp, "pp": pp, "dp": dp, "zero": 3, "sp": tp > 1}
    if pp > 1:
        parallelism["schedule"] = SCHEDULES[str(row["schedule"])]
        if int(row["VP"]) > 1:
            parallelism["virtual_stages"] = int(row["VP"])
    training: dict[str, Any] = {
        "global_batch": int(row["global_batch_seqs"]), "micro_batch": int(row["micro_batch"]),
        "seq_len": int(row["seq_len"]), "precision": "fp8" if "float8" in str(row["precision"])
        else "bf16", "recompute": str(row["recompute"]), "framework": "fsdp",
        "parallelism": parallelism}
    if tp > 1:
        training["overlap"] = {"tp_comm": str(row["tp_comm_overlap"]).startswith("yes")}
    return {"cluster": {"topology": "dgx-h100", "devices": int(row["num_accel"]),
                        "overrides": _TT24_DEVICE},
            "model": str(row["model_preset"]), "training": training}


def _ttmx25(row) -> dict[str, Any]:
    # Llama 4 Scout (torchtitan flavor 17bx16e): every layer MoE, 16 routed experts top-1 and
    # one shared expert of width 8192; FSDP over all 256 GPUs with the routed experts in 16
    # EP groups; the NVLink domain of the "64 nodes of 4 devices" is not stated: NVL72 racks.
    model = {"name": str(row["model"]), "layers": int(row["layers"]),
             "hidden": int(row["hidden"]), "heads": int(row["heads"]), "kv_heads": 8,
             "head_dim": 128, "ffn": "swiglu", "ffn_hidden": int(row["ffn_hidden"]),
             "vocab": int(row["vocab"]), "seq_len": int(row["seq_len"]),
             "tied_embeddings": False, "dropout": False,
             "moe": {"experts": int(row["experts"]), "top_k": int(row["top_k"]),
                     "shared_experts": int(row["shared_experts"]),
                     "expert_ffn_hidden": int(row["expert_ffn_hidden"])}}
    training = {"global_batch": int(row["global_batch_seqs"]),
                "micro_batch": int(row["micro_batch"]),
                "precision": "bf16" if str(row["precision"]) == "bf16" else "fp8",
                "recompute": "none", "framework": "fsdp",
                "parallelism": {"tp": 1, "pp": 1, "dp": int(row["DP"]), "ep": int(row["EP"]),
                                "zero": 3}}
    return {"cluster": {"topology": "gb200-nvl72", "devices": int(row["num_accel"])},
            "model": model, "training": training}


def row_config(row) -> dict[str, Any]:
    """The experiment (as a plain dict) that reproduces one published frontier run."""
    source = row_source(row)
    cfg = _zb24(row) if source == "ZB24" else _ttmx25(row) if source == "TTMX25" \
        else _tt24(row)
    return {"name": str(row["id"]), **cfg}


def measured_step_s(row) -> float:
    """The step time a row measured (see module docstring)."""
    devices, gbs = int(row["num_accel"]), int(row["global_batch_seqs"])
    rate = float(row["measured_value"]) * devices
    if row["measured_metric"] == "samples_per_s_per_accel":
        return gbs / rate
    if row["measured_metric"] == "tokens_per_s_per_accel":
        return gbs * int(row["seq_len"]) / rate
    raise ValueError(f"{row['id']}: unknown measured_metric {row['measured_metric']!r}")


_BREAKDOWN = ("compute_s", "bubble_s", "exposed_comm_s", "peak_memory_gib")

# Rows the simulator puts out of memory although the source ran them: predicted and reported
# (their step time is still priced), the memory model's discrepancy named.
KNOWN_OOM: dict[str, str] = {}

_SCOUT_CONFLICT = (
    "The stated plan cannot fit: with activation checkpointing 'none' and local batch 10 x "
    "8192 tokens, the two SwiGLU matmul outputs a backward needs of the two experts every "
    "token visits (routed top-1 + shared, width 8192) alone take 81,920 x 2 x 2 x 8192 x 2 B "
    "x 48 layers = 258 GB a GPU, above a GB200's 186 GB (the simulator: 740 GiB, oom; with full "
    "checkpointing 153 GiB). The run must have differed from the stated configuration (the "
    "doc itself says 512 GPUs in the table and 256 chips in the list).")
# Rows whose stated configuration contradicts first principles: predicted and reported, kept
# out of the error bounds (as clustersim.validate.training.CONFLICTING_ROWS).
CONFLICTING_ROWS = {"TTMX25-SCOUT-256-bf16": _SCOUT_CONFLICT,
                    "TTMX25-SCOUT-256-mxfp8": _SCOUT_CONFLICT}


def measured_memory_gib(row) -> float:
    """The row's published peak memory a GPU in GiB (Qi et al. print GB)."""
    value = float(row["measured_peak_memory"])   # NaN where the source prints none
    return value * 1e9 / 2 ** 30 if str(row["memory_unit"]).startswith("GB") else value


def predict_runs(frame: pd.DataFrame | None = None, fidelity: str = "flow") -> pd.DataFrame:
    """Predicted against measured step time for every frontier row, with the error and the
    predicted breakdown (compute, bubble, exposed communication) to diagnose it."""
    frame = load_runs() if frame is None else frame
    out = []
    for _, row in frame.iterrows():
        cfg = row_config(row)
        result, columns = predict_step(cfg, measured_step_s(row), fidelity)
        out.append({"id": row["id"], "family": row["family"], "model": row["model"],
                    "devices": int(row["num_accel"]), "tp": int(row["TP"]),
                    "pp": int(row["PP"]), "dp": int(row["DP"]),
                    "schedule": row["schedule"], "precision": cfg["training"]["precision"],
                    **columns, **{k: result.get(k) for k in _BREAKDOWN},
                    "measured_memory_gib": measured_memory_gib(row),
                    "conflicting": row["id"] in CONFLICTING_ROWS})
    return pd.DataFrame(out)


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Median and max absolute error, over all rows and per family, the conflicting rows
    (:data:`CONFLICTING_ROWS`) apart."""
    conflicting = frame["id"].isin(list(CONFLICTING_ROWS))
    errors = frame[~conflicting].assign(abs_error=frame["error"].abs()).dropna(
        subset=["abs_error"])
    per = {family: {"rows": int(len(g)), "median_abs_error": float(g["abs_error"].median()),
                    "max_abs_error": float(g["abs_error"].max())}
           for family, g in errors.groupby("family")}
    return {"rows": int(len(errors)), "median_abs_error": float(errors["abs_error"].median()),
            "max_abs_error": float(errors["abs_error"].max()), "families": per,
            "conflicting": {i: float(e) for i, e in frame.loc[conflicting, ["id", "error"]]
                            .itertuples(index=False)}}


def frontier_validation(fidelity: str = "flow") -> pd.DataFrame:
    """Every bundled frontier run predicted (what ``clustersim validate`` prints)."""
    return predict_runs(fidelity=fidelity)
