"""The ``analytic`` fidelity: the step plan's timeline with every call at its uncontended
price, for sweeps of thousands of scenarios.

It evaluates the same ops in the same order as the flow fidelity
(:mod:`~clustersim.fidelity.lowering`), each collective priced on all the groups of its family
at once (:mod:`~clustersim.fidelity.analytic.prices`), by max-plus arithmetic instead of the
engine: each distinct slot lowered once into a template (:mod:`.templates`, :mod:`.arrays`)
and run micro-batch after micro-batch by a numba kernel (:mod:`.kernel`), whose plain-Python
twin is :func:`~clustersim.fidelity.analytic.timeline.evaluate`. What it leaves out, by design, is
contention between concurrent calls (the flow fidelity's job): on a step whose calls never
share a link the two fidelities agree exactly. The breakdown is the critical stage's, as
:mod:`clustersim.result.breakdown` defines it for both.

>>> from clustersim.config.experiment import SimulationConfig, TrainingConfig
>>> from clustersim.network import build_cluster
>>> from clustersim.step import plan_step
>>> from clustersim.workload import get_model, resolve_plan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> training = TrainingConfig(global_batch=16, parallelism={"tp": 4, "pp": 2})
>>> model = get_model("llama3-8b")
>>> step = plan_step(model, resolve_plan(training, model, 16), cluster, training)
>>> o = estimate_step(step, cluster, SimulationConfig(fidelity="analytic"))
>>> abs(o.compute_s + o.exposed_comm_s + o.bubble_s - o.step_time_s) < 1e-12
True
"""

from __future__ import annotations

import numpy as np

from clustersim.engine.core import Deadlock
from clustersim.fidelity.analytic.arrays import encode
from clustersim.fidelity.analytic.kernel import (critical_breakdown_kernel,
                                                 timeline_kernel)
from clustersim.fidelity.analytic.prices import prices_for

from clustersim.result.outcome import StepOutcome

__all__ = ["estimate_step"]


def estimate_step(step, cluster, simulation=None, trace: bool = False) -> StepOutcome:
    """One step of ``step`` on ``cluster`` at uncontended prices (``simulation`` and
    ``trace`` are the flow fidelity's options; the analytic fidelity has no trace)."""
    prices = prices_for(cluster)
    arrays = encode(step, prices)
    ends, start, end, stage, op, compute, ok = timeline_kernel(*arrays.kernel_args())
    if not ok:
        raise Deadlock("deadlock: the step plan cannot finish (a receive whose send never "
                       "comes, or a call one of its stages never posts)")
    step_s = float(ends.max())
    compute_s, comm_s, exposed, sm_s, sm_exposed = critical_breakdown_kernel(
        int(np.argmax(ends)), start, end, stage, op, compute,   # the first of equals
        arrays.op_on_sms)
    link_bytes = _link_bytes(prices, arrays.link_terms, len(cluster.links))
    ranks = [s.ranks for s in step.stages]
    return StepOutcome(
        step_time_s=step_s, compute_s=compute_s, comm_s=comm_s, exposed_comm_s=exposed,
        bubble_s=max(0.0, step_s - compute_s - exposed), hidden_sm_comm_s=sm_s - sm_exposed,
        flops=float(np.dot(ranks, arrays.flops)),
        mem_bytes=float(np.dot(ranks, arrays.mem_bytes)), link_bytes=link_bytes)


def _link_bytes(prices, terms: dict, n_links: int) -> np.ndarray:
    """Bytes per link over the step: each link unit times the bytes it scales by, summed in
    the order of ``terms`` (one ``bincount`` instead of an indexed add per unit: the same
    sums, each link's in the same order)."""
    if not terms:
        return np.zeros(n_links)
    links, weights = [], []
    for key, scale in terms.items():
        (idx, unit), _ = prices.units[key]
        links.append(idx)
        weights.append(unit * scale)
    return np.bincount(np.concatenate(links), weights=np.concatenate(weights),
                       minlength=n_links).astype(np.float64, copy=False)
