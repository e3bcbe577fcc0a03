"""`network.sharp` is a cluster override an experiment may set (or sweep): it describes what
the fabric's switches do, not its graph, so the pre-run check lets it through and the
all-reduce it enables is priced in-network."""

from __future__ import annotations

from clustersim.config.experiment import ExperimentConfig
from clustersim.experiment.scenario import Scenario, check_scenario, run_scenario


def _config(sharp):
    return ExperimentConfig.model_validate({
        "name": "sharp", "cluster": {"topology": "dgx-h100", "devices": 32,
                                     "overrides": {"network.sharp": sharp}},
        "model": "llama3-8b", "training": {"global_batch": 32, "parallelism": {"tp": 8}},
        "simulation": {"fidelity": "analytic"}})


def test_an_experiment_may_switch_sharp_on_and_the_dp_all_reduce_gets_faster():
    on, off = _config(True), _config(False)
    check_scenario(on)   # no "unknown topology parameter"
    rows = [run_scenario(Scenario(0, "s", c)) for c in (on, off)]
    assert all(r["status"] == "ok" for r in rows), rows
    # plain data parallelism all-reduces its gradients: SHARP halves the bytes each GPU sends
    assert rows[0]["exposed_comm_s"] < rows[1]["exposed_comm_s"]
