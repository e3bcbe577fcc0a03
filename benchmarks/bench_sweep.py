"""Sweep speed at the analytic fidelity: Llama 3 70B on 512 H100 (dgx-h100, full recompute),
a grid of tp x pp x micro-batch x global batch x scale-out bandwidth (1,200 scenarios).

Figures:

- the analytic model itself: ``simulate_scenario`` in a loop on one core, after a warm-up
  pass over the same grid (target >= 5,000 scenarios/s, issue 14). Two passes: the same
  scenarios again (every cache hot) and the same grid at another sequence length (same
  clusters and collective families, new plans and stage work). The warm-up pass is reported
  too: it builds the 5 clusters and every group family's collective profiles;
- end to end through ``run_experiment`` (sweep expansion and validation, the local ``spawn``
  process pool with 1 and 2 workers, each worker building its own clusters, the results
  store, the combined Parquet/CSV and report; plots off): scenarios/s, no target; and the
  same with the ``serial`` executor (in this process: no pool, no pickling);
- where the end-to-end time goes outside the workers: expanding the sweep, and storing every
  row in a ``ResultStore``.

If the analytic fidelity (``clustersim.fidelity.estimate_step``) cannot be imported the
script says "analytic fidelity not available" and exits 0.

Run: ``python benchmarks/bench_sweep.py``
"""

from __future__ import annotations

import sys
import tempfile

from _harness import Timer, case_main, fmt_mb, fmt_s, machine_note, run_case, verdict

GRID = {
    "training.parallelism.tp": [1, 2, 4, 8],
    "training.parallelism.pp": [1, 2, 4, 8, 16],
    "training.micro_batch": [1, 2, 4],
    "training.global_batch": [512, 1024, 2048, 4096],
    "cluster.overrides.scale_out.bandwidth": ["12.5 GB/s", "25 GB/s", "50 GB/s", "100 GB/s",
                                              "200 GB/s"],
}
RATE_TARGET = 5000.0   # issue 14: a plan sweep at the analytic fidelity, per core


def experiment(seq_len: int | None = None) -> dict:
    """The sweep as a dict, as a user's YAML file would give it."""
    training = {"global_batch": 1024, "recompute": "full", "parallelism": {"tp": 8}}
    if seq_len:
        training["seq_len"] = seq_len
    return {"name": "bench-sweep-llama3-70b", "cluster": {"topology": "dgx-h100",
                                                           "devices": 512},
            "model": "llama3-70b", "training": training,
            "simulation": {"fidelity": "analytic"}, "sweep": {"grid": GRID},
            "output": {"plots": False}}


def analytic_available() -> bool:
    try:
        from clustersim.fidelity import estimate_step  # noqa: F401
    except ImportError:
        return False
    return True


def scenarios(seq_len: int | None = None):
    from clustersim.experiment.runner import load_document
    from clustersim.experiment.sweep import expand

    return expand(load_document(experiment(seq_len))).scenarios


def model_rate() -> dict:
    """simulate_scenario in a loop on one core: warm-up pass, hot pass, new-plans pass."""
    from clustersim.experiment.scenario import simulate_scenario
    from clustersim.workload import Infeasible

    def one_pass(configs) -> tuple[float, int]:
        feasible = 0
        with Timer() as t:
            for config in configs:
                try:
                    simulate_scenario(config)
                    feasible += 1
                except Infeasible:
                    pass
        return t.s, feasible

    with Timer() as expand_t:
        first = [s.config for s in scenarios()]
    other = [s.config for s in scenarios(seq_len=4096)]
    warm_s, feasible = one_pass(first)
    hot_s, _ = one_pass(first)
    new_s, new_feasible = one_pass(other)
    return {"scenarios": len(first), "feasible": feasible, "expand_s": expand_t.s,
            "warmup_s": warm_s, "hot_s": hot_s, "new_s": new_s, "new_feasible": new_feasible}


def end_to_end(workers: int) -> dict:
    from clustersim.experiment.runner import run_experiment

    with tempfile.TemporaryDirectory() as out, Timer() as t:
        frame = run_experiment(experiment(), out_dir=out, workers=workers, executor="local",
                               progress=False)
    counts = frame["status"].value_counts().to_dict()
    return {"scenarios": len(frame), "wall_s": t.s, "statuses": counts}


def store_cost() -> dict:
    """Seconds to store every row of the sweep in a ResultStore (one fsynced part each)."""
    from clustersim.experiment.store import PartId, ResultStore, config_hash

    found = scenarios()
    parts = [PartId(s.index, s.name, config_hash(s.config)) for s in found]
    row = {"status": "ok", "error": "", "step_time_s": 1.0, "mfu": 0.5}
    with tempfile.TemporaryDirectory() as out:
        store = ResultStore(out)
        with Timer() as t:
            for part, s in zip(parts, found):
                store.put(part, {**row, "scenario": s.name, **s.swept})
    return {"rows": len(parts), "store_s": t.s}


def end_to_end_serial() -> dict:
    """The same run in this process (executor ``serial``): no pool, no pickling."""
    from clustersim.experiment.runner import run_experiment

    with tempfile.TemporaryDirectory() as out, Timer() as t:
        frame = run_experiment(experiment(), out_dir=out, executor="serial", progress=False)
    return {"scenarios": len(frame), "wall_s": t.s,
            "statuses": frame["status"].value_counts().to_dict()}


CASES = {"model": model_rate, "e2e-1": lambda: end_to_end(1), "e2e-2": lambda: end_to_end(2),
         "e2e-serial": end_to_end_serial, "store": store_cost}


def main() -> None:
    if not analytic_available():
        print("analytic fidelity not available")
        return
    script = __file__
    print(machine_note())
    print(f"{'figure':66s} {'measured':>14s}  target")
    r = run_case(script, "model")
    if "error" in r:
        print(f"analytic model: {r['error']}")
    else:
        n = r["scenarios"]
        print(f"{'grid: scenarios (feasible); expansion + validation':66s} "
              f"{n:>6,} ({r['feasible']:,})  {fmt_s(r['expand_s'])}")
        print(f"{'analytic model, warm-up pass (5 clusters, all profiles)':66s} "
              f"{n / r['warmup_s']:>8,.0f} /s    ({fmt_s(r['warmup_s'])})")
        for key, label in (("hot_s", "analytic model, same scenarios again (one core)"),
                           ("new_s", "analytic model, new plans: seq_len 4096 (one core)")):
            rate = n / r[key]
            print(f"{label:66s} {rate:>8,.0f} /s    >= {RATE_TARGET:,.0f}/s "
                  f"{verdict(rate, RATE_TARGET, below=False)}")
        print(f"{'  peak RSS of the process':66s} {fmt_mb(r['maxrss_B']):>14s}")
    for workers in (1, 2, "serial"):
        e = run_case(script, f"e2e-{workers}")
        if "error" in e:
            print(f"run_experiment, {workers} worker(s): {e['error']}")
            continue
        label = (f"run_experiment end to end, {workers} worker(s), local pool"
                 if workers != "serial" else "run_experiment end to end, serial (no pool)")
        print(f"{label:66s} {e['scenarios'] / e['wall_s']:>8,.0f} /s    "
              f"({fmt_s(e['wall_s'])}, {e['statuses']})")
    s = run_case(script, "store")
    if "error" not in s:
        print(f"{'  of which storing rows (ResultStore.put, one fsync each)':66s} "
              f"{s['rows'] / s['store_s']:>8,.0f} /s    ({fmt_s(s['store_s'])})")


if __name__ == "__main__":
    if not case_main(CASES):
        main()
    sys.exit(0)
