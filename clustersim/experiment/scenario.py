"""One scenario: a fully specified experiment (no sweep left) and the function that runs it.

``run_scenario`` never raises for a problem of the scenario itself: an impossible plan is a row
with status ``infeasible``, a plan that does not fit is ``oom`` (its times are still reported),
bad input or a crash is ``error``; the message goes in the ``error`` column so the rest of a
sweep goes on.

>>> from clustersim.config.experiment import ExperimentConfig
>>> cfg = ExperimentConfig.model_validate({
...     "name": "demo", "cluster": {"topology": "dgx-h100", "devices": 8},
...     "model": "llama3-8b", "simulation": {"fidelity": "flow"},
...     "training": {"global_batch": 8, "parallelism": {"tp": 8}}})
>>> row = run_scenario(Scenario(0, "demo/0000", cfg))
>>> row["status"], row["step_time_s"] > 0, 0 < row["mfu"] < 1
('ok', True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clustersim.config.experiment import ExperimentConfig
from clustersim.errors import InputError

__all__ = ["Scenario", "run_scenario", "check_scenario", "simulate_scenario"]


@dataclass(frozen=True)
class Scenario:
    """A single point of a sweep.

    ``swept`` maps each swept dotted key (``training.parallelism.tp``) to the value this
    scenario takes, as written in the experiment file; it becomes one column per key.
    """

    index: int
    name: str
    config: ExperimentConfig
    swept: dict[str, Any] = field(default_factory=dict)


def check_scenario(config: ExperimentConfig) -> None:
    """Resolve every preset name and topology parameter without building anything; raise
    InputError for unknown ones (the message quotes the offending value with repr)."""
    from clustersim.topology.presets import load_topology, resolve_params
    from clustersim.workload.models import resolve_model

    from clustersim.topology.gpu_cluster import resolve_device

    preset = load_topology(config.cluster.topology)
    params = resolve_params(preset, config.cluster.overrides)
    resolve_device(params.device, params.device_overrides)
    resolve_model(config.model)


def _cluster(config: ExperimentConfig):
    from clustersim.topology import build_cluster

    return build_cluster(config.cluster.topology, config.cluster.devices,
                         config.cluster.overrides)


def simulate_scenario(config: ExperimentConfig) -> dict[str, Any]:
    """Run one configuration; returns the metric columns of its row (raises on problems)."""
    from clustersim.workload import (hardware_flops_per_token, model_flops_per_token,
                                     peak_memory_footprint, resolve_model, resolve_plan)

    cluster = _cluster(config)
    model = resolve_model(config.model)
    training = config.training
    plan = resolve_plan(training, model, len(cluster.devices))
    device = cluster.device
    dtype = training.precision
    peak = device.flops_for(dtype)
    _, memory = peak_memory_footprint(model, plan, precision=dtype, recompute=training.recompute,
                                      optimizer=training.optimizer,
                                      flash_attention=training.attention == "flash")
    capacity = cluster.memory_capacity_B(cluster.devices[0])
    device_B, offload_problem = memory.total_B, ""
    if training.offload.optimizer != "none":
        device_B, offload_problem = _offloaded_memory(cluster, memory,
                                                      training.offload.optimizer)

    if config.simulation.fidelity == "analytic":
        from clustersim.workload.analytic import estimate_step

        est = estimate_step(model, plan, cluster, training)
        step, flops, mem_bytes = est.step_time_s, est.flops, est.mem_bytes
        link_bytes = est.network_bytes_by_link
        parts = {k: getattr(est, k) for k in ("compute_s", "comm_s", "exposed_comm_s",
                                               "bubble_s")}
        link_busy = link_bytes / cluster.links.capacity_Bps
        peak_util = None
        trace = None
    else:
        from clustersim.engine import simulate
        from clustersim.engine.breakdown import critical_rank, rank_breakdown
        from clustersim.workload.program import build_program

        program = build_program(model, plan, cluster, training,
                                representative=config.simulation.ranks == "representative")
        result = simulate(program, cluster, record_links=config.output.trace)
        step = result.step_time_s
        parts = rank_breakdown(result, critical_rank(result))
        weight = np.array([program.ranks[op.rank].stands_for for op in program.ops])
        flops = float(np.dot(weight, [op.flops for op in program.ops]))
        mem_bytes = float(np.dot(weight, [op.mem_bytes for op in program.ops]))
        link_bytes, link_busy, peak_util = result.link_bytes, result.link_busy_s, \
            result.link_peak_util
        trace = None
        if config.output.trace:
            from clustersim.engine.trace import trace_events

            trace = trace_events(result, cluster)

    tokens = plan.global_batch * plan.seq_len
    tokens_per_s = tokens / step
    devices = len(cluster.devices)
    model_flops = model_flops_per_token(model, plan.seq_len) * tokens_per_s
    hardware_flops = hardware_flops_per_token(model, plan.seq_len, training.recompute) \
        * tokens_per_s
    row: dict[str, Any] = {
        "step_time_s": step, "tokens_per_s": tokens_per_s,
        "mfu": model_flops / (devices * peak), "hfu": hardware_flops / (devices * peak),
        "model_tflops_per_device": model_flops / devices / 1e12,
        **parts,
        "peak_memory_gib": device_B / 2**30,
        "offloaded_memory_gib": (memory.total_B - device_B) / 2**30,
        "memory_capacity_gib": capacity / 2**30,
        "devices": devices, "dp": plan.dp, "num_microbatches": plan.num_microbatches,
    }
    from clustersim.engine.energy import Activity, step_energy

    energy = step_energy(cluster, Activity(step, flops, mem_bytes, link_bytes), dtype,
                         pue=config.simulation.pue)
    row.update(energy)
    row["energy_per_token_j"] = energy["energy_j"] / tokens
    row.update(_link_columns(cluster, link_bytes, link_busy, peak_util, step))
    if device_B > capacity:
        offloaded = (f", {(memory.total_B - device_B) / 2**30:.1f} GiB offloaded"
                     if device_B < memory.total_B else "")
        row["status"] = "oom"
        row["error"] = (f"needs {device_B / 2**30:.1f} GiB per device, has "
                        f"{capacity / 2**30:.1f} GiB (parameters {memory.parameters_B / 2**30:.1f},"
                        f" optimizer {memory.optimizer_states_B / 2**30:.1f}, activations "
                        f"{memory.activations_B / 2**30:.1f} GiB{offloaded})")
    elif offload_problem:
        row["status"], row["error"] = "oom", offload_problem
    if trace is not None:
        row["trace"] = trace
    return row


def _offloaded_memory(cluster, memory, where: str) -> tuple[float, str]:
    """Device bytes once the optimizer states live in ``where``, and a problem if the
    offload memory cannot hold the states of every device that shares it."""
    from collections import Counter

    targets = Counter()
    capacity = {}
    for device in cluster.devices:
        found = cluster.offload_memory(device, where)
        if found is None:
            raise InputError(f"training.offload.optimizer: {where!r} needs a topology with "
                             f"{'a CXL memory pool' if where == 'cxl' else 'host memory'} (e.g. "
                             f"topology: cxl-memory-pool, or set cluster.overrides.memory_pool)")
        targets[found[0]] += 1
        capacity[found[0]] = found[1]
    node, sharing = max(targets.items(), key=lambda kv: kv[1] * memory.optimizer_states_B
                        / capacity[kv[0]])
    need = sharing * memory.optimizer_states_B
    problem = ""
    if need > capacity[node]:
        problem = (f"offloaded optimizer states need {need / 2**30:.1f} GiB on {node} "
                   f"({sharing} devices x {memory.optimizer_states_B / 2**30:.1f} GiB), which has "
                   f"{capacity[node] / 2**30:.1f} GiB")
    return memory.total_B - memory.optimizer_states_B, problem


def _link_columns(cluster, link_bytes, link_busy, peak_util, step: float) -> dict[str, Any]:
    """Utilisation by technology (mean over the links that carried traffic) and the busiest
    link. ``link_busy`` is busy seconds (flow) or bytes / capacity (analytic)."""
    out: dict[str, Any] = {}
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
    if peak_util is not None:
        out["busiest_link_peak_util"] = float(peak_util[busiest])
    return out


def run_scenario(scenario: Scenario) -> dict[str, Any]:
    """Simulate one scenario and return its result row (columns in experiment.columns)."""
    from clustersim.workload import Infeasible

    row: dict[str, Any] = {"scenario": scenario.name, "status": "ok", "error": ""}
    try:
        row.update(simulate_scenario(scenario.config))
    except Infeasible as exc:
        row.update(status="infeasible", error=exc.reason)
    except InputError as exc:
        row.update(status="error", error=str(exc))
    for key, value in scenario.swept.items():
        row[key] = value
    for key, value in list(row.items()):
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = None
    return row
