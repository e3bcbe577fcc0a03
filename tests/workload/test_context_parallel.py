"""Context parallelism by ``cp_comm``: ring attention (p2p), Ulysses (a2a) and the K/V
all-gather, checked against first principles: the bytes each rank moves, where the ring's
steps sit in the step plan and how much of them shows, the memory each keeps, and the plans
that cannot run."""

from __future__ import annotations

from dataclasses import replace

import pytest

from clustersim.config.experiment import SimulationConfig, TrainingConfig
from clustersim.errors import InputError
from clustersim.fidelity import estimate_step, simulate_flow
from clustersim.fidelity.analytic.prices import prices_for
from clustersim.network import build_cluster
from clustersim.step import plan_step
from clustersim.step.stepplan import Dep, Family
from clustersim.workload import Infeasible, ParallelPlan, get_model, resolve_plan
from clustersim.workload.comms import layer_comms, ring_attention_steps
from clustersim.workload.memory import context_parallel_buffer_bytes, layer_activation_bytes
from clustersim.workload.ops import Shard

LLAMA8 = get_model("llama3-8b")      # 32 query heads, 8 KV heads of 128
LLAMA70 = get_model("llama3-70b")    # 64 query heads, 8 KV heads of 128
BF16 = 2                             # bytes per activation element


