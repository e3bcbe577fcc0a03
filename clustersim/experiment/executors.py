"""Run scenarios in parallel: a local process pool by default, dask.distributed for many machines.

Every executor is a generator ``(scenarios, run_fn, workers=, scheduler=) -> Outcome``, yielding
each scenario's outcome as soon as it finishes, in whatever order they finish (the store sorts
by scenario index, so every executor gives the same table). ``run_fn(scenario) -> dict`` runs in
a worker through :func:`run_one`, which turns an exception into an ``error`` row (type and
message; the traceback travels back separately for the log) so the rest of the sweep goes on.
``run_fn`` must be importable by the workers (a module-level function): it is pickled by
reference.

- ``local``: a ``concurrent.futures`` process pool with the ``spawn`` context (forked pools
  hang with numba and threads), ``workers`` processes (default: the cores this process may
  use). A worker that dies (killed for memory, a segfault) breaks the pool; the scenarios that
  were in flight are re-run one at a time in a fresh pool, so the one that kills its worker is
  found and recorded as an ``error`` row and the innocent ones get their results.
- ``dask``: tasks on a dask.distributed cluster: the scheduler at ``scheduler`` if given, else
  a ``LocalCluster`` of ``workers`` single-threaded processes on loopback, closed at the end
  (an existing cluster keeps its own size: ``workers`` is then ignored). Workers on other
  machines need clustersim and the run function's module installed. Dask re-runs the tasks of
  a lost worker and gives up after a few deaths (``KilledWorker``), which becomes an error row.
- ``serial``: one after another in this process, for debuggers and profilers.
- ``auto`` (the ``clustersim run`` default): in this process while the sweep is short, the
  rest on a ``local`` pool once it is not. A spawned worker costs ``POOL_START_S`` before its
  first result (a fresh interpreter, the imports, the cluster built again), which is longer
  than a small sweep takes in the process that has already paid for them; from the second
  scenario on (the first is mostly those one-off costs), the last scenario's time predicts
  the rest, and the pool takes over when sharing the rest among the workers saves more than
  it costs to start them. A scenario run in this process has no worker to die for it:
  ``local`` keeps every scenario apart.

>>> from clustersim.experiment.scenario import Scenario
>>> from clustersim.config.experiment import ExperimentConfig
>>> config = ExperimentConfig.model_validate({"name": "demo", "model": "llama3-8b",
...     "cluster": {"topology": "dgx-h100"}, "training": {"global_batch": 8}})
>>> def fake(scenario):
...     return {"step_time_s": 1.0 + scenario.index}
>>> outcomes = run_scenarios([Scenario(0, "demo/0000", config)], fake, executor="serial")
>>> [(o.index, o.row["status"], o.row["step_time_s"]) for o in outcomes]
[(0, 'ok', 1.0)]
>>> run_one(lambda s: 1 / 0, Scenario(1, "demo/0001", config)).row["error"]
'ZeroDivisionError: division by zero'
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from clustersim.errors import InputError
from clustersim.experiment.columns import STATUSES, error_row, normalise_row
from clustersim.experiment.scenario import Scenario

__all__ = ["Outcome", "RunFunction", "EXECUTORS", "default_workers", "check_options",
           "run_one", "run_scenarios", "run_serial", "run_local", "run_dask", "run_auto",
           "POOL_START_S"]

RunFunction = Callable[[Scenario], Mapping[str, Any]]
_IN_FLIGHT_PER_WORKER = 2  # keeps every worker busy while the driver stores a result
_SCHEDULER_TIMEOUT = "10s"
# Wall seconds from starting a spawn pool to its workers' first results: interpreter, imports
# (numpy, pandas, numba kernels from cache, the simulator) and the cluster built again,
# measured at 1.5-2.5 s on 2 cores; `auto` hands scenarios to a pool only when that pays.
POOL_START_S = 2.0


@dataclass(frozen=True)
class Outcome:
    """What came back from running one scenario."""

    index: int
    row: dict[str, Any]
    traceback: str | None = None  # for the log, when the run raised
    trace: Any = None             # a Chrome trace the run returned under the row key "trace"


def default_workers() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_one(run_fn: RunFunction, scenario: Scenario) -> Outcome:
    """Run one scenario, never raising: an exception becomes an ``error`` row.

    An exception with a ``status`` attribute naming a row status (``infeasible``) sets it.
    """
    try:
        row = run_fn(scenario)
        if not isinstance(row, Mapping):
            raise TypeError(f"the run function returned a {type(row).__name__}, not a dict")
    except Exception as exc:
        status = getattr(exc, "status", "error")
        status = status if status in STATUSES else "error"
        message = f"{type(exc).__name__}: {exc}"
        return Outcome(scenario.index, error_row(scenario.name, message, status),
                       traceback.format_exc())
    row = dict(row)
    trace = row.pop("trace", None)
    row = normalise_row(row)
    row["scenario"] = scenario.name
    if row.get("status") is None:
        row["status"] = "ok"
    return Outcome(scenario.index, row, None, trace)


def _died(scenario: Scenario) -> Outcome:
    return Outcome(scenario.index, error_row(
        scenario.name, "worker process died while running this scenario (killed, out of memory "
                       "or crashed)"))


def run_serial(scenarios: Iterable[Scenario], run_fn: RunFunction, **_: Any
               ) -> Iterator[Outcome]:
    """Each scenario in turn, in this process."""
    for scenario in scenarios:
        yield run_one(run_fn, scenario)


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; the driver stops the workers itself, so they
    # should not each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(
        "spawn"), initializer=_ignore_interrupts)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now, running tasks included (they are re-run on resume)."""
    # ProcessPoolExecutor has no public way to end running tasks; its worker processes are
    # ours, so terminate them by their handles.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def run_local(scenarios: Iterable[Scenario], run_fn: RunFunction, workers: int | None = None,
              **_: Any) -> Iterator[Outcome]:
    """Scenarios on a local ``spawn`` process pool of ``workers`` processes."""
    pending = deque(scenarios)
    if not pending:
        return
    workers = max(1, min(workers or default_workers(), len(pending)))
    limit = workers * _IN_FLIGHT_PER_WORKER
    suspects: deque[Scenario] = deque()  # in flight when a worker died: re-run alone
    in_flight: dict[Any, tuple[Scenario, bool]] = {}  # future -> (scenario, ran alone)
    pool = _new_pool(workers)
    finished = False
    try:
        while pending or suspects or in_flight:
            outcomes: list[Outcome] = []
            broken = False
            try:
                if suspects and not in_flight:
                    future = pool.submit(run_one, run_fn, suspects[0])
                    in_flight[future] = (suspects.popleft(), True)
                isolating = suspects or any(alone for _, alone in in_flight.values())
                while not isolating and pending and len(in_flight) < limit:
                    future = pool.submit(run_one, run_fn, pending[0])
                    in_flight[future] = (pending.popleft(), False)
            except BrokenProcessPool:  # a worker died since the last wait
                broken = True
            if not broken:
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in done:
                    scenario, alone = in_flight.pop(future)
                    try:
                        outcomes.append(future.result())
                    except BrokenProcessPool:
                        broken = True
                        if alone:
                            outcomes.append(_died(scenario))
                        else:
                            suspects.append(scenario)
            if broken:
                for future, (scenario, _) in in_flight.items():
                    if future.done() and not future.cancelled() and future.exception() is None:
                        outcomes.append(future.result())  # finished before the pool broke
                    else:
                        suspects.append(scenario)
                in_flight.clear()
                _stop(pool)
                pool = _new_pool(workers)
            yield from outcomes
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:
            _stop(pool)


