"""One cold analytic scenario: a fresh interpreter (nothing cached but numba's on-disk
kernels), the cluster built, the plan resolved, the step planned and priced, the result row
made: GPT-3 175B on 2,048 H100 and Llama 3 405B on 16,384 H100 (dgx-h100, Megatron-style
plans). Targets (issue 14): < 0.5 s at 2,048 and < 2 s at 16,384 devices. Each case runs in
its own process, three times; the figure is the fastest (the machine may be shared). The
import time of ``clustersim`` (before the clock starts) is reported apart.

Run: ``python benchmarks/bench_cold.py``
"""

from __future__ import annotations

import sys
import time

from _harness import case_main, fmt_s, machine_note, run_case, verdict

CASES_SPEC = {
    "2048": ({"topology": "dgx-h100", "devices": 2048}, "gpt3-175b",
             {"global_batch": 1536, "seq_len": 2048, "recompute": "selective",
              "parallelism": {"tp": 8, "pp": 8, "sp": True, "zero": 1,
                              "schedule": "1f1b-interleaved", "virtual_stages": 4}}, 0.5),
    "16384": ({"topology": "dgx-h100", "devices": 16384}, "llama3-405b",
              {"global_batch": 2048, "seq_len": 8192,
               "parallelism": {"tp": 8, "pp": 16, "sp": True, "zero": 1,
                               "schedule": "1f1b-interleaved", "virtual_stages": 2}}, 2.0),
}


def cold(name: str) -> dict:
    start = time.perf_counter()
    from clustersim.config.experiment import ExperimentConfig
    from clustersim.experiment.scenario import simulate_scenario

    imported = time.perf_counter()
    cluster, model, training, _ = CASES_SPEC[name]
    config = ExperimentConfig.model_validate(
        {"name": f"cold-{name}", "cluster": cluster, "model": model, "training": training,
         "simulation": {"fidelity": "analytic"}})
    t0 = time.perf_counter()
    row = simulate_scenario(config)
    t1 = time.perf_counter()
    return {"import_s": imported - start, "scenario_s": t1 - t0,
            "step_time_s": row["step_time_s"], "mfu": row["mfu"]}


CASES = {name: (lambda n=name: cold(n)) for name in CASES_SPEC}


def main() -> None:
    print(machine_note())
    for name, (_, model, _, target) in CASES_SPEC.items():
        runs = [run_case(__file__, name) for _ in range(3)]
        good = [r for r in runs if "error" not in r]
        if not good:
            print(f"{name} H100: {runs[0]['error']}")
            continue
        best = min(good, key=lambda r: r["scenario_s"])
        print(f"{'cold analytic scenario, ' + model + ' on ' + name + ' H100':58s} "
              f"{fmt_s(best['scenario_s']):>10s}  < {target:g} s "
              f"{verdict(best['scenario_s'], target)}  (import {fmt_s(best['import_s'])}, "
              f"step {best['step_time_s']:.3f} s, MFU {best['mfu']:.1%})")


if __name__ == "__main__":
    if not case_main(CASES):
        main()
    sys.exit(0)
