"""``simulation.network``: the symmetric network (collectives priced once per class of
equivalent groups) and the exact one (every family on its own) give the same step."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.config.experiment import SimulationConfig, TrainingConfig
from clustersim.fidelity import simulate_flow
from clustersim.network import build_cluster
from clustersim.step import plan_step
from clustersim.workload import get_model, resolve_plan

CASES = [  # topology, devices, model, parallelism, global batch
    ("dgx-h100", 64, "llama3-8b", {"tp": 8, "pp": 2, "dp": 4}, 32),
    ("dgx-h100", 256, "llama3-8b", {"tp": 4, "pp": 4, "dp": 16}, 128),
    ("dgx-a100", 128, "llama3-8b", {"tp": 8, "pp": 4, "dp": 4}, 32),
    ("tpu-v4-pod", 64, "llama3-8b", {"tp": 4, "pp": 2, "dp": 8}, 32),
    # a 3-level fat-tree: the pods' links to the cores go through link classes
    ("dgx-h100", 4096, "llama3-8b", {"tp": 8, "pp": 2, "dp": 256}, 512),
]


@pytest.mark.parametrize("topology,devices,model,parallelism,global_batch", CASES)
def test_symmetric_and_exact_networks_agree(topology, devices, model, parallelism,
                                            global_batch):
    cluster = build_cluster(topology, devices)
    spec = get_model(model)
    training = TrainingConfig(global_batch=global_batch, parallelism=parallelism)
    step = plan_step(spec, resolve_plan(training, spec, devices), cluster, training)
    symmetric = simulate_flow(step, cluster, SimulationConfig(network="symmetric"))
    exact = simulate_flow(step, cluster, SimulationConfig(network="exact"))
    assert symmetric.step_time_s == pytest.approx(exact.step_time_s, rel=0.01)
    assert symmetric.exposed_comm_s == pytest.approx(exact.exposed_comm_s, rel=0.01, abs=1e-6)
    assert np.allclose(symmetric.link_bytes, exact.link_bytes, rtol=1e-6, atol=1e-3)


def test_the_default_network_is_symmetric():
    assert SimulationConfig().network == "symmetric"
