"""``python -m benchmarks [--quick] [--csv FILE] [--only NAME ...]``: every benchmark, one command.

Two kinds of case, each run in fresh processes:

- whole-process cases (``WHOLE_PROCESS``): a ``clustersim`` command timed from its start to
  its exit, the way a user meets it: once with an empty numba cache (``cold``: every kernel
  compiled) and ``WARM_RUNS`` times with the user's cache (``warm``: min and median); peak RSS
  of the process; the simulated result it printed beside the time target;
- every ``benchmarks/bench_*.py`` script (found by name, so a new script joins by being
  there): run once, its own figures and targets printed as it prints them, with the script's
  wall time and peak RSS. Each script already runs its cases in fresh interpreters
  (``_harness.py``).

Peak RSS is the operating system's figure for the finished child (``os.wait4``), the
largest process among those it waited for. ``--quick`` (2 minutes on a shared 2-core
machine) runs the whole-process cases warm twice and cold once, and each script with
``--quick``: one process per timed case instead of three, no traced runs, no case started
after the script's first 15 s (``_harness.QUICK``). Every figure goes to a CSV (default
``results/benchmarks.csv``); the table printed at the end is the one README's Speed section
shows.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WARM_RUNS = {"full": 5, "quick": 2}
SCRIPT_TIMEOUT_S = {"full": 3600, "quick": 300}


@dataclass(frozen=True)
class WholeProcess:
    """A clustersim command timed whole, its time target, and how to read its result."""

    name: str
    what: str
    argv: tuple[str, ...]
    target_s: float
    result: str  # a regex whose first group is the simulated result in the output
    result_label: str


WHOLE_PROCESS = (
    WholeProcess("quickstart", "clustersim run experiments/quickstart.yaml (4 scenarios)",
                 ("run", "experiments/quickstart.yaml", "--out", "{out}"), 1.5,
                 r"answer: (\S+ is fastest \([^)]*\))", "answer"),
    WholeProcess("gpt3-1024-a100", "clustersim run: GPT-3 175B, 1,024 A100, one flow step",
                 ("run", "benchmarks/cases/gpt3-175b-1024-a100.yaml", "--out", "{out}"), 2.0,
                 r"/0000\s+ok\s+([\d.]+)", "step time (s)"),
    WholeProcess("allreduce-1GiB-1024-h100",
                 "clustersim collective: 1 GiB all_reduce, 1,024 H100",
                 ("collective", "--topology", "dgx-h100", "--devices", "1024", "--op",
                  "all_reduce", "--sizes", "1GiB"), 0.5,
                 r"1073741824\s+[\d.]+\s+[\d.]+\s+([\d.]+)", "busbw (GB/s)"),
)


@dataclass
class Run:
    wall_s: float
    cpu_s: float  # user + system of the child and what it waited for
    maxrss_B: int
    code: int
    out: str


@dataclass
class Outcome:
    """One row of the final table (and of the CSV)."""

    kind: str
    name: str
    cold_s: float | None = None
    warm_s: list[float] = field(default_factory=list)
    warm_cpu_s: list[float] = field(default_factory=list)
    maxrss_B: int = 0
    target: str = ""
    verdict: str = ""
    result: str = ""
    figures: list[str] = field(default_factory=list)


def run_whole(argv: list[str], env: dict | None = None, timeout_s: float = 3600) -> Run:
    """Start ``argv``, wait for it, and read its wall time and peak RSS (``os.wait4``)."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                 env=env)
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.005)
        wall_s = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        return Run(wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024,
                   child.returncode, out.read())


def _env(**extra: str) -> dict:
    """The children's environment: this checkout first on the path, and Python's bytecode
    cache on (a user's second run reads ``__pycache__``; without it every process compiles
    the package's ~130 modules again, ~0.1 s)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def whole_process(case: WholeProcess, mode: str) -> Outcome:
    """The case cold (empty numba cache) once, then warm ``WARM_RUNS[mode]`` times."""
    outcome = Outcome("whole process", case.name, target=f"< {case.target_s:g} s")
    with tempfile.TemporaryDirectory() as scratch:
        argv = [sys.executable, "-m", "clustersim",
                *(a.replace("{out}", str(Path(scratch) / "out")) for a in case.argv)]
        cold = run_whole(argv, _env(NUMBA_CACHE_DIR=str(Path(scratch) / "numba")))
        runs = [run_whole(argv, _env()) for _ in range(WARM_RUNS[mode])]
    for r in (cold, *runs):
        if r.code != 0:
            outcome.verdict = f"exit {r.code}: {r.out.strip().splitlines()[-1:]}"
            return outcome
    outcome.cold_s = cold.wall_s
    outcome.warm_s = [r.wall_s for r in runs]
    outcome.warm_cpu_s = [r.cpu_s for r in runs]
    outcome.maxrss_B = max(r.maxrss_B for r in runs)
    found = re.search(case.result, runs[-1].out)
    outcome.result = f"{case.result_label}: {found.group(1) if found else '?'}"
    outcome.verdict = "ok" if statistics.median(outcome.warm_s) < case.target_s else "MISSED"
    return outcome


def scripts() -> list[Path]:
    """Every benchmark script, by name: a new ``bench_*.py`` joins without registering."""
    return sorted(HERE.glob("bench_*.py"))


_FIGURE = re.compile(r"target|\b(ok|MISSED)\b")


def script(path: Path, mode: str) -> Outcome:
    """One script in a fresh interpreter; its printed figure lines kept as they are."""
    argv = [sys.executable, str(path)] + (["--quick"] if mode == "quick" else [])
    r = run_whole(argv, _env(), SCRIPT_TIMEOUT_S[mode])
    lines = [line.rstrip() for line in r.out.splitlines() if line.strip()]
    outcome = Outcome("script", path.stem, cold_s=r.wall_s, maxrss_B=r.maxrss_B,
                      figures=lines)
    missed = sum("MISSED" in line for line in lines)
    outcome.verdict = (f"exit {r.code}" if r.code else
                       f"{missed} MISSED" if missed else "ok")
    outcome.target = f"{sum(bool(_FIGURE.search(line)) for line in lines)} with a target"
    return outcome


def machine() -> str:
    """CPU model, the cores this process may use, memory, load, Python and numba."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_GiB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_GiB = float("nan")
    try:
        from importlib.metadata import version  # stdlib; only to name numba's version

        numba = version("numba")
    except Exception:  # noqa: BLE001 - a missing numba is reported, not fatal here
        numba = "?"
    return (f"{model}, {len(os.sched_getaffinity(0))} cores available, {mem_GiB:.0f} GiB; "
            f"load average {os.getloadavg()[0]:.1f} at start; Python "
            f"{platform.python_version()}, numba {numba}; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def _s(x: float | None) -> str:
    return "" if x is None else f"{x:.2f} s"


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.0f} MiB" if nbytes else ""