def run_dask(scenarios: Iterable[Scenario], run_fn: RunFunction, workers: int | None = None,
             scheduler: str | None = None, **_: Any) -> Iterator[Outcome]:
    """Scenarios as tasks on a dask.distributed cluster (the given scheduler or a local one)."""
    scenarios = list(scenarios)
    if not scenarios:
        return
    try:
        # an optional dependency, and a slow import: only for --executor dask
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError("the dask executor needs dask.distributed: "
                         "pip install 'clustersim[dask]'") from None
    with contextlib.ExitStack() as stack:
        if scheduler:
            try:
                client = stack.enter_context(Client(scheduler, timeout=_SCHEDULER_TIMEOUT))
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"cannot reach the dask scheduler at {scheduler!r}: "
                                 f"{exc}") from None
        else:
            n = max(1, min(workers or default_workers(), len(scenarios)))
            cluster = stack.enter_context(LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        futures = {client.submit(run_one, run_fn, s, pure=False): s for s in scenarios}
        try:
            for future in as_completed(futures):
                scenario = futures.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # KilledWorker, a lost connection, ...
                    outcome = Outcome(scenario.index, error_row(
                        scenario.name, f"{type(exc).__name__}: {exc}"), traceback.format_exc())
                future.release()
                yield outcome
        finally:
            if futures:
                client.cancel(list(futures))


def _pool_pays(seconds_each: float, left: int, workers: int) -> bool:
    """Whether ``left`` scenarios of ``seconds_each`` finish sooner on a fresh pool of
    ``workers`` processes than one after another here.

    >>> _pool_pays(0.1, 3, 2), _pool_pays(2.0, 10, 2), _pool_pays(5.0, 10, 1)
    (False, True, False)
    """
    workers = min(workers, left)
    if workers < 2:
        return False
    serial_s = seconds_each * left
    return POOL_START_S + serial_s / workers < serial_s


def run_auto(scenarios: Iterable[Scenario], run_fn: RunFunction, workers: int | None = None,
             **_: Any) -> Iterator[Outcome]:
    """Scenarios in this process while that is faster than starting a pool, then the rest on
    a local pool (see the module docstring)."""
    pending = deque(scenarios)
    workers = workers or default_workers()
    last_s: float | None = None  # the first scenario's time is mostly one-off costs
    ran = 0
    while pending:
        if last_s is not None and _pool_pays(last_s, len(pending), workers):
            yield from run_local(pending, run_fn, workers)
            return
        start = time.perf_counter()
        outcome = run_one(run_fn, pending.popleft())
        elapsed_s = time.perf_counter() - start  # before the yield: the caller's time is not ours
        ran += 1
        # A worker pays the one-offs again (imports, cluster, numba kernels: compiled on a
        # cold cache), so only a later scenario's time says what the rest will cost.
        last_s = elapsed_s if ran >= 2 else None
        yield outcome


EXECUTORS: dict[str, Callable[..., Iterator[Outcome]]] = {
    "local": run_local, "dask": run_dask, "serial": run_serial, "auto": run_auto}


def run_scenarios(scenarios: Iterable[Scenario], run_fn: RunFunction, executor: str = "local",
                  workers: int | None = None, scheduler: str | None = None
                  ) -> Iterator[Outcome]:
    """Outcomes of ``scenarios`` on the named executor, as they finish."""
    check_options(executor, workers, scheduler)
    return EXECUTORS[executor](scenarios, run_fn, workers=workers, scheduler=scheduler)


def check_options(executor: str, workers: int | None = None, scheduler: str | None = None
                  ) -> None:
    """Raise InputError for executor options that cannot work, before anything starts.

    >>> check_options("local", scheduler="tcp://10.0.0.5:8786")
    Traceback (most recent call last):
    ...
    clustersim.errors.InputError: a scheduler address needs the dask executor, not 'local'
    """
    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if scheduler and executor != "dask":
        raise InputError(f"a scheduler address needs the dask executor, not {executor!r}")
