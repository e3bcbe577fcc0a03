"""One scenario's result row: throughput and utilisation, the time breakdown, memory against
capacity, energy by part and by link technology, and link utilisation.

MFU and HFU follow PaLM's definitions (model FLOPs, and FLOPs with recomputation, over the
devices' peak at the training precision). A step whose devices need more memory than they
have, or whose offloaded optimizer states overflow the memory they go to, gets status
``oom`` with the reason; its times are still reported.

>>> import numpy as np
>>> from clustersim.config.experiment import ExperimentConfig
>>> from clustersim.network import build_cluster
>>> from clustersim.step import plan_step
>>> from clustersim.workload import get_model, resolve_plan
>>> cfg = ExperimentConfig.model_validate({"name": "x", "cluster": {"topology": "dgx-h100"},
...     "model": "llama3-8b", "training": {"global_batch": 8, "parallelism": {"tp": 8}}})
>>> cluster = build_cluster("dgx-h100", devices=8)
>>> model = get_model("llama3-8b")
>>> step = plan_step(model, resolve_plan(cfg.training, model, 8), cluster, cfg.training)
>>> outcome = StepOutcome(1.0, 0.8, 0.3, 0.2, 0.0, flops=1e15, mem_bytes=1e12,
...                       link_bytes=np.zeros(len(cluster.links)))
>>> row = result_row(step, outcome, cluster, cfg)
>>> row["tokens_per_s"], row["status"]
(65536.0, 'ok')
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from clustersim.hardware.compute import compute_params
from clustersim.result.energy import step_energy
from clustersim.result.outcome import StepOutcome
from clustersim.result.overlap import with_overlap_cost
from clustersim.workload.flops import hardware_flops_per_token, model_flops_per_token

__all__ = ["result_row", "link_columns"]

_GiB = 2**30


def _offload_problem(cluster, step) -> str:
    """Why the offloaded optimizer states do not fit the memory they go to ('' if they do):
    each device sends the states of the stage that holds the most to its memory node."""
    where = step.training.offload.optimizer
    if where == "none":
        return ""
    states = step.peak_stage.offloaded_B
    sharing, capacity = Counter(), {}
    for device in cluster.devices:
        node, capacity[node] = cluster.offload_memory(device, where)
        sharing[node] += 1
    node = max(sharing, key=lambda n: sharing[n] / capacity[n])
    need = sharing[node] * states
    if need <= capacity[node]:
        return ""
    return (f"offloaded optimizer states need {need / _GiB:.1f} GiB on {node} "
            f"({sharing[node]} devices x {states / _GiB:.1f} GiB), which has "
            f"{capacity[node] / _GiB:.1f} GiB")


def link_columns(cluster, outcome: StepOutcome) -> dict[str, Any]:
    """Utilisation by technology (mean over the links that carried traffic) and the busiest
    link, over the step; with the flow fidelity also the busiest link's peak."""
    out: dict[str, Any] = {}
    step, link_bytes = outcome.step_time_s, outcome.link_bytes
    used = link_bytes > 0
    if step <= 0 or not used.any():
        return out
    util = link_bytes / (cluster.links.capacity_Bps * step)
    for tech_id, tech in enumerate(cluster.links.techs):
        mask = used & (cluster.links.tech_id == tech_id)
        if mask.any():
            out[f"link_util_{tech}"] = float(util[mask].mean())
    busiest = int(np.argmax(util))
    u, v = cluster.links.edges[busiest]
    out["busiest_link"] = f"{u}->{v} ({cluster.links.techs[cluster.links.tech_id[busiest]]})"
    out["busiest_link_util"] = float(util[busiest])
    if outcome.link_peak_util is not None:
        out["busiest_link_peak_util"] = float(outcome.link_peak_util[busiest])
    return out


def result_row(step, outcome: StepOutcome, cluster, config) -> dict[str, Any]:
    """The metric columns of a scenario's row (see :mod:`clustersim.experiment.columns`)."""
    plan, model, training = step.plan, step.model, step.training
    outcome = with_overlap_cost(outcome, compute_params(cluster.device).overlap_slowdown)
    devices = len(cluster.devices)
    peak = cluster.device.flops_for(training.precision)
    tokens = plan.global_batch * plan.seq_len
    tokens_per_s = tokens / outcome.step_time_s
    model_flops = model_flops_per_token(model, plan.seq_len) * tokens_per_s
    hardware_flops = hardware_flops_per_token(model, plan.seq_len, training.recompute) \
        * tokens_per_s
    stage = step.peak_stage
    memory = stage.memory
    device_B = memory.total_B - stage.offloaded_B
    capacity = cluster.memory_capacity_B(cluster.devices[0])
    row: dict[str, Any] = {
        "status": "ok", "error": "", "step_time_s": outcome.step_time_s, "tokens_per_s": tokens_per_s,
        "mfu": model_flops / (devices * peak), "hfu": hardware_flops / (devices * peak),
        "model_tflops_per_device": model_flops / devices / 1e12,
        "compute_s": outcome.compute_s, "comm_s": outcome.comm_s,
        "exposed_comm_s": outcome.exposed_comm_s, "bubble_s": outcome.bubble_s,
        "hidden_comm_s": max(0.0, outcome.comm_s - outcome.exposed_comm_s),
        "overlap_cost_s": outcome.overlap_cost_s,
        "peak_memory_gib": device_B / _GiB, "offloaded_memory_gib": stage.offloaded_B / _GiB,
        "memory_capacity_gib": capacity / _GiB,
        "devices": devices, "dp": plan.dp, "num_microbatches": plan.num_microbatches,
    }
    energy = step_energy(cluster, outcome, training.precision, pue=config.simulation.pue)
    row.update(energy)
    row["energy_per_token_j"] = energy["energy_j"] / tokens
    row.update(link_columns(cluster, outcome))
    problem = _offload_problem(cluster, step)
    if device_B > capacity:
        offloaded = (f", {stage.offloaded_B / _GiB:.1f} GiB offloaded"
                     if stage.offloaded_B else "")
        row["status"] = "oom"
        row["error"] = (f"needs {device_B / _GiB:.1f} GiB per device, has "
                        f"{capacity / _GiB:.1f} GiB (parameters {memory.parameters_B / _GiB:.1f},"
                        f" optimizer {memory.optimizer_states_B / _GiB:.1f}, activations "
                        f"{memory.activations_B / _GiB:.1f} GiB{offloaded})")
    elif problem:
        row["status"], row["error"] = "oom", problem
    if outcome.trace is not None:
        row["trace"] = outcome.trace
    return row
