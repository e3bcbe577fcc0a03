"""Published measurements bundled with the project, and the comparison of predicted against
measured (``clustersim validate``).

>>> from clustersim.validate.collectives import load_measurements
>>> len(load_measurements()) > 50
True
"""

__all__ = ["collectives", "training", "frontier", "energy"]
