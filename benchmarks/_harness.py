"""Shared measuring harness of the benchmark scripts (not a benchmark itself).

Every case of a benchmark runs in a fresh interpreter, twice:

1. untimed imports, the numba kernels loaded (``warm_numba``), then the case measured with
   ``time.perf_counter``; the process's peak resident set (``ru_maxrss``) is read at the end,
   so it covers the interpreter, the imports and the case, and nothing from other cases.
   Timed cases run in several fresh interpreters and the best run is kept (``run_best``):
   the machine is shared, and the least disturbed run is the one that measures the code;
2. the same with ``tracemalloc`` started before the case: the peak of Python allocations
   (numpy buffers included, since numpy reports them to tracemalloc). Tracing slows
   allocation-heavy code several times, so its wall time is never reported.

A case is a function returning a dict of figures; the child prints it as one JSON line that
the parent reads back. Run a single case by hand with ``python bench_x.py --case NAME``.

A script started with ``--quick`` (``python -m benchmarks --quick`` does) runs each timed
case in one fresh interpreter instead of ``run_best``'s several, skips the traced runs (no
tracemalloc peak), and starts no case once the script has run ``QUICK_BUDGET_S``: a case left
out prints as an error saying so.

>>> fmt_s(0.01234), fmt_mb(3 * 2**20)
('0.0123 s', '3 MiB')
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

__all__ = ["ROOT", "QUICK", "QUICK_BUDGET_S", "warm_numba", "maxrss_B", "case_main", "run_case", "fmt_s",
           "fmt_mb", "verdict", "Timer", "machine_note", "run_best"]

ROOT = Path(__file__).resolve().parent.parent  # benchmarks run from a source checkout
QUICK = "--quick" in sys.argv and "--case" not in sys.argv  # the script's own flag, not a case's
QUICK_BUDGET_S = 15.0  # under --quick, no case starts after the script has run this long
_STARTED = time.perf_counter()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def warm_numba() -> float:
    """Load (or compile, the first time on a machine) every numba kernel the engine and the
    pricing use, on tiny inputs; returns the seconds it took."""
    import numpy as np

    start = time.perf_counter()
    from clustersim.collectives.kernels import price_points_kernel
    from clustersim.network.maxmin import max_min_rates

    max_min_rates(np.array([0, 1]), np.array([0]), np.ones(1), np.ones(1))
    one_f, one_i = np.ones(1), np.ones(1, dtype=np.int64)
    price_points_kernel(np.array([0, 1], dtype=np.int64), one_i, one_f, one_f, one_f, one_f,
                        one_f, np.zeros(1, dtype=np.int64), one_f)
    return time.perf_counter() - start


def machine_note() -> str:
    """Cores this process may use and the 1-minute load average: the machine is shared, so
    every timing is read against them."""
    return (f"cores available: {len(os.sched_getaffinity(0))}, load average "
            f"{os.getloadavg()[0]:.1f} at start")


def maxrss_B() -> int:
    """Peak resident set of this process so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Timer:
    """``with Timer() as t: ...`` then ``t.s`` (perf_counter seconds)."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self._start


def case_main(cases: dict[str, Callable[[], dict]]) -> bool:
    """If this process was started as a child (``--case NAME [--traced]``), run that case,
    print its figures as JSON and return True; else return False."""
    if "--case" not in sys.argv:
        return False
    name = sys.argv[sys.argv.index("--case") + 1]
    traced = "--traced" in sys.argv
    figures: dict = {"warm_numba_s": warm_numba()}
    if traced:
        tracemalloc.start()
    figures.update(cases[name]())
    if traced:
        figures["tracemalloc_peak_B"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    figures["maxrss_B"] = maxrss_B()
    print("RESULT " + json.dumps(figures, default=str))
    return True


def run_case(script: str, name: str, traced: bool = False, timeout_s: float = 1800) -> dict:
    """Run one case of ``script`` in a fresh interpreter; its figures, or ``{"error": ...}``
    (``{}`` for a traced run under ``--quick``: the figure is left out)."""
    if traced and QUICK:
        return {}
    if QUICK and time.perf_counter() - _STARTED > QUICK_BUDGET_S:
        return {"error": f"left out by --quick (the script's first {QUICK_BUDGET_S:.0f} s "
                         "are spent)"}
    cmd = [sys.executable, script, "--case", name] + (["--traced"] if traced else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {out.returncode}: {tail}"}


def run_best(script: str, name: str, key: Callable[[dict], float], runs: int = 3) -> dict:
    """The run with the smallest ``key`` of ``runs`` fresh-interpreter runs of a case (the
    machine is shared: the best run is the one least disturbed by others); ``runs`` is kept
    in the figures (one run under ``--quick``)."""
    runs = 1 if QUICK else runs
    best: dict = {}
    for _ in range(runs):
        r = run_case(script, name)
        if "error" in r:
            return r
        if not best or key(r) < key(best):
            best = r
    best["runs"] = runs
    return best


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def fmt_mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MiB"


def verdict(value: float, limit: float, below: bool = True) -> str:
    """``ok`` or ``MISSED`` against a target (``below``: the value must stay under it)."""
    good = value < limit if below else value >= limit
    return "ok" if good else "MISSED"
