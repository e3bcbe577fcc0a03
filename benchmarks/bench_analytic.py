"""Analytic fidelity speed and agreement.

Speed: scenarios per second on one core over a plan search for GPT-3 175B and Llama 3 70B on
1,024 H100s (DGX H100 nodes on an NDR fat-tree): tp x pp x micro-batch x schedule x ZeRO x
sequence parallelism x three scale-out bandwidths, each scenario ``resolve_plan`` +
``plan_step`` (the step plan, its memory included) + ``estimate_step`` (target >= 5,000/s
after warm-up). Three figures: the first pass (it builds the collective profiles of every
group family of the sweep: the collectives layer's cost, paid once per cluster and family),
the steady state (the same families, new plans: another global batch), and the steady state
with the chunk-work and slot-template caches emptied before the pass.

Agreement: step time and breakdown of the analytic and flow fidelities (one StepPlan each).

Run: ``python benchmarks/bench_analytic.py [--quick]``
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # run from a source checkout
sys.path.insert(0, str(ROOT))

from clustersim.config.experiment import SimulationConfig, TrainingConfig  # noqa: E402
from clustersim.fidelity import estimate_step, simulate_flow  # noqa: E402
from clustersim.fidelity.analytic import templates  # noqa: E402
from clustersim.network import build_cluster  # noqa: E402
from clustersim.step import plan_step  # noqa: E402
from clustersim.workload import Infeasible, get_model, resolve_plan  # noqa: E402
from clustersim.workload import chunks  # noqa: E402

BANDWIDTHS = ("25 GB/s", "50 GB/s", "100 GB/s")
GRID = dict(tp=(2, 4, 8), pp=(1, 2, 4, 8, 16), micro_batch=(1, 2),
            schedule=("1f1b", "1f1b-interleaved"), zero=(0, 1), sp=(False, True))


def scenarios(clusters, global_batch: int):
    """(model, cluster, training) of every point of the grid."""
    for name in ("gpt3-175b", "llama3-70b"):
        model = get_model(name)
        for bw, values in itertools.product(BANDWIDTHS, itertools.product(*GRID.values())):
            tp, pp, mb, sched, zero, sp = values
            par = {"tp": tp, "pp": pp, "zero": zero, "sp": sp, "schedule": sched,
                   "virtual_stages": 2 if sched == "1f1b-interleaved" else 1}
            yield model, clusters[bw], TrainingConfig(global_batch=global_batch,
                                                      micro_batch=mb, parallelism=par)


def sweep(clusters, global_batch: int) -> tuple[int, int, float, float]:
    """(scenarios, feasible, CPU seconds, checksum) of one pass over the grid (CPU time of
    this process: the machine may be shared, and one core is what the target is about)."""
    total = feasible = 0
    checksum = 0.0
    start = time.process_time()
    for model, cluster, training in scenarios(clusters, global_batch):
        total += 1
        try:
            plan = resolve_plan(training, model, len(cluster.devices))
        except Infeasible:
            continue
        step = plan_step(model, plan, cluster, training)
        est = estimate_step(step, cluster)
        checksum += est.step_time_s + step.peak_stage.memory.total_B * 1e-12
        feasible += 1
    return total, feasible, time.process_time() - start, checksum


def clear_stage_caches() -> None:
    for fn in (chunks.chunk_work, chunks.optimizer_work, templates.slot_template):
        fn.cache_clear()


def speed(quick: bool) -> None:
    start = time.perf_counter()
    clusters = {bw: build_cluster("dgx-h100", devices=1024,
                                  overrides={"scale_out.bandwidth": bw}) for bw in BANDWIDTHS}
    print(f"3 clusters of 1,024 H100 built in {time.perf_counter() - start:.1f} s")
    if quick:
        global GRID
        GRID = {**GRID, "tp": (8,), "pp": (4, 8)}
    n, ok, dt, _ = sweep(clusters, 1536)
    print(f"first pass (builds every family's collective profiles): {ok} of {n} scenarios "
          f"feasible in {dt:.1f} CPU s = {ok / dt:,.0f} scenarios/s")
    for label, clear in (("steady state", False), ("steady state, stage work cold", True)):
        best = float("inf")
        for rep, gb in enumerate((3072, 4608, 6144)):
            if clear:
                clear_stage_caches()
            n, ok, dt, _ = sweep(clusters, gb)
            best = min(best, dt / ok)
        print(f"{label}: {ok} scenarios, {1 / best:,.0f} scenarios/s per CPU-second "
              f"({best * 1e6:.0f} us each, best of 3 passes)")


AGREEMENT = [
    (16, "llama3-8b", {"tp": 8}, {}),
    (16, "llama3-8b", {"tp": 4, "pp": 2}, {}),
    (16, "llama3-8b", {"tp": 2, "pp": 4, "schedule": "1f1b-interleaved",
                       "virtual_stages": 2}, {}),
    (32, "llama3-8b", {"tp": 8, "zero": 1}, {}),
    (32, "llama3-8b", {"tp": 8, "zero": 3}, {}),
    (64, "llama3-8b", {"tp": 4, "pp": 2, "sp": True, "zero": 1}, {}),
    (32, "llama3-8b", {"tp": 8, "zero": 2}, {"scale_out.bandwidth": "5 GB/s"}),
    (32, "llama3-8b", {"tp": 4, "pp": 2, "zero": 2}, {"scale_out.bandwidth": "5 GB/s"}),
    (32, "gpt3-175b", {"tp": 8, "pp": 4}, {}),
]


def agreement() -> None:
    print(f"\n{'scenario':58s} {'flow s':>8s} {'analytic':>8s} {'error':>7s}  "
          f"{'exposed flow/ana':>17s} {'bubble flow/ana':>16s}")
    for devices, name, par, overrides in AGREEMENT:
        cluster = build_cluster("dgx-h100", devices=devices, overrides=overrides)
        model = get_model(name)
        seq = 2048 if name == "gpt3-175b" else None
        training = TrainingConfig(global_batch=2 * devices, seq_len=seq, parallelism=par)
        step = plan_step(model, resolve_plan(training, model, devices), cluster, training)
        est = estimate_step(step, cluster)
        flow = simulate_flow(step, cluster, SimulationConfig())
        parts = {"exposed_comm_s": flow.exposed_comm_s, "bubble_s": flow.bubble_s}
        label = f"{devices} {name} {par}" + (" 5GB/s" if overrides else "")
        print(f"{label[:58]:58s} {flow.step_time_s:8.4f} {est.step_time_s:8.4f} "
              f"{est.step_time_s / flow.step_time_s - 1:+7.2%}  "
              f"{parts['exposed_comm_s']:8.4f}/{est.exposed_comm_s:8.4f} "
              f"{parts['bubble_s']:7.4f}/{est.bubble_s:8.4f}")


if __name__ == "__main__":
    speed("--quick" in sys.argv)
    agreement()
