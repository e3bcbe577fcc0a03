"""Experiments: expand a sweep into scenarios, run them on one machine or many, keep every
result as soon as it is known, and write the results table, a report and plots.

``run_experiment(path)`` is the whole pipeline; ``clustersim run EXP.yaml`` calls it. It is
imported on first use, so a pool worker importing ``clustersim.experiment.scenario`` does not
load the runner (executors, store, report, tqdm).

>>> from clustersim.experiment import run_experiment
>>> run_experiment.__module__
'clustersim.experiment.runner'
"""

__all__ = ["run_experiment"]


def __getattr__(name: str):
    # lazy: pool workers import this package for the scenario module alone
    if name == "run_experiment":
        from clustersim.experiment.runner import run_experiment
        return run_experiment
    raise AttributeError(f"module 'clustersim.experiment' has no attribute {name!r}")
