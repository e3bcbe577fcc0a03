"""Flow-model speed on one big collective: a 1 GiB all-reduce across 1,024 GPUs of a DGX H100
fat-tree (target < 2 s) and across the 4,096-chip TPU v4 torus (target < 10 s), each under
2 GB of memory.

The collective is a Program with one simulated rank standing for every device and one
CollectiveCall whose group is all devices, run by ``clustersim.engine.simulate`` with the
default CommModel (calibrated capacities, ``auto`` algorithm selection). The wall time is
split into the algorithm selection (``CommModel.algorithm``, which prices every candidate
the way NCCL's tuner does) and the rest (expansion into phases, routing, flows). The cluster
build is reported apart. Numba kernels are loaded before timing; best of 3 fresh processes.

Reference: ASTRA-sim's own paper reports 95-194 s to simulate a 1,024-NPU direct all-reduce
(see DESIGN.md, "Peers").

Run: ``python benchmarks/bench_flow.py``
"""

from __future__ import annotations

from _harness import (Timer, case_main, fmt_mb, fmt_s, machine_note,
                      run_best, run_case, verdict)

SIZE_B = 2**30
CASES = {  # name: (preset, devices, target seconds)
    "dgx-h100-1024": ("dgx-h100", 1024, 2.0),
    "tpu-v4-4096": ("tpu-v4-pod", 4096, 10.0),
}
MEMORY_TARGET_B = 2e9


def all_reduce(name: str) -> dict:
    from clustersim.collectives import bus_factor
    from clustersim.engine import Program, simulate
    from clustersim.engine.comm import CommModel
    from clustersim.network import build_cluster

    preset, devices, _ = CASES[name]
    with Timer() as build_t:
        cluster = build_cluster(preset, devices)
    program = Program()
    rank = program.add_rank(cluster.devices[0], stands_for=devices)
    call = program.collective("all_reduce", SIZE_B, [cluster.devices], participants=(rank,),
                              label="all_reduce 1 GiB")
    program.post(rank, call)
    with Timer() as total_t:
        comm = CommModel(cluster)
        with Timer() as select_t:
            algorithm = comm.algorithm(program.calls[call])
        result = simulate(program, cluster, comm)
    busbw = SIZE_B * bus_factor("all_reduce", devices) / result.step_time_s
    return {"build_s": build_t.s, "simulate_s": total_t.s, "select_s": select_t.s,
            "algorithm": algorithm, "collective_s": result.step_time_s, "busbw_Bps": busbw,
            "reshares": result.reshares}


def main() -> None:
    script = __file__
    print(machine_note())
    print(f"{'figure':62s} {'measured':>12s}  target")
    for name, (preset, devices, target) in CASES.items():
        r = run_best(script, name, key=lambda r: r["simulate_s"])
        label = f"all_reduce 1 GiB, {preset} x{devices:,}"
        if "error" in r:
            print(f"{label}: {r['error']}")
            continue
        traced = run_case(script, name, traced=True)
        print(f"{label}, best of {r['runs']} processes")
        print(f"{'  simulate (flow, contention)':62s} {fmt_s(r['simulate_s']):>12s}  "
              f"< {target:g} s {verdict(r['simulate_s'], target)}")
        print(f"{'  of which algorithm selection (auto)':62s} {fmt_s(r['select_s']):>12s}")
        print(f"{'  cluster build (apart)':62s} {fmt_s(r['build_s']):>12s}")
        print(f"{'  peak RSS of the process':62s} {fmt_mb(r['maxrss_B']):>12s}  < 2 GB "
              f"{verdict(r['maxrss_B'], MEMORY_TARGET_B)}")
        if "tracemalloc_peak_B" in traced:
            print(f"{'  peak Python allocations (tracemalloc)':62s} "
                  f"{fmt_mb(traced['tracemalloc_peak_B']):>12s}  < 2 GB "
                  f"{verdict(traced['tracemalloc_peak_B'], MEMORY_TARGET_B)}")
        print(f"{'  algorithm chosen':62s} {r['algorithm']:>12s}")
        print(f"{'  simulated time / busbw':62s} {r['collective_s'] * 1e3:9.2f} ms  "
              f"{r['busbw_Bps'] / 1e9:.0f} GB/s busbw, {r['reshares']} re-shares")
    print(f"{'reference: ASTRA-sim, 1,024-NPU direct all-reduce':62s} {'95-194 s':>12s}  "
          f"(published)")


if __name__ == "__main__":
    if not case_main({name: (lambda name=name: all_reduce(name)) for name in CASES}):
        main()
