"""clustersim: simulate distributed training on real interconnects."""
__version__ = "0.1.0"
