"""The accounting both fidelities feed: the time breakdown, energy, link columns, the row.

>>> from clustersim.result import StepOutcome, result_row, step_energy
"""

from clustersim.result.breakdown import critical_breakdown, rank_breakdown, union_length
from clustersim.result.energy import static_power_W, step_energy
from clustersim.result.outcome import StepOutcome
from clustersim.result.row import link_columns, result_row

__all__ = ["StepOutcome", "result_row", "link_columns", "step_energy", "static_power_W",
           "rank_breakdown", "critical_breakdown", "union_length"]
