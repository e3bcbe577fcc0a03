"""Deterministic stand-ins for ``run_scenario``, importable by spawned and dask workers.

conftest.py puts this folder on ``sys.path`` before anything starts a worker; spawned processes
(multiprocessing and dask nannies) inherit the parent's ``sys.path``, and a subprocess gets it
through ``PYTHONPATH``. Functions are pickled by reference, so they must live here, at module
level.

Knobs for the crash-and-resume test, read from the environment so worker processes see them:
``FAKE_RUN_SLEEP_S`` (seconds each run sleeps) and ``FAKE_RUN_CALLS_DIR`` (a folder where each
run leaves a file named by its scenario index).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from clustersim.units import parse


def fake_row(scenario) -> dict:
    """A full result row computed from first principles of a toy model, no simulation."""
    config = scenario.config
    plan = config.training.parallelism
    devices = config.cluster.devices or 8
    bandwidth = parse(config.cluster.overrides.get("scale_out.bandwidth", "100 GB/s"),
                      "bandwidth")
    compute = 64.0 * config.training.global_batch / devices
    comm = 1e12 / bandwidth / plan.tp
    exposed = comm / 4
    bubble = compute * (plan.pp - 1) / 8
    step = compute + exposed + bubble
    tokens = config.training.global_batch * 2048 / step
    energy = 700.0 * devices * step
    return {
        "status": "ok", "error": None, "step_time_s": step, "tokens_per_s": tokens,
        "mfu": compute / step / 2, "hfu": compute / step / 1.5,
        "model_tflops_per_device": 400.0 * compute / step, "compute_s": compute,
        "comm_s": comm, "exposed_comm_s": exposed, "bubble_s": bubble,
        "peak_memory_gib": 160.0 / plan.tp, "memory_capacity_gib": 80.0,
        "energy_j": energy, "energy_per_token_j": energy / (tokens * step),
        "avg_power_w": 700.0 * devices, "energy_compute_j": 0.8 * energy,
        "busiest_link": "ib-ndr", "busiest_link_util": min(1.0, 5e10 / bandwidth),
        "link_util_nvlink4": 0.5 / plan.tp, "link_util_ib-ndr": min(1.0, 5e10 / bandwidth),
    }


def ok_run(scenario) -> dict:
    return fake_row(scenario)


class Infeasible(Exception):
    """Like workload.Infeasible: an exception whose ``status`` names the row status."""

    status = "infeasible"


def flaky_run(scenario) -> dict:
    """tp=3 raises, pp=3 returns infeasible, tp=1 is oom, the rest are ok."""
    plan = scenario.config.training.parallelism
    if plan.tp == 3:
        raise ValueError(f"cannot split 32 heads over tp={plan.tp}")
    if plan.pp == 3:
        return {"status": "infeasible", "error": f"pp={plan.pp} does not divide 32 layers"}
    if plan.pp == 5:
        raise Infeasible("pp=5 does not divide 32 layers")
    row = fake_row(scenario)
    if plan.tp == 1:
        row.update(status="oom", error="needs 160 GiB, has 80 GiB")
    return row


def dying_run(scenario) -> dict:
    """The worker process dies outright (as if killed for memory) when tp=2."""
    if scenario.config.training.parallelism.tp == 2:
        os._exit(13)
    return fake_row(scenario)


def slow_run(scenario) -> dict:
    """fake_row, after sleeping FAKE_RUN_SLEEP_S; records the call in FAKE_RUN_CALLS_DIR."""
    calls = os.environ.get("FAKE_RUN_CALLS_DIR")
    if calls:
        Path(calls, f"{scenario.index}-{os.getpid()}-{time.monotonic_ns()}").touch()
    time.sleep(float(os.environ.get("FAKE_RUN_SLEEP_S", "0")))
    return fake_row(scenario)


def tracing_run(scenario) -> dict:
    """fake_row, plus a Chrome trace under the row key "trace" when the scenario asks for one."""
    row = fake_row(scenario)
    if scenario.config.output.trace:
        row["trace"] = {"traceEvents": [{"name": "step", "ph": "X", "ts": 0,
                                         "dur": row["step_time_s"] * 1e6}]}
    return row
