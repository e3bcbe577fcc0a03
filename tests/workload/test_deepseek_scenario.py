"""A small DeepSeek-style scenario (MLA, shared and fine-grained routed experts, a leading
dense layer, node-limited routing, seeded imbalance) runs end to end on DGX H100 nodes at
both fidelities, and its MFU counts the active parameters."""

from __future__ import annotations

import pytest

from clustersim.config.experiment import ExperimentConfig
from clustersim.experiment.scenario import Scenario, run_scenario

MODEL = {"name": "mini-deepseek", "layers": 6, "hidden": 2048, "heads": 16, "vocab": 32000,
         "ffn": "swiglu", "ffn_hidden": 5632, "seq_len": 4096,
         "mla": {"kv_lora_rank": 256, "q_lora_rank": 512, "qk_rope_head_dim": 64,
                 "qk_nope_head_dim": 128, "v_head_dim": 128},
         "moe": {"experts": 64, "top_k": 6, "shared_experts": 2, "expert_ffn_hidden": 1024,
                 "dense_layers": 1, "max_nodes_per_token": 2,
                 "imbalance": {"distribution": "zipf", "param": 0.5, "seed": 1}}}


def _row(fidelity: str, **moe) -> dict:
    model = {**MODEL, "moe": {**MODEL["moe"], **moe}}
    cfg = ExperimentConfig.model_validate({
        "name": "ds", "cluster": {"topology": "dgx-h100", "devices": 32}, "model": model,
        "simulation": {"fidelity": fidelity},
        "training": {"global_batch": 64, "parallelism": {"tp": 1, "ep": 32, "zero": 1}}})
    return run_scenario(Scenario(0, "ds/0000", cfg))


@pytest.mark.parametrize("fidelity", ["analytic", "flow"])
def test_deepseek_style_scenario_runs(fidelity):
    row = _row(fidelity)
    assert row["status"] == "ok", row["error"]
    assert row["step_time_s"] > 0 and 0 < row["mfu"] < 1 and row["comm_s"] > 0
    assert 0 < row["peak_memory_gib"] < row["memory_capacity_gib"]


def test_node_limit_and_balance_shorten_the_step():
    limited, unlimited = _row("analytic"), _row("analytic", max_nodes_per_token=None)
    balanced = _row("analytic", imbalance=None)
    assert limited["step_time_s"] < unlimited["step_time_s"]
    assert balanced["step_time_s"] < limited["step_time_s"]
    # MFU counts model FLOPs, which routing does not change: it scales as 1 / step time
    assert limited["mfu"] * limited["step_time_s"] == pytest.approx(
        unlimited["mfu"] * unlimited["step_time_s"], rel=1e-9)