def table(outcomes: list[Outcome], mode: str) -> str:
    """The Markdown table README's Speed section quotes."""
    warm_n = WARM_RUNS[mode]
    lines = [f"| case | cold (empty numba cache) | warm, min / median of {warm_n} | warm cpu "
             "(median) | peak RSS | target | | simulated |", "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        if o.kind == "whole process":
            warm = (f"{min(o.warm_s):.2f} / **{statistics.median(o.warm_s):.2f} s**"
                    if o.warm_s else "")
            cpu = _s(statistics.median(o.warm_cpu_s)) if o.warm_cpu_s else ""
            lines.append(f"| {o.name} | {_s(o.cold_s)} | {warm} | {cpu} | {_mib(o.maxrss_B)} "
                         f"| {o.target} | {o.verdict} | {o.result} |")
    lines += ["", "| script | wall (whole script) | peak RSS | figures | |",
              "|---|---|---|---|---|"]
    for o in outcomes:
        if o.kind == "script":
            lines.append(f"| {o.name} | {_s(o.cold_s)} | {_mib(o.maxrss_B)} | {o.target} | "
                         f"{o.verdict} |")
    return "\n".join(lines)


def write_csv(path: Path, outcomes: list[Outcome], mode: str, where: str) -> None:
    """One row per case and one per figure line a script printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["mode", "kind", "case", "cold_s", "warm_min_s", "warm_median_s",
                      "warm_cpu_median_s", "peak_rss_mib", "target", "verdict", "result", "machine"])
        for o in outcomes:
            warm = (f"{min(o.warm_s):.4f}", f"{statistics.median(o.warm_s):.4f}",
                    f"{statistics.median(o.warm_cpu_s):.4f}") if o.warm_s else ("", "", "")
            out.writerow([mode, o.kind, o.name, "" if o.cold_s is None else f"{o.cold_s:.4f}",
                          *warm, f"{o.maxrss_B / 2**20:.1f}", o.target, o.verdict, o.result,
                          where])
            for line in o.figures:
                if _FIGURE.search(line):
                    out.writerow([mode, "figure", o.name, "", "", "", "", "", "", "", line.strip(),
                                  where])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer runs per case (2 minutes on a shared 2-core machine)")
    parser.add_argument("--csv", type=Path, default=ROOT / "results" / "benchmarks.csv")
    parser.add_argument("--only", nargs="*", metavar="NAME",
                        help="cases or scripts whose name contains one of these")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    where = machine()
    print(f"# python -m benchmarks{' --quick' if args.quick else ''}\n{where}\n")

    def wanted(name: str) -> bool:
        return not args.only or any(part in name for part in args.only)

    outcomes: list[Outcome] = []
    for case in WHOLE_PROCESS:
        if wanted(case.name):
            print(f"## {case.name}: {case.what}", flush=True)
            outcomes.append(whole_process(case, mode))
            o = outcomes[-1]
            print(f"  cold {_s(o.cold_s)}, warm {', '.join(_s(s) for s in o.warm_s)} (cpu "
                  f"{', '.join(_s(s) for s in o.warm_cpu_s)}), peak {_mib(o.maxrss_B)}; {o.target} {o.verdict}; {o.result}\n", flush=True)
    for path in scripts():
        if wanted(path.stem):
            print(f"## {path.name}", flush=True)
            outcomes.append(script(path, mode))
            o = outcomes[-1]
            print("\n".join("  " + line for line in o.figures))
            print(f"  [{path.name}: {_s(o.cold_s)} whole script, peak {_mib(o.maxrss_B)}, "
                  f"{o.verdict}]\n", flush=True)
    print(table(outcomes, mode))
    write_csv(args.csv, outcomes, mode, where)
    print(f"\nwrote {args.csv}")
    return 0 if all(o.verdict == "ok" or "MISSED" in o.verdict for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
