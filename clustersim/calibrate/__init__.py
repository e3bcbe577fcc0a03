"""Calibration fitting: refit the calibrated values from the measurements bundled with the
project (the layers below only read the fitted values).

>>> from clustersim.calibrate import FIT_PLAN
>>> [tech for tech, _, _ in FIT_PLAN]
['nvlink3', 'nvlink4']
"""

from clustersim.calibrate.collectives import FIT_PLAN, calibration_report, fit_calibration
from clustersim.calibrate.nelder_mead import nelder_mead

__all__ = ["FIT_PLAN", "fit_calibration", "calibration_report", "nelder_mead"]
