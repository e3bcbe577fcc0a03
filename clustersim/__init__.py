"""clustersim: simulate distributed training on real interconnects.

>>> import clustersim
>>> callable(clustersim.run_experiment), callable(clustersim.build_cluster)
(True, True)
"""

from clustersim.version import __version__

__all__ = ["__version__", "build_cluster", "run_experiment"]


def __getattr__(name):
    # Lazy: `import clustersim` stays light (the CLI imports it for --version); the runner
    # and the cluster builder pull in pandas, numba and networkx only when asked for.
    if name == "run_experiment":
        from clustersim.experiment.runner import run_experiment

        return run_experiment
    if name == "build_cluster":
        from clustersim.network.cluster import build_cluster

        return build_cluster
    raise AttributeError(f"module 'clustersim' has no attribute {name!r}")