def kv_size(model, tp: int, b: int, s: int) -> float:
    """K and V of a whole sequence for one tensor-parallel rank's KV heads."""
    kv_heads = max(1, model.kv_heads // tp)
    return 2 * b * s * kv_heads * model.head_dim * BF16


@pytest.mark.parametrize("cp", [2, 4, 8, 16])
@pytest.mark.parametrize("tp", [1, 8])
def test_ring_moves_cp_minus_one_cpths_of_the_keys_and_values(cp, tp):
    s = 65536
    steps = ring_attention_steps(LLAMA70, Shard(tp=tp, cp=cp), 1, s, "bf16")
    assert steps["fwd"].op == "send_recv" and steps["fwd"].axis == "cp"
    per_layer = (cp - 1) * steps["fwd"].bytes
    assert per_layer == pytest.approx((cp - 1) / cp * kv_size(LLAMA70, tp, 1, s))
    # backward: K/V with their dK/dV, 2 blocks a step; a replayed forward rotates K/V again
    assert steps["bwd"].bytes == 2 * steps["fwd"].bytes
    again = ring_attention_steps(LLAMA70, Shard(tp=tp, cp=cp), 1, s, "bf16", "selective")
    assert again["bwd"].bytes == 3 * steps["fwd"].bytes


def test_ring_has_no_blocking_cp_collective_and_all_gather_keeps_its_own():
    shard = Shard(tp=8, cp=4)
    ring = layer_comms(LLAMA70, shard, 1, 32768, "bf16", cp_comm="p2p")
    assert not [c for c in ring["fwd"] + ring["bwd"] if c.axis == "cp"]
    gather = layer_comms(LLAMA70, shard, 1, 32768, "bf16", cp_comm="all_gather")
    assert [(c.op, c.bytes) for c in gather["fwd"] if c.axis == "cp"] == [
        ("all_gather", kv_size(LLAMA70, 8, 1, 32768))]


def test_ulysses_all_to_alls_carry_the_local_tokens_of_every_head():
    cp, s, tp = 4, 32768, 2
    c = layer_comms(LLAMA8, Shard(tp=tp, cp=cp), 1, s, "bf16", cp_comm="a2a")
    tokens = s // cp
    q_width = LLAMA8.heads // tp * LLAMA8.head_dim            # 16 heads x 128
    kv_width = LLAMA8.kv_heads // tp * LLAMA8.head_dim        # 4 heads x 128
    qkv = tokens * (q_width + 2 * kv_width) * BF16
    out = tokens * q_width * BF16
    assert [(x.name, x.op, x.bytes) for x in c["fwd"] if x.axis == "cp"] == [
        ("cp_qkv_all_to_all", "all_to_all", qkv), ("cp_out_all_to_all", "all_to_all", out)]
    assert sorted(x.bytes for x in c["bwd"] if x.axis == "cp") == [out, qkv]
    # each rank keeps 1/cp of its buffer: the rest, (cp-1)/cp, crosses the cp group
    recomputed = layer_comms(LLAMA8, Shard(tp=tp, cp=cp), 1, s, "bf16", "selective",
                             cp_comm="a2a")
    assert len([x for x in recomputed["bwd"] if x.axis == "cp"]) == 4


def test_ulysses_needs_heads_and_kv_heads_divisible_by_cp():
    t = TrainingConfig(global_batch=8, seq_len=8192,
                       parallelism={"tp": 8, "cp": 2, "cp_comm": "a2a"})
    with pytest.raises(Infeasible, match=r"8 query and 1 KV heads per rank at tp=8.*"
                                         r"cp_comm: p2p"):
        resolve_plan(t, LLAMA70, 16)
    odd = replace(LLAMA8, name="odd", heads=24, kv_heads=24, hidden=3072)
    t = TrainingConfig(global_batch=8, seq_len=8192, parallelism={"cp": 16, "cp_comm": "a2a"})
    with pytest.raises(Infeasible, match="24 query and 24 KV heads"):
        resolve_plan(t, odd, 16)
    ok = TrainingConfig(global_batch=8, seq_len=8192,
                        parallelism={"tp": 2, "cp": 4, "cp_comm": "a2a"})
    assert resolve_plan(ok, LLAMA8, 16).cp_comm == "a2a"


def test_cp_comm_defaults_to_megatron_core_p2p_and_rejects_unknown_names():
    t = TrainingConfig(global_batch=8, parallelism={"cp": 2})
    assert t.parallelism.cp_comm == "p2p"
    assert resolve_plan(t, LLAMA8, 2).cp_comm == "p2p"
    with pytest.raises((InputError, ValueError), match="p2p"):
        TrainingConfig(global_batch=8, parallelism={"cp": 2, "cp_comm": "ring"})


def test_memory_ring_buffers_and_local_kv():
    cp, s, b = 4, 131072, 1
    plan = ParallelPlan(tp=8, cp=cp, seq_len=s, stage_layers=(80,), cp_comm="p2p")
    block = kv_size(LLAMA70, 8, b, s) / cp
    # double-buffered K/V in the forward, K/V with dK/dV in the backward: 4 blocks at peak
    assert context_parallel_buffer_bytes(LLAMA70, plan, b, s) == pytest.approx(4 * block)
    ulysses = replace(plan, tp=2, cp_comm="a2a")
    tokens = s / cp
    q, kv = 32 * 128, 4 * 128       # 64 / 2 query heads, 8 / 2 KV heads
    assert context_parallel_buffer_bytes(LLAMA70, ulysses, b, s) == pytest.approx(
        BF16 * tokens * (2 * q + 2 * kv))
    assert context_parallel_buffer_bytes(LLAMA70, replace(plan, cp_comm="all_gather"),
                                         b, s) == 0
    # the all-gather keeps the whole sequence's K/V for the backward, the ring its own block
    shard = Shard(tp=8, sp=True, cp=cp)
    ring = layer_activation_bytes(LLAMA70, shard, b, s, cp_comm="p2p")
    gather = layer_activation_bytes(LLAMA70, shard, b, s, cp_comm="all_gather")
    assert gather - ring == pytest.approx(kv_size(LLAMA70, 8, b, s) * (cp - 1) / cp)


# ------------------------------------------------------------------ the step plan


def _step(cluster, cp: int, seq_len: int, cp_comm: str = "p2p", placement=None):
    par = {"cp": cp, "cp_comm": cp_comm}
    if placement:
        par["placement"] = placement
    t = TrainingConfig(global_batch=len(cluster.devices) // cp, seq_len=seq_len,
                       parallelism=par)
    model = replace(LLAMA8, layers=4)
    return plan_step(model, resolve_plan(t, model, len(cluster.devices)), cluster, t)


def _without_ring(step):
    """The same step with every ring step dropped (the attention blocks kept)."""
    stages = []
    for stage in step.stages:
        slots = tuple(replace(slot, pieces=tuple(
            replace(p, prefetch=tuple(c for c in p.prefetch if c.op != "send_recv"))
            for p in slot.pieces)) for slot in stage.slots)
        stages.append(replace(stage, slots=slots))
    return replace(step, stages=tuple(stages))


def _expected_exposure(step, cluster) -> float:
    """Sum over the step's slots and ring steps of max(0, step transfer - attention block)."""
    prices, stage = prices_for(cluster), step.stages[0]
    total = 0.0
    for index, _ in stage.order:
        slot = stage.slots[index]
        for before, piece in zip(slot.pieces, slot.pieces[1:]):
            for call in piece.prefetch:
                if call.op == "send_recv":
                    c = prices.collective(step.plan, call.family, 0, call.op, call.bytes)[0]
                    total += max(0.0, c * call.count - before.compute.work.seconds)
    return total


def test_ring_steps_are_prefetched_one_attention_block_ahead():
    cluster = build_cluster("dgx-h100", 4)
    step = _step(cluster, 4, 32768)
    forward = step.stages[0].slots[0]
    blocks = [p for p in forward.pieces if "attention" in p.compute.label]
    assert len(blocks) == 4 and not blocks[0].prefetch
    for p in blocks[1:]:
        [call] = p.prefetch
        assert (call.dep, call.family, call.count) == (Dep.PREFETCHED, Family("cp"), 4)
    # the blocks are the attention core, split evenly; the rest of the layer stays one piece
    assert blocks[0].compute.work.seconds == pytest.approx(blocks[3].compute.work.seconds)
    assert not [c for c in forward.calls if c.family.axis == "cp"]


def test_ring_hides_under_attention_on_nvlink():
    # 64k tokens over 2 GPUs of one NVSwitch node: a block (32k x 64k / 2 causal attention)
    # takes far longer than moving 32k tokens of K/V (16 MiB at ~400 GB/s)
    cluster = build_cluster("dgx-h100", 2)
    step = _step(cluster, 2, 65536)
    assert _expected_exposure(step, cluster) == 0.0
    with_ring = estimate_step(step, cluster).step_time_s
    without = estimate_step(_without_ring(step), cluster).step_time_s
    assert with_ring == pytest.approx(without, rel=1e-9)


def test_ring_exposes_the_transfer_minus_the_block_on_a_slow_link():
    # cp = 2 across two nodes (dp innermost) whose scale-out is slowed to 1 GB/s: each step's
    # transfer outlasts its attention block, and the step shows (cp-1)(c - a) per slot
    cluster = build_cluster("dgx-h100", 16, overrides={"scale_out.bandwidth": "1 GB/s"})
    step = _step(cluster, 2, 16384, placement=["dp", "cp"])
    exposed = _expected_exposure(step, cluster)
    assert exposed > 0.0
    with_ring = estimate_step(step, cluster).step_time_s
    without = estimate_step(_without_ring(step), cluster).step_time_s
    assert with_ring - without == pytest.approx(exposed, rel=1e-6)
    flow = simulate_flow(step, cluster, SimulationConfig()).step_time_s
    assert flow == pytest.approx(with_ring, rel=0.03)


@pytest.mark.parametrize("cp_comm", ["p2p", "a2a", "all_gather"])
def test_flow_and_analytic_agree_for_every_cp_comm(cp_comm):
    cluster = build_cluster("dgx-h100", 16)
    step = _step(cluster, 4, 32768, cp_comm, placement=["dp", "cp"])
    analytic = estimate_step(step, cluster).step_time_s
    flow = simulate_flow(step, cluster, SimulationConfig()).step_time_s
    assert flow == pytest.approx(analytic, rel=0.03)


def test_ring_composes_with_zero3_pieces():
    cluster = build_cluster("dgx-h100", 8)
    t = TrainingConfig(global_batch=4, seq_len=32768,
                       parallelism={"cp": 2, "zero": 3})
    model = replace(LLAMA8, layers=4)
    step = plan_step(model, resolve_plan(t, model, 8), cluster, t)
    forward = step.stages[0].slots[0]
    gathers = [c for p in forward.pieces for c in p.prefetch if c.op == "all_gather"]
    ring = [c for p in forward.pieces for c in p.prefetch if c.op == "send_recv"]
    assert gathers and len(ring) == 1
    assert step.stages[0].slots[0].work.seconds == pytest.approx(
        sum(p.compute.work.seconds for p in forward.pieces))
    analytic = estimate_step(step, cluster).step_time_s
    flow = simulate_flow(step, cluster, SimulationConfig()).step_time_s
    assert flow == pytest.approx(analytic, rel=0.03)


def test_a_ulysses_plan_that_cannot_split_its_heads_is_an_infeasible_row(tmp_path):
    from clustersim.experiment.runner import run_experiment  # the experiment layer, here only
    frame = run_experiment({"name": "ulysses", "cluster": {"topology": "dgx-h100", "devices": 16},
                            "model": "llama3-70b",
                            "training": {"global_batch": 8, "seq_len": 8192,
                                         "parallelism": {"tp": 8, "cp": 2, "cp_comm": "a2a"}}},
                           out_dir=tmp_path, executor="serial", progress=False)
    [row] = frame.to_dict("records")
    assert row["status"] == "infeasible"
    assert "both must divide by cp" in row["error"] and "use cp_comm: p2p" in row["error"]
