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

from clustersim.config.experiment import ExperimentConfig
from clustersim.errors import InputError
from clustersim.experiment.jobs import check_jobs, simulate_job_scenario
from clustersim.fidelity import FIDELITIES
from clustersim.network import build_cluster
from clustersim.network.cluster import NETWORK_KEYS
from clustersim.result import result_row
from clustersim.step import plan_step
from clustersim.topology.gpu_cluster import resolve_device
from clustersim.topology.presets import load_topology, resolve_params
from clustersim.workload import Infeasible, resolve_model, resolve_plan
from clustersim.workload.fp8 import fp8_options

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
    preset = load_topology(config.cluster.topology)
    # the network keys (network.sharp) describe the fabric's features, not its graph
    graph_overrides = {k: v for k, v in config.cluster.overrides.items()
                       if k not in NETWORK_KEYS}
    params = resolve_params(preset, graph_overrides)
    # a precision the device has no peak for (fp4 on Hopper) is an input error, not a run
    device = resolve_device(params.device, params.device_overrides)
    for training in [config.training] + [job.training for job in config.jobs]:
        device.flops_for(training.precision)
        fp8_options(training, device)   # a recipe the device cannot run (mxfp8 on Hopper)
    resolve_model(config.model)
    if config.jobs or config.placement is not None:
        check_jobs(config, config.cluster.devices or preset.devices)


def simulate_scenario(config: ExperimentConfig) -> dict[str, Any]:
    """Run one configuration; returns the metric columns of its row (raises on problems):
    cluster, model and plan; the step plan; a fidelity; the result row (with ``jobs:``,
    the primary's row among its neighbours: clustersim.experiment.jobs)."""
    if config.jobs or config.placement is not None:
        return simulate_job_scenario(config)
    cluster = build_cluster(config.cluster.topology, config.cluster.devices,
                            config.cluster.overrides)
    model = resolve_model(config.model)
    plan = resolve_plan(config.training, model, len(cluster.devices))
    step = plan_step(model, plan, cluster, config.training)
    simulate = FIDELITIES[config.simulation.fidelity]
    outcome = simulate(step, cluster, config.simulation, trace=config.output.trace)
    return result_row(step, outcome, cluster, config)


def run_scenario(scenario: Scenario) -> dict[str, Any]:
    """Simulate one scenario and return its result row (columns in experiment.columns)."""
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
