"""One published training run against the simulator: its experiment, run at a fidelity, and
the predicted step time against the measured one. Shared by the bundled validation rows
(:mod:`~clustersim.validate.training`) and the frontier rows
(:mod:`~clustersim.validate.frontier`).

>>> config = {"name": "tiny", "cluster": {"topology": "dgx-h100", "devices": 8},
...           "model": "llama3-8b", "training": {"global_batch": 8, "parallelism": {"tp": 8}}}
>>> result, columns = predict_step(config, 1.0, "analytic")
>>> columns["status"], columns["error"] == columns["predicted_step_s"] - 1.0
('ok', True)
"""

from __future__ import annotations

from typing import Any

from clustersim.config.experiment import ExperimentConfig
from clustersim.experiment.scenario import Scenario, run_scenario

__all__ = ["predict_step"]


def predict_step(config: dict[str, Any], measured_s: float, fidelity: str
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(result row, columns)`` of ``config`` run at ``fidelity``: the columns are
    ``measured_step_s``, ``predicted_step_s``, ``error`` (relative; NaN without a step
    time), ``status`` and ``mfu``."""
    config = {**config, "simulation": {"fidelity": fidelity}}
    result = run_scenario(Scenario(0, config["name"], ExperimentConfig.model_validate(config)))
    predicted = result.get("step_time_s")
    error = (predicted - measured_s) / measured_s if predicted else float("nan")
    return result, {"measured_step_s": measured_s, "predicted_step_s": predicted,
                    "error": error, "status": result["status"], "mfu": result.get("mfu")}
