"""A pipeline chunk runs its own layers: with DeepSeek-style leading dense layers the first
stage's chunk is dense (no experts, no expert all-to-all) and a later one all MoE, and the
chunks add up to the whole model's mean layer times its depth."""

from __future__ import annotations

import pytest

from clustersim.hardware import get_device
from clustersim.workload import ParallelPlan
from clustersim.workload.chunks import chunk_work
from clustersim.workload.models import ModelSpec
from clustersim.workload.moe import MoESpec

H100 = get_device("h100-sxm-80gb")
MOE = ModelSpec("mix", layers=8, hidden=1024, heads=16, vocab=1000, ffn="swiglu",
                ffn_hidden=4096, moe=MoESpec(8, 2, dense_layers=4, expert_ffn_hidden=512))
DENSE = ModelSpec("mix", layers=8, hidden=1024, heads=16, vocab=1000, ffn="swiglu",
                  ffn_hidden=4096)


def _plan(pp, ep=1, dp=1):
    return ParallelPlan(pp=pp, dp=dp, ep=ep, stage_layers=(8 // pp,) * pp, micro_batch=1,
                        num_microbatches=4, global_batch=4 * dp, seq_len=1024)


def test_a_dense_leading_stage_is_priced_as_the_dense_model():
    plan = _plan(pp=2, ep=2, dp=2)
    dense_stage = chunk_work(MOE, plan, 0, H100, "bf16", "none")
    dense_model = chunk_work(DENSE, plan, 0, H100, "bf16", "none")
    assert dense_stage.fwd.seconds == pytest.approx(dense_model.fwd.seconds, rel=1e-12)
    assert not [c for c in dense_stage.fwd_comms if c.axis == "ep"]
    moe_stage = chunk_work(MOE, plan, 1, H100, "bf16", "none")
    # dispatch and combine in each of its 4 MoE layers (merged: same op, group and size)
    ep = [c for c in moe_stage.fwd_comms if c.axis == "ep"]
    assert {c.op for c in ep} == {"all_to_all"} and sum(c.count for c in ep) == 2 * 4


def test_the_chunks_add_up_to_the_mean_layer():
    one = chunk_work(MOE, _plan(pp=1), 0, H100, "bf16", "none")
    two = [chunk_work(MOE, _plan(pp=2), s, H100, "bf16", "none") for s in (0, 1)]
    # FLOPs are linear in the layers' mix: the two halves carry the whole model's
    assert sum(c.fwd.flops for c in two) == pytest.approx(one.fwd.flops, rel=1e-9)
