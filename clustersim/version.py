"""The package version, in a module of its own so any layer can name it without importing the
top-level package's lazy attributes.

>>> from clustersim.version import __version__
>>> __version__.count(".")
2
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
