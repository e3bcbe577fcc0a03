"""Only memory-bound kernels care about memory bandwidth (roofline: Williams, Waterman &
Patterson, CACM 2009): a kernel takes ``max(FLOPs / compute rate, bytes / memory rate)``, so
lowering the bandwidth leaves a kernel whose compute term dominates untouched and stretches
one whose memory term dominates by exactly the bandwidth ratio. Checked kernel by kernel, for
a model chunk, and through the whole pipeline with ``device_overrides.memory.technology``
(experiments/memory-hbm-vs-lpddr.yaml).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clustersim.config.yamlio import load_yaml_file
from clustersim.experiment.scenario import simulate_scenario
from clustersim.experiment.sweep import expand
from clustersim.hardware import get_device, get_link
from clustersim.hardware.compute import compute_params, op_time_s
from clustersim.workload import get_model
from clustersim.workload.flops import layer_ops
from clustersim.workload.plan import ParallelPlan
from clustersim.workload.chunks import chunk_work, optimizer_work

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
H100 = get_device("h100-sxm-80gb")
HBM3_BPS = H100.memory.bw_Bps                         # 3.35 TB/s as shipped (5 stacks)
LPDDR_BPS = 16 * get_link("lpddr5x").bw_Bps           # 16 x64 packages at 8533 MT/s
NO_MEMORY_LIMIT = 1e30                                # B/s: the memory term vanishes
# experiments/memory-hbm-vs-lpddr.yaml: Llama 3 8B, tp=8 with SP, micro-batch 2 of 2048 tokens
MODEL = get_model("llama3-8b")
PLAN = ParallelPlan(tp=8, pp=3, dp=1, sp=True, micro_batch=2, seq_len=2048,
                    stage_layers=(11, 11, 10))


def _terms(op, bw: float) -> tuple[float, float, float]:
    """(compute seconds, memory seconds at ``bw``, per-kernel overhead) of one op."""
    p = compute_params(H100)
    overhead = p.kernel_overhead_s
    compute = op_time_s(op, H100, "bf16", mem_bw_Bps=NO_MEMORY_LIMIT) - overhead
    return compute, op.bytes / (p.memory_efficiency * bw), overhead


def _classify(ops):
    """Ops bound by compute at both bandwidths, and ops bound by memory at both."""
    compute_bound = [op for op in ops if _terms(op, LPDDR_BPS)[0] >= _terms(op, LPDDR_BPS)[1]]
    memory_bound = [op for op in ops if _terms(op, HBM3_BPS)[1] > _terms(op, HBM3_BPS)[0]]
    return compute_bound, memory_bound


@pytest.fixture(scope="module")
def layer():
    ops = layer_ops(MODEL, PLAN.shard, PLAN.micro_batch, PLAN.seq_len, "bf16")
    return [*ops["fwd"], *ops["bwd"]]


def test_both_kinds_of_kernel_exist_in_a_llama_layer(layer):
    compute_bound, memory_bound = _classify(layer)
    assert any(op.kind == "gemm" for op in compute_bound)
    elementwise = [op for op in layer if op.kind == "elementwise"]
    assert elementwise and all(op in memory_bound for op in elementwise), \
        "norms, activations and residual adds stream memory at < 1 FLOP/B"


def test_a_compute_bound_kernel_ignores_memory_bandwidth(layer):
    compute_bound, _ = _classify(layer)
    for op in compute_bound:
        assert op_time_s(op, H100, "bf16", HBM3_BPS) == op_time_s(op, H100, "bf16", LPDDR_BPS)


def test_a_memory_bound_kernel_stretches_by_the_bandwidth_ratio(layer):
    _, memory_bound = _classify(layer)
    for op in memory_bound:
        overhead = _terms(op, HBM3_BPS)[2]
        fast = op_time_s(op, H100, "bf16", HBM3_BPS) - overhead
        slow = op_time_s(op, H100, "bf16", LPDDR_BPS) - overhead
        assert slow / fast == pytest.approx(HBM3_BPS / LPDDR_BPS, rel=1e-9)


def test_a_chunk_slows_by_its_memory_bound_share_only(layer):
    """A middle pipeline stage is ``layers`` x one layer; its FLOPs and bytes do not depend
    on the memory, its time grows by exactly the growth of the kernels that are not
    compute-bound at both bandwidths."""
    fast = chunk_work(MODEL, PLAN, 1, H100, "bf16", "none", HBM3_BPS)
    slow = chunk_work(MODEL, PLAN, 1, H100, "bf16", "none", LPDDR_BPS)
    assert (slow.fwd.flops, slow.fwd.bytes) == (fast.fwd.flops, fast.fwd.bytes)
    compute_bound, _ = _classify(layer)
    growth = sum(op_time_s(op, H100, "bf16", LPDDR_BPS) - op_time_s(op, H100, "bf16", HBM3_BPS)
                 for op in layer if op not in compute_bound)
    layers = PLAN.stage_layers[1]
    got = (slow.fwd.seconds + slow.bwd.seconds) - (fast.fwd.seconds + fast.bwd.seconds)
    assert got == pytest.approx(layers * growth, rel=1e-9)
    assert 0 < got < (slow.fwd.seconds + slow.bwd.seconds) * (1 - LPDDR_BPS / HBM3_BPS)


@pytest.fixture(scope="module")
def memory_variants():
    """The three cases of memory-hbm-vs-lpddr.yaml through the whole pipeline (flow)."""
    exp = expand(load_yaml_file(EXPERIMENTS / "memory-hbm-vs-lpddr.yaml"))
    return {s.swept.get("case") or s.name.split(" ", 1)[-1]: simulate_scenario(s.config)
            for s in exp.scenarios}


def _by_memory(rows):
    hbm3, hbm3e, lpddr = (next(r for k, r in rows.items() if name in k)
                          for name in ("HBM3 ", "HBM3e", "LPDDR5X"))
    return hbm3, hbm3e, lpddr


def test_the_memory_bound_configuration_slows_when_only_memory_bandwidth_drops(memory_variants):
    hbm3, hbm3e, lpddr = _by_memory(memory_variants)
    assert lpddr["step_time_s"] > hbm3["step_time_s"] > hbm3e["step_time_s"]
    assert lpddr["compute_s"] > hbm3["compute_s"] > hbm3e["compute_s"]
    # the FLOPs are the model's: the same in every case, and so is their energy
    assert lpddr["energy_compute_j"] == hbm3["energy_compute_j"] == hbm3e["energy_compute_j"]
    assert lpddr["hfu"] * lpddr["step_time_s"] == pytest.approx(
        hbm3["hfu"] * hbm3["step_time_s"], rel=1e-9)


def test_pipeline_compute_time_moves_by_the_memory_bound_kernels_alone(memory_variants):
    """The critical rank computes ``m`` forwards and backwards of its model chunk plus its
    optimizer step: the change of ``compute_s`` between HBM3 and LPDDR5X is the change of
    those kernels (whose compute-bound ones do not move, above), nothing else: no
    communication or scheduling time leaks into it. Plans and devices are read off the
    experiment file, not restated here."""
    from clustersim.network import build_cluster
    from clustersim.workload import resolve_model, resolve_plan

    exp = {s.swept.get("case"): s.config
           for s in expand(load_yaml_file(EXPERIMENTS / "memory-hbm-vs-lpddr.yaml")).scenarios}
    hbm3, _, lpddr = _by_memory(memory_variants)
    fast_cfg = next(c for k, c in exp.items() if "HBM3 " in k)
    slow_cfg = next(c for k, c in exp.items() if "LPDDR5X" in k)

    def work(cfg):
        cluster = build_cluster(cfg.cluster.topology, cfg.cluster.devices, cfg.cluster.overrides)
        model = resolve_model(cfg.model)
        plan = resolve_plan(cfg.training, model, len(cluster.devices))
        bw = cluster.memory_bw_Bps(cluster.devices[0])
        t = cfg.training
        chunk = chunk_work(model, plan, 0, cluster.device, t.precision, t.recompute, bw,
                           attention=t.attention)
        step = optimizer_work(model, plan, 0, cluster.device, t.precision, t.optimizer, bw)
        return plan, chunk, step

    plan, fast, fast_step = work(fast_cfg)
    _, slow, slow_step = work(slow_cfg)
    assert plan.pp == 1 and plan.virtual_stages == 1
    layer_growth = (slow.fwd.seconds + slow.bwd.seconds) - (fast.fwd.seconds + fast.bwd.seconds)
    step_growth = slow_step.seconds - fast_step.seconds
    assert step_growth > 0, "Adam streams its states: memory-bound"
    got = lpddr["compute_s"] - hbm3["compute_s"]
    assert got == pytest.approx(plan.num_microbatches * layer_growth + step_growth, rel=1e-9)


def test_memory_energy_follows_the_technologys_energy_per_bit(memory_variants):
    """The same bytes at 4 pJ/bit (LPDDR5X) instead of 3.2 pJ/bit (HBM3, HBM3e)."""
    hbm3, hbm3e, lpddr = _by_memory(memory_variants)
    assert hbm3e["energy_memory_j"] == pytest.approx(hbm3["energy_memory_j"], rel=1e-12)
    assert lpddr["energy_memory_j"] / hbm3["energy_memory_j"] == pytest.approx(4.0 / 3.2)
