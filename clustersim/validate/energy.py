"""Plausibility of the energy model against published training energy (``clustersim validate``).

Two public figures, each simulated with the run's own configuration and compared **like with
like**, with every assumption of both sides in the table (``data/energy.csv`` keeps the
published numbers, their derivation and sources):

- PaLM 540B on 6144 TPU v4 chips (Chowdhery et al. 2022, Appendix B): 378.5 W of measured
  system power per chip, before the data-centre PUE of 1.08 that the paper applies on top.
  Predicted: the simulation's ``avg_power_w`` over the chips (PUE 1).
- BLOOM 176B on 384 A100 80GB (Luccioni et al. 2022): 433,196 kWh over 366B tokens, 4.26
  J/token. That figure is GPU-hours x the A100's 400 W TDP: GPUs only, no hosts, network or
  cooling; Jean Zay's PUE of 1.2 is applied only in the paper's comparison with other models.
  Predicted: ``energy_per_token_j`` (PUE 1), the same x 1.2 against 4.26 x 1.2, and, as a
  scope-matched diagnostic, the GPUs' own energy (idle + FLOPs + HBM) per token.

The configurations are in :func:`palm_config` and :func:`bloom_config`, with a source beside
every value that is not a default. The simulation config has no PUE key yet, so the factor is
applied here, explicitly, from the ``pue`` column.

>>> published = load_published()
>>> float(published.set_index("id").loc["BLOOM-A100-J-PER-TOKEN", "published"])
4.2609
>>> round(433_196 * 3.6e6 / 366e9, 4)    # kWh -> J, over BLOOM's 366B training tokens
4.2609
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from clustersim.config.experiment import ExperimentConfig
from clustersim.experiment.scenario import Scenario, run_scenario

__all__ = ["DATA_FILE", "load_published", "palm_config", "bloom_config", "simulate_config",
           "predict", "energy_validation", "summarize"]

DATA_FILE = Path(__file__).parent / "data" / "energy.csv"


def load_published(path: str | Path = DATA_FILE) -> pd.DataFrame:
    """The bundled published energy figures (one row per comparison)."""
    return pd.read_csv(path)


def palm_config(fidelity: str = "flow") -> dict[str, Any]:
    """PaLM 540B with PaLM's layout (experiments/tpu-torus-vs-fattree-palm.yaml, first case).

    Chowdhery et al. 2022: two TPU v4 pods of 3072 chips (Sec. 4), 12-way model parallelism
    and 256-way fully sharded data parallelism in each pod, the pods as data-parallel replicas
    (Sec. 4); batch 2048 sequences of 2048 tokens at the end of training (Sec. 5; the batch of
    the 46.2% MFU, 238.3K tokens/s of Sec. 4.1, Table 3); rematerialization (Table 22 counts
    it: 4.10 TFLOP/token with it, 3.28 without). Activations are sharded over the model axis
    (``sp``; GSPMD splits them along the hidden dimension), as the experiment file does.

    >>> palm_config()["training"]["parallelism"]["tp"], palm_config()["cluster"]["devices"]
    (12, 6144)
    """
    return {
        "name": "validate-energy-palm-540b",
        "cluster": {"topology": "tpu-v4-pod", "devices": 6144},
        "model": "palm-540b",
        "training": {"global_batch": 2048, "micro_batch": 4, "recompute": "full",
                     "parallelism": {"tp": 12, "dp": 512, "sp": True, "zero": 3,
                                     "shard_group": 256, "placement": ["tp", "dp"]}},
        "simulation": {"fidelity": fidelity},
    }


# BLOOM's final run: bigscience-workshop/bigscience train/tr11-176B-ml/tr11-176B-ml.slurm
# (TP 4, PP 12, micro-batch 2, global batch 2048, 70 layers, hidden 14336, 112 heads, sequence
# 2048, bf16, --checkpoint-activations, --pad-vocab-size-to 250880, ALiBi, ZeRO stage 0 with
# DeepSpeed's bf16 optimizer, "its own zero stage 1 equivalent", pipeline partition
# 'type:transformer|embedding'); BLOOM paper (arXiv 2211.05100) Sec. 3.4: 48 nodes of 8 A100
# 80GB, 2 AMD EPYC 7543 and 512 GB RAM per node, 4 Omni-Path 100 Gb/s links per node; the tr11
# README: Megatron's default dropout 0.1 inherited, 104.70 s and 149.77 TFLOP/s per iteration at
# global batch 2048 (log line of iteration 85376).
_BLOOM_STAGE_LAYERS = [5] + [6] * 10 + [5]   # 70 layers + 2 embeddings = 12 x 6 partition units


def bloom_config(fidelity: str = "flow") -> dict[str, Any]:
    """BLOOM 176B as trained on Jean Zay (sources in the comment above this function).

    Modelled choices: the dgx-a100 node (HGX A100 board with NVSwitch, the 8-GPU board of the
    HPE Apollo 6500 Gen10 Plus; its 550 W host estimate, 2 x 225 W EPYC + 16 DDR4 RDIMMs,
    also fits BLOOM's 2 x EPYC 7543 + 512 GB); scale-out as 4 x 100 Gb/s ports per node on
    ``ib-edr`` (the catalog has no Omni-Path; same line rate and optics class); attention
    ``materialized`` (Megatron-DeepSpeed's fused softmax, no flash kernels in 2022); dropout on
    (the run inherited Megatron's 0.1 hidden and attention dropout, tr11 README); no overlap of the
    data-parallel gradient reduction or parameter all-gather (DeepSpeed's pipeline engine
    reduces after the pipeline drains, its bf16 optimizer gathers after the step).

    >>> layers = bloom_config()["training"]["parallelism"]["stage_layers"]
    >>> len(layers), sum(layers)
    (12, 70)
    """
    return {
        "name": "validate-energy-bloom-176b",
        "cluster": {"topology": "dgx-a100", "devices": 384,
                    "overrides": {"scale_out.technology": "ib-edr",
                                  "scale_out.nics_per_node": 4,
                                  "host.memory_capacity": "512 GiB"}},
        "model": {"name": "bloom-176b", "layers": 70, "hidden": 14336, "heads": 112,
                  "vocab": 250680, "seq_len": 2048, "ffn": "gelu", "tied_embeddings": True,
                  "dropout": True},
        "training": {"global_batch": 2048, "micro_batch": 2, "seq_len": 2048,
                     "precision": "bf16", "recompute": "full", "attention": "materialized",
                     "overlap": {"grad_reduce": False, "param_gather": False},
                     "parallelism": {"tp": 4, "pp": 12, "dp": 8, "zero": 1,
                                     "schedule": "1f1b",
                                     "stage_layers": _BLOOM_STAGE_LAYERS}},
        "simulation": {"fidelity": fidelity},
    }


_CONFIGS = {"palm-540b": palm_config, "bloom-176b": bloom_config}
# What the predicted side assumes beyond the run's published configuration (details in the
# config functions' docstrings and docs/energy.md).
_PREDICTED_SIDE = {
    "palm-540b": "tpu-v4-pod preset, 2 pods of 12x16x16 joined by the DCN; chip power 90 W idle "
                 "+ 0.27 pJ/FLOP + HBM2 at 3.97 pJ/bit (from Google's 90/192 W min/max chip "
                 "power); hosts 350 W per 4 chips (estimate); OCS and DCN switch chips; "
                 "activations sharded over the model axis",
    "bloom-176b": "dgx-a100 preset (HGX A100 with NVSwitch), 4 x 100 Gb/s ports per node; A100 "
                  "50 W idle (estimate) + 1.32 pJ/FLOP + HBM2e at 3.97 pJ/bit; hosts 550 W per "
                  "node (2 x 225 W EPYC + DDR4, estimate); dropout 0.1; one steady step at "
                  "batch 2048 (no ramp-up, restarts, evaluation or checkpoints)",
}


def simulate_config(config: dict[str, Any]) -> dict[str, Any]:
    """The result row of one experiment given as a plain dict (``run_scenario``'s: status,
    error, times and energy columns).

    >>> row = simulate_config({"name": "tiny", "cluster": {"topology": "dgx-h100",
    ...                        "devices": 8}, "model": "llama3-8b",
    ...                        "training": {"global_batch": 8, "parallelism": {"tp": 8}}})
    >>> row["status"], row["energy_per_token_j"] > 0
    ('ok', True)
    """
    cfg = ExperimentConfig.model_validate(config)
    return run_scenario(Scenario(0, cfg.name, cfg))


def predict(row: dict[str, Any], prediction: str, pue: float = 1.0) -> float:
    """The predicted quantity ``prediction`` from a result row, times ``pue``.

    ``avg_power_per_device_w``: ``avg_power_w`` over the devices; ``energy_per_token_j``: the
    column itself; ``device_energy_per_token_j``: the devices' own energy (idle, FLOPs, memory
    traffic) per token.

    >>> row = {"avg_power_w": 2000.0, "devices": 8, "energy_per_token_j": 0.5,
    ...        "energy_compute_j": 30.0, "energy_memory_j": 5.0, "energy_devices_idle_j": 5.0,
    ...        "tokens_per_s": 100.0, "step_time_s": 1.0}
    >>> predict(row, "avg_power_per_device_w"), predict(row, "device_energy_per_token_j", 1.2)
    (250.0, 0.48)
    """
    if prediction == "avg_power_per_device_w":
        value = row["avg_power_w"] / row["devices"]
    elif prediction == "energy_per_token_j":
        value = row["energy_per_token_j"]
    elif prediction == "device_energy_per_token_j":
        tokens = row["tokens_per_s"] * row["step_time_s"]
        value = (row["energy_compute_j"] + row["energy_memory_j"]
                 + row["energy_devices_idle_j"]) / tokens
    else:
        raise ValueError(f"unknown prediction {prediction!r}")
    return value * pue


def _breakdown(row: dict[str, Any]) -> str:
    """Where the simulated energy goes, as shares of the step's total (before any PUE)."""
    total = row["energy_j"]
    parts = {"devices": row["energy_compute_j"] + row["energy_memory_j"]
             + row["energy_devices_idle_j"], "hosts": row["energy_hosts_j"],
             "switches": row["energy_switches_j"], "links": row["energy_network_j"]}
    per_device = {k: v / row["step_time_s"] / row["devices"] for k, v in parts.items()}
    return "; ".join(f"{k} {v / total:.0%} ({per_device[k]:.0f} W/device)"
                     for k, v in parts.items())


def energy_validation(fidelity: str = "flow", published: pd.DataFrame | None = None
                      ) -> pd.DataFrame:
    """Predicted against published energy, one row per comparison of ``data/energy.csv``.

    Columns: ``id, model, quantity, unit, published, predicted, ratio`` (predicted /
    published), ``within_factor_2``, ``pue`` (applied to the prediction), the throughput
    behind it (``predicted_tokens_per_s``, ``published_tokens_per_s``,
    ``throughput_ratio``), ``predicted_power_per_device_w`` (everything, per device) and
    ``predicted_device_power_w`` (the device alone), ``breakdown`` (shares of the simulated
    energy), ``status`` and ``error`` of the simulated scenario, ``assumptions``
    (both sides' scope) and ``source``. Each model is simulated once (PaLM at 6144 chips takes
    ~10 s in the flow model).

    >>> frame = energy_validation()                                    # doctest: +SKIP
    >>> frame[["id", "published", "predicted", "ratio"]]               # doctest: +SKIP
    """
    published = load_published() if published is None else published
    results = {model: simulate_config(_CONFIGS[model](fidelity))
               for model in published["model"].unique()}
    rows = []
    for _, pub in published.iterrows():
        row = results[pub["model"]]
        ok = row["status"] in ("ok", "oom")  # an oom row still carries its times and energy
        predicted = predict(row, pub["prediction"], float(pub["pue"])) if ok else float("nan")
        ratio = predicted / float(pub["published"])
        tokens = row.get("tokens_per_s", float("nan"))
        rows.append({
            "id": pub["id"], "model": pub["model"], "devices": int(pub["devices"]),
            "quantity": pub["quantity"], "unit": pub["unit"],
            "published": float(pub["published"]), "predicted": predicted, "ratio": ratio,
            "within_factor_2": bool(0.5 <= ratio <= 2.0), "pue": float(pub["pue"]),
            "predicted_tokens_per_s": tokens,
            "published_tokens_per_s": float(pub["published_tokens_per_s"]),
            "throughput_ratio": tokens / float(pub["published_tokens_per_s"]),
            "predicted_power_per_device_w": (row["avg_power_w"] / row["devices"]
                                             if ok else float("nan")),
            "predicted_device_power_w": (predict(row, "device_energy_per_token_j") * tokens
                                         / row["devices"] if ok else float("nan")),
            "breakdown": _breakdown(row) if ok else "",
            "status": row["status"], "error": row.get("error", ""),
            "assumptions": f"published: {pub['published_scope']}. Derivation: "
                           f"{pub['derivation']}. Throughput: {pub['tokens_note']}. "
                           f"Simulated: {_PREDICTED_SIDE[pub['model']]}",
            "source": pub["source"],
        })
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Rows, how many fall within a factor of 2, and the smallest and largest ratio.

    >>> summarize(pd.DataFrame({"ratio": [0.6, 1.5], "within_factor_2": [True, True]}))
    {'rows': 2, 'within_factor_2': 2, 'min_ratio': 0.6, 'max_ratio': 1.5}
    """
    return {"rows": len(frame), "within_factor_2": int(frame["within_factor_2"].sum()),
            "min_ratio": float(frame["ratio"].min()), "max_ratio": float(frame["ratio"].max())}
