"""One scenario: a fully specified experiment (no sweep left) and the function that runs it.

``run_scenario`` never raises for a problem of the scenario itself: an impossible plan is a row
with status ``infeasible``, a plan that does not fit is ``oom``, bad input or a crash is
``error``; the message goes in the ``error`` column so the rest of a sweep goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clustersim.config.experiment import ExperimentConfig

__all__ = ["Scenario", "run_scenario", "check_scenario"]


@dataclass(frozen=True)
class Scenario:
    """A single point of a sweep.

    ``swept`` maps each swept dotted key (``training.parallelism.tp``) to the value this
    scenario takes, as written in the experiment file; it becomes one column per key.
    """

    index: int
    name: str
    config: ExperimentConfig
    swept: dict[str, Any] = field(default_factory=dict)


def check_scenario(config: ExperimentConfig) -> None:
    """Resolve every preset name without simulating; raise InputError for unknown ones."""
    raise NotImplementedError("filled in when topology and workload land")


def run_scenario(scenario: Scenario) -> dict[str, Any]:
    """Simulate one scenario and return its result row (columns in experiment.columns)."""
    raise NotImplementedError("filled in when the engine lands")
