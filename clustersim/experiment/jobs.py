"""A scenario with ``jobs:``: the primary job (top-level ``model``/``training``, on
``placement`` or every device no neighbour holds) and its neighbours on one cluster.

:func:`check_jobs` refuses, before anything runs, placements that overlap, reach past the
cluster or leave the primary nothing, and plans that do not fit their devices; each error is
an :class:`~clustersim.errors.InputErrorAt` naming the key, so it prints as ``file:line:col``.
:func:`simulate_job_scenario` gives the primary's row as without neighbours, plus the job
columns declared in :mod:`clustersim.experiment.columns`.

The ``flow`` fidelity shares the fabric (:mod:`clustersim.fidelity.jobs`). The ``analytic``
fidelity has no contention between calls, so it prices every job alone: its row says so in
``job_contention`` and leaves the slowdowns empty (the step time is the job alone).

>>> from clustersim.config.experiment import ExperimentConfig
>>> cfg = ExperimentConfig.model_validate({
...     "name": "demo", "cluster": {"topology": "dgx-h100", "devices": 16},
...     "model": "llama3-8b", "training": {"global_batch": 8, "parallelism": {"tp": 8}},
...     "jobs": [{"name": "b", "model": "llama3-8b", "placement": {"first": 8, "count": 8},
...               "training": {"global_batch": 8, "parallelism": {"tp": 8}}}]})
>>> placements(cfg, 16)[0][:3]
[0, 1, 2]
>>> row = simulate_job_scenario(cfg)
>>> row["slowdown_vs_alone"], row["jobs.b.slowdown_vs_alone"]
(1.0, 1.0)
"""

from __future__ import annotations

from typing import Any

from clustersim.config.experiment import ExperimentConfig
from clustersim.errors import InputErrorAt
from clustersim.experiment.columns import job_columns, neighbour_columns
from clustersim.fidelity import FIDELITIES
from clustersim.fidelity.jobs import JobStep, simulate_jobs
from clustersim.network import build_cluster
from clustersim.result import result_row
from clustersim.step import plan_step
from clustersim.workload import Infeasible, resolve_model, resolve_plan

__all__ = ["check_jobs", "placements", "simulate_job_scenario"]

_NO_CONTENTION = ("none: the analytic fidelity prices each job alone (set "
                  "simulation.fidelity: flow for the shared fabric)")
_SHARED = "max-min shared links (flow fidelity)"


def _span(indices: list[int]) -> str:
    return f"{indices[0]}..{indices[-1]}" if len(indices) > 1 else f"{indices[0]}"


def placements(config: ExperimentConfig, devices: int) -> list[list[int]]:
    """The device indices of every job, the primary first; InputErrorAt for a placement
    past the cluster's ``devices``, two jobs on one device, or no device left for the
    primary."""
    held: dict[int, str] = {}
    out: list[list[int]] = [[]]
    for i, job in enumerate(config.jobs):
        indices = job.placement.indices()
        at = ("jobs", i, "placement")
        if indices[-1] >= devices:
            raise InputErrorAt(f"jobs[{i}] ({job.name!r}): placement holds devices "
                               f"{_span(indices)}, past the cluster's {devices} devices "
                               f"(0..{devices - 1})", at)
        both = [d for d in indices if d in held]
        if both:
            raise InputErrorAt(f"jobs[{i}] ({job.name!r}): placement overlaps job "
                               f"{held[both[0]]!r} on {len(both)} devices (first: device "
                               f"{both[0]}); jobs may not share a device", at)
        held.update(dict.fromkeys(indices, job.name))
        out.append(indices)
    if config.placement is None:
        out[0] = [d for d in range(devices) if d not in held]
        if not out[0]:
            raise InputErrorAt(f"the jobs hold all {devices} devices, none is left for the "
                               f"primary job; give it a `placement` or make room", ("jobs",))
        return out
    out[0] = config.placement.indices()
    if out[0][-1] >= devices:
        raise InputErrorAt(f"placement holds devices {_span(out[0])}, past the cluster's "
                           f"{devices} devices (0..{devices - 1})", ("placement",))
    both = [d for d in out[0] if d in held]
    if both:
        raise InputErrorAt(f"placement overlaps job {held[both[0]]!r} on {len(both)} devices "
                           f"(first: device {both[0]}); jobs may not share a device",
                           ("placement",))
    return out


def check_jobs(config: ExperimentConfig, devices: int) -> None:
    """Placements (see :func:`placements`) and every neighbour's plan on its devices."""
    held = placements(config, devices)
    for i, job in enumerate(config.jobs):
        model = resolve_model(job.model)
        try:
            resolve_plan(job.training, model, len(held[i + 1]))
        except Infeasible as exc:
            raise InputErrorAt(f"jobs[{i}] ({job.name!r}) on {len(held[i + 1])} devices: "
                               f"{exc.reason}", ("jobs", i, "training")) from None


def _job_steps(config: ExperimentConfig, cluster) -> list[JobStep]:
    held = placements(config, len(cluster.devices))
    sections = [("primary", config.model, config.training)] + [
        (j.name, j.model, j.training) for j in config.jobs]
    out = []
    for (name, model_config, training), indices in zip(sections, held):
        view = cluster.on_devices([cluster.devices[d] for d in indices])
        model = resolve_model(model_config)
        plan = resolve_plan(training, model, len(indices))
        out.append(JobStep(name, plan_step(model, plan, view, training), view))
    return out


def simulate_job_scenario(config: ExperimentConfig) -> dict[str, Any]:
    """The primary's row (its devices, its time with the neighbours running) and the job
    columns; raises as :func:`~clustersim.experiment.scenario.simulate_scenario` does."""
    cluster = build_cluster(config.cluster.topology, config.cluster.devices,
                            config.cluster.overrides)
    jobs = _job_steps(config, cluster)
    shared = config.simulation.fidelity == "flow"   # the one fidelity with contention
    if shared:
        outcomes = simulate_jobs(jobs, cluster, config.simulation, trace=config.output.trace)
        primary = outcomes[0].shared
        times = [(o.step_time_s, o.step_time_alone_s, o.steps) for o in outcomes]
    else:
        simulate = FIDELITIES[config.simulation.fidelity]
        alone = [simulate(j.step, j.cluster, config.simulation) for j in jobs]
        primary = alone[0]
        times = [(a.step_time_s, a.step_time_s, 1) for a in alone]
    row = result_row(jobs[0].step, primary, jobs[0].cluster, config)
    row.update(job_columns(times[0][0], times[0][1], _SHARED if shared else _NO_CONTENTION,
                           shared))
    for job, (mine, alone_s, steps) in zip(jobs[1:], times[1:]):
        row.update(neighbour_columns(job.name, mine, alone_s, steps, shared))
    return row
