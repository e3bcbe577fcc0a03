"""Stage work: the experiment's attention implementation reaches the kernels and their timing."""

import pytest
from pydantic import ValidationError

from clustersim.config.experiment import TrainingConfig
from clustersim.errors import InputError
from clustersim.hardware import get_device
from clustersim.workload import ModelSpec, ParallelPlan
from clustersim.workload.flops import layer_ops
from clustersim.workload.chunks import chunk_work

# Narayanan et al. 2021, Table 1, first row (GPT 1.7B; Megatron-LM's dropout 0.1)
GPT = ModelSpec("gpt-1.7b", layers=24, hidden=2304, heads=24, vocab=51200, dropout=True)
PLAN = ParallelPlan(micro_batch=16, seq_len=2048, stage_layers=(24,))
A100 = get_device("a100-sxm-80gb")


def test_training_attention_defaults_to_flash_and_names_the_choices():
    assert TrainingConfig(global_batch=8).attention == "flash"
    assert TrainingConfig(global_batch=8, attention="materialized").attention == "materialized"
    with pytest.raises(ValidationError, match="materialized"):
        TrainingConfig(global_batch=8, attention="unfused")


@pytest.mark.parametrize("attention", ["flash", "materialized"])
def test_chunk_work_times_the_chosen_attention(attention):
    work = chunk_work(GPT, PLAN, 0, A100, "bf16", "full", attention=attention)
    ops = layer_ops(GPT, PLAN.shard, 16, 2048, "bf16", "full", attention=attention)
    assert work.layer_fwd.flops == sum(op.flops for op in ops["fwd"])
    assert work.layer_bwd.bytes == sum(op.bytes for op in ops["bwd"])


def test_materialized_attention_is_slower_where_the_scores_dominate():
    """Small hidden, long sequence: the ~3 GB of scores per pass cost more than flash's FLOPs."""
    flash = chunk_work(GPT, PLAN, 0, A100, "bf16", "full")
    mat = chunk_work(GPT, PLAN, 0, A100, "bf16", "full", attention="materialized")
    assert mat.layer_fwd.seconds > flash.layer_fwd.seconds
    assert mat.layer_bwd.seconds > flash.layer_bwd.seconds


def test_v100_refuses_flash_attention_with_the_fix():
    v100 = get_device("v100-sxm2-32gb")
    with pytest.raises(InputError, match="training.attention: materialized"):
        chunk_work(GPT, PLAN, 0, v100, "fp16", "full")
    work = chunk_work(GPT, PLAN, 0, v100, "fp16", "full", attention="materialized")
    # roofline floor: the forward's matrix FLOPs (2 x 12 h^2 per token per layer, plus the
    # attention scores) cannot run faster than the V100's fp16 tensor-core peak
    tokens = PLAN.micro_batch * PLAN.seq_len
    floor = 24 * GPT.layers * tokens * GPT.hidden ** 2 / v100.flops_for("fp16")
    assert floor < work.fwd.seconds < 10 * floor
