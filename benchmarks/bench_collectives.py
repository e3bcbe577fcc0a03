"""Collective pricing speed: evaluations per second of the vectorised kernel after warm-up
(target >= 1,000,000/s on one core) and the cold start of a first call in a fresh process
with a warm numba cache (target < 2 s); and collective physics at scale: 1 GiB all-reduce bus
bandwidth on ``dgx-h100`` from 16 to 4,096 GPUs (targets: 1,024 GPUs >= 300 GB/s and >= 0.85 x
the 16-GPU figure, 4,096 within 10% of 1,024; the NIC bound 8 x 50 GB/s x 0.94 NCCL efficiency
= 376 GB/s, NVIDIA/nccl-tests#290), with the algorithm ``auto`` picked and the forced ring.

Run: ``python benchmarks/bench_collectives.py``
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # run from a source checkout
sys.path.insert(0, str(ROOT))

COLD = """
import time
start = time.perf_counter()
from clustersim.network import build_cluster
from clustersim.collectives import price
c = build_cluster("dgx-h100", 16)
price(c, c.devices, "all_reduce", [2.0**20, 2.0**30])
print(time.perf_counter() - start)
"""


def kernel_rate(points: int = 2_000_000, repeats: int = 5) -> float:
    from clustersim.collectives.cost import profile
    from clustersim.collectives.kernels import price_points_kernel
    from clustersim.collectives.select import candidates
    from clustersim.network import build_cluster

    c = build_cluster("dgx-h100", 16)
    profs = [profile(c, [c.devices], "all_reduce", name)
             for name in candidates(c, c.devices, "all_reduce", "auto")]
    profs += [profile(c, [c.devices], "all_reduce", "hierarchical/simple")]
    ptr = np.concatenate([[0], np.cumsum([len(p.steps) for p in profs])]).astype(np.int64)
    cat = lambda a: np.concatenate([getattr(p, a) for p in profs])  # noqa: E731
    rng = np.random.default_rng(0)
    point_profile = rng.integers(0, len(profs), points).astype(np.int64)
    point_size = 2.0 ** rng.uniform(10, 34, points)
    args = (ptr, cat("steps").astype(np.int64), cat("alpha_s"), cat("coef"), cat("rate_Bps"),
            cat("reduce_coef"), cat("reduce_Bps"))
    price_points_kernel(*args, point_profile[:10], point_size[:10])  # warm-up (compile/load)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        price_points_kernel(*args, point_profile, point_size)
        best = min(best, time.perf_counter() - start)
    return points / best


def cold_start() -> tuple[float, float]:
    """(in-process seconds, whole-process seconds) of a first call in a fresh interpreter;
    one run first so numba's cache is warm."""
    subprocess.run([sys.executable, "-c", COLD], check=True, capture_output=True, cwd=ROOT)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", COLD], check=True, capture_output=True,
                         text=True, cwd=ROOT)
    return float(out.stdout.strip()), time.perf_counter() - start


def scale_figures(counts=(16, 64, 256, 1024, 4096)) -> list[tuple]:
    """``(gpus, auto busbw, auto algorithm, ring/simple busbw, seconds to price)`` per count."""
    from clustersim.collectives import price
    from clustersim.network import build_cluster

    out = []
    for n in counts:
        c = build_cluster("dgx-h100", n)
        start = time.perf_counter()
        (t_auto,), (algo,) = price(c, c.devices, "all_reduce", [2.0**30])
        (t_ring,), _ = price(c, c.devices, "all_reduce", [2.0**30], "ring/simple")
        factor = 2 * (n - 1) / n * 2**30 / 1e9
        out.append((n, factor / t_auto, str(algo), factor / t_ring,
                    time.perf_counter() - start))
    return out


def main() -> None:
    rows = scale_figures()
    print("1 GiB all_reduce on dgx-h100 (busbw GB/s; NIC bound 376):")
    for n, auto, algo, ring, secs in rows:
        print(f"  {n:5d} GPUs: auto {auto:6.1f} ({algo}), ring/simple {ring:6.1f}  "
              f"[priced in {secs:.2f} s]")
    by = {r[0]: r[1] for r in rows}
    print(f"  1,024 / 16 = {by[1024] / by[16]:.3f} (target >= 0.85, and >= 300 GB/s); "
          f"4,096 / 1,024 = {by[4096] / by[1024]:.3f} (target within 0.90-1.10)")
    rate = kernel_rate()
    print(f"price_points_kernel: {rate:,.0f} evaluations/s (one core, after warm-up; "
          f"target >= 1,000,000/s)")
    inner, whole = cold_start()
    print(f"cold start, warm numba cache: first price() {inner:.2f} s in-process "
          f"(imports + build dgx-h100 x16 + price), {whole:.2f} s whole process "
          f"(target < 2 s)")


if __name__ == "__main__":
    main()
