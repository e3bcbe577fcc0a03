"""Flow fidelity at frontier scale (issue 14): whole training steps through
``simulate_scenario`` with ``simulation.fidelity: flow``, cold (the first scenario of a fresh
process after the imports and numba: cluster build, collective prices, program, simulation),
on DGX H100 fat-trees:

- Llama-3 405B, tp 8, pp 16, dp 128 on 16,384 GPUs: target < 10 s and < 1 GB peak RSS;
- Llama-3 70B, tp 8, pp 4, dp 256 on 8,192 GPUs: target < 10 s;
- Llama-3 405B, tp 8, pp 16, dp 1,024 on 131,072 GPUs (a 3-level fat-tree of radix-128
  switches: radix 64 tops out at 65,536 endpoints): target < 60 s and < 4 GB;
- growth: Llama-3 405B tp 8 pp 16 at 1k, 2k, 4k, 8k and 16k GPUs (dp 8 ... 128), the wall time
  of each, the ratio per doubling and the fitted exponent (time ~ devices^k): target
  <= 2.2x per doubling.

Every step uses micro-batch 1 and a global batch of 2 x pp micro-batches per data-parallel
replica (the timing does not depend on whether the activations fit: rows may say ``oom``).
The cluster build is reported inside the cold time and apart. Best of 2 fresh processes
(1 for the 131,072-GPU case); the machine is shared.

Run: ``python benchmarks/bench_scale.py`` (``--growth`` only the growth table).
"""

from __future__ import annotations

import math
import sys

from _harness import (Timer, case_main, fmt_mb, fmt_s, machine_note, run_best, verdict)

GiB = 2**30
# name: (model, tp, pp, devices, target s, target bytes or None, switch radix or None)
CASES = {
    "405b-16k": ("llama3-405b", 8, 16, 16384, 10.0, 1e9, None),
    "70b-8k": ("llama3-70b", 8, 4, 8192, 10.0, None, None),
    "405b-131k": ("llama3-405b", 8, 16, 131072, 60.0, 4e9, 128),
}
GROWTH = [1024, 2048, 4096, 8192, 16384]
GROWTH_TARGET = 2.2


def scenario(model: str, tp: int, pp: int, devices: int, radix: int | None) -> dict:
    dp = devices // (tp * pp)
    overrides = {"scale_out.radix": radix} if radix else {}
    return {"name": f"bench-{model}-{devices}",
            "cluster": {"topology": "dgx-h100", "devices": devices, "overrides": overrides},
            "model": model,
            "training": {"global_batch": dp * 2 * pp, "micro_batch": 1,
                         "parallelism": {"tp": tp, "pp": pp, "dp": dp}},
            "simulation": {"fidelity": "flow"}}


def step(model: str, tp: int, pp: int, devices: int, radix: int | None = None) -> dict:
    from clustersim.config.experiment import ExperimentConfig
    from clustersim.experiment.scenario import simulate_scenario
    from clustersim.network import build_cluster

    config = ExperimentConfig.model_validate(scenario(model, tp, pp, devices, radix))
    with Timer() as cold_t:
        with Timer() as build_t:
            build_cluster("dgx-h100", devices, config.cluster.overrides)
        row = simulate_scenario(config)
    return {"cold_s": cold_t.s, "build_s": build_t.s, "step_time_s": row["step_time_s"],
            "status": row.get("status", "ok")}


def _cases() -> dict:
    out = {name: (lambda c=c: step(c[0], c[1], c[2], c[3], c[6])) for name, c in CASES.items()}
    out.update({f"growth-{n}": (lambda n=n: step("llama3-405b", 8, 16, n)) for n in GROWTH})
    return out


def _targets(script: str) -> None:
    for name, (model, tp, pp, devices, target_s, target_B, _) in CASES.items():
        label = f"{model} tp{tp} pp{pp} dp{devices // (tp * pp)}, {devices:,} H100"
        r = run_best(script, name, key=lambda r: r["cold_s"], runs=1 if devices > 65536 else 2)
        if "error" in r:
            print(f"{label}: {r['error']}")
            continue
        print(f"{label} (best of {r['runs']} processes)")
        print(f"{'  cold step, flow fidelity':62s} {fmt_s(r['cold_s']):>10s}  < {target_s:g} s "
              f"{verdict(r['cold_s'], target_s)}")
        print(f"{'  of which the cluster build':62s} {fmt_s(r['build_s']):>10s}")
        memory = f"  < {target_B / GiB:.0f} GiB {verdict(r['maxrss_B'], target_B)}" \
            if target_B else ""
        print(f"{'  peak RSS of the process':62s} {fmt_mb(r['maxrss_B']):>10s}{memory}")
        print(f"{'  simulated step / row status':62s} {r['step_time_s']:8.3f} s  {r['status']}")


def _growth(script: str) -> None:
    print(f"growth: llama3-405b tp8 pp16, cold step vs devices (target <= {GROWTH_TARGET}x "
          f"per doubling)")
    times = []
    for n in GROWTH:
        r = run_best(script, f"growth-{n}", key=lambda r: r["cold_s"], runs=2)
        if "error" in r:
            print(f"  {n:>6,} GPUs: {r['error']}")
            return
        ratio = f"{r['cold_s'] / times[-1]:.2f}x" if times else ""
        times.append(r["cold_s"])
        print(f"  {n:>6,} GPUs (dp {n // 128:>4})  {fmt_s(r['cold_s']):>10s}  "
              f"build {fmt_s(r['build_s']):>9s}  {fmt_mb(r['maxrss_B']):>9s}  {ratio}")
    ratios = [b / a for a, b in zip(times, times[1:])]
    xs = [math.log(n) for n in GROWTH]
    ys = [math.log(t) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    print(f"  fitted exponent k (time ~ devices^k): {k:.2f} ({2 ** k:.2f}x per doubling); "
          f"worst doubling {max(ratios):.2f}x {verdict(max(ratios), GROWTH_TARGET + 1e-9)}")


def main() -> None:
    script = __file__
    print(machine_note())
    if "--growth" not in sys.argv:
        print(f"{'figure':62s} {'measured':>10s}  target")
        _targets(script)
    _growth(script)


if __name__ == "__main__":
    if not case_main(_cases()):
        main()
