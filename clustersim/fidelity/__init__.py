"""The two fidelities, side by side, both reading one step plan (:mod:`clustersim.step`):

- ``flow`` (:mod:`~clustersim.fidelity.flow`): the plan lowered to a Program and run by the
  SimPy engine on the flow-level network; concurrent calls contend on shared links;
- ``analytic`` (:mod:`~clustersim.fidelity.analytic`): the same ops in the same order at
  uncontended prices, evaluated in closed form (max-plus) for wide sweeps.

Neither decides scheduling: :mod:`~clustersim.fidelity.lowering` is the one reading of the
plan both share. Each returns a :class:`~clustersim.result.StepOutcome`.

>>> sorted(FIDELITIES)
['analytic', 'flow']
"""

from clustersim.fidelity.analytic import estimate_step
from clustersim.fidelity.flow import build_program, simulate_flow

__all__ = ["FIDELITIES", "simulate_flow", "estimate_step", "build_program"]

FIDELITIES = {"flow": simulate_flow, "analytic": estimate_step}
