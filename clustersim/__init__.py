"""clustersim: simulate distributed training on real interconnects.

>>> import clustersim
>>> callable(clustersim.run_experiment)
True
"""

__version__ = "0.1.0"

__all__ = ["__version__", "run_experiment"]


def __getattr__(name):
    # Lazy: `import clustersim` stays light (the CLI imports it for --version); the runner
    # pulls in pandas and the simulator only when asked for.
    if name == "run_experiment":
        from clustersim.experiment.runner import run_experiment

        return run_experiment
    raise AttributeError(f"module 'clustersim' has no attribute {name!r}")
