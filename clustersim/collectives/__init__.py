"""Collective communication: ops, algorithms expanded into phases on the real topology graph,
their analytic price, automatic algorithm selection and the calibrated values behind them
(refitted by :mod:`clustersim.calibrate`).

>>> from clustersim.network import build_cluster
>>> from clustersim.collectives import collective_time_s
>>> c = build_cluster("dgx-a100", 8)
>>> 0 < collective_time_s(c, c.devices, "all_reduce", 2**20) < 1e-3
True
"""

from clustersim.collectives.algorithms import ALGORITHMS, expand, valid_algorithms
from clustersim.collectives.calibration import (Calibration, default_calibration,
                                                load_calibration)
from clustersim.collectives.cost import (effective_capacity_Bps, phase_latency_s, phase_time_s,
                                         profile)
from clustersim.collectives.group_structure import GroupInfo, group_info
from clustersim.collectives.op_types import OPS, all_to_all_matrix, bus_factor
from clustersim.collectives.phase import Phase
from clustersim.collectives.select import collective_time_s, price, select_algorithm

__all__ = ["OPS", "ALGORITHMS", "Phase", "GroupInfo", "Calibration", "expand", "group_info",
           "valid_algorithms", "bus_factor", "all_to_all_matrix", "effective_capacity_Bps",
           "phase_latency_s", "phase_time_s", "profile", "collective_time_s", "price",
           "select_algorithm", "default_calibration", "load_calibration"]
