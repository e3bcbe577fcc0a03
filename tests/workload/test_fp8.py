"""FP8 training with a scaling recipe (clustersim.workload.fp8): the casts are memory-bound
kernels of the bytes they move, the parameter gathers, TP all-gathers and MoE dispatch move
1-byte tensors where Transformer Engine / Megatron-Core do, memory follows, and the step gains
from the FP8 peak less than its 2x. A recipe without fp8 and mxfp8 on Hopper are refused."""

from __future__ import annotations

import pytest

from clustersim.cli.main import main
from clustersim.config.experiment import ExperimentConfig, TrainingConfig
from clustersim.experiment.scenario import Scenario, run_scenario
from clustersim.hardware import get_device
from clustersim.step.dataparallel import stage_gradients
from clustersim.step.frameworks import FRAMEWORKS
from clustersim.workload import ParallelPlan, get_model
from clustersim.workload.chunks import chunk_work
from clustersim.workload.comms import layer_comms
from clustersim.workload.flops import Shard, layer_ops, logits_ops
from clustersim.workload.fp8 import FP8Options, fp8_options, quantize_op
from clustersim.workload.memory import memory_footprint, stage_fp8_weights

H100, B200 = get_device("h100-sxm-80gb"), get_device("b200")
LLAMA8 = get_model("llama3-8b")


@pytest.mark.parametrize("recipe,device,per_element", [
    ("delayed", H100, 2 + 2 * 1),            # read bf16; write fp8 and its transpose (TN only)
    ("delayed", B200, 2 + 1),                # Blackwell runs non-TN FP8 GEMMs: one copy
    ("tensorwise", H100, 2 * 2 + 2 * 1),     # current scaling reads the tensor for its amax
    ("blockwise", H100, 2 + 2 * (1 + 4 / 128)),   # both directions, fp32 scale per 1x128
    ("mxfp8", B200, 2 + 2 * (1 + 1 / 32)),        # both directions, E8M0 scale per 1x32
])
def test_a_cast_moves_its_elements_reads_writes_and_scales(recipe, device, per_element):
    op = quantize_op("x", 1e6, FP8Options.of(recipe, device))
    assert op.kind == "elementwise" and op.bytes == pytest.approx(1e6 * per_element)


def test_every_fp8_gemm_input_and_output_gradient_is_cast_once():
    fp8 = FP8Options.of("delayed", H100)
    ops = layer_ops(LLAMA8, Shard(), 1, 8192, "fp8", fp8=fp8)
    gemms = [op for op in ops["fwd"] if op.kind == "gemm"]
    casts = [op for op in ops["fwd"] if op.name.endswith("_quantize")]
    grad_casts = [op for op in ops["bwd"] if op.name.endswith("_grad_quantize")]
    assert len(casts) == len(grad_casts) == len(gemms) == 4   # qkv, out, up, down
    qkv = next(op for op in gemms if op.name == "qkv_proj")
    cast = next(op for op in casts if op.name == "qkv_proj_quantize")
    assert cast.bytes == 8192 * 4096 * (2 + 2)                  # m x k, bf16 in, 2 fp8 out
    assert "fp8_amax_update" in [op.name for op in ops["fwd"]]


def test_router_output_layer_and_attention_stay_bf16():
    fp8 = FP8Options.of("delayed", H100)
    moe = layer_ops(get_model("deepseek-v3"), Shard(ep=8), 1, 4096, "fp8", fp8=fp8)
    dtypes = {op.name: op.dtype for op in moe["fwd"] + moe["bwd"]}
    assert dtypes["router"] == dtypes["router_dgrad"] == dtypes["attention"] == "bf16"
    assert "router_quantize" not in dtypes
    logits = logits_ops(LLAMA8, Shard(), 1, 8192, "fp8")
    assert {op.dtype for op in logits["fwd"] + logits["bwd"] if op.kind == "gemm"} == {"bf16"}


def test_the_recipe_costs_time_beside_the_fp8_gemms():
    plan = ParallelPlan(tp=8, sp=True, stage_layers=(32,), seq_len=8192)
    times = {r: chunk_work(LLAMA8, plan, 0, H100, "fp8", "none",
                           fp8=FP8Options.of(r, H100) if r else None).fwd.seconds
             for r in (None, "delayed", "tensorwise")}
    assert times[None] < times["delayed"] < times["tensorwise"]


def test_fp8_param_all_gather_moves_half_the_bf16_bytes():
    plan = ParallelPlan(dp=8, zero=1, stage_layers=(32,), seq_len=8192)
    mc, fp8 = FRAMEWORKS["megatron-core"], FP8Options.of("delayed", H100, param_gather=True)
    bf16 = stage_gradients(LLAMA8, plan, 0, "fp8", mc).gathers[0].bytes
    ours = stage_gradients(LLAMA8, plan, 0, "fp8", mc, fp8).gathers[0].bytes
    weights, _ = stage_fp8_weights(LLAMA8, plan, 0)
    assert ours == pytest.approx(bf16 - weights)     # 1 byte instead of 2 per GEMM weight
    assert stage_gradients(LLAMA8, plan, 0, "fp8", mc, fp8).reduces == \
        stage_gradients(LLAMA8, plan, 0, "fp8", mc).reduces   # gradients stay fp32
    fsdp = ParallelPlan(dp=8, zero=3, stage_layers=(32,), seq_len=8192)
    layer = [stage_gradients(LLAMA8, fsdp, 0, "fp8", FRAMEWORKS["fsdp"], f).layer_gathers[0]
             for f in (None, fp8)]
    assert 0.5 <= layer[1].bytes / layer[0].bytes < 0.501   # only the norm gains stay bf16


def test_tp_all_gathers_and_the_dispatch_move_fp8_the_reductions_do_not():
    fp8 = FP8Options.of("delayed", H100, dispatch=True)
    shard = Shard(tp=8, sp=True)
    bf16, ours = (layer_comms(LLAMA8, shard, 1, 8192, "fp8", fp8=f)["fwd"] for f in (None, fp8))
    size = {c.name: c.bytes for c in bf16}
    assert all(c.bytes == size[c.name] / (2 if c.op == "all_gather" else 1) for c in ours)
    v3 = get_model("deepseek-v3")
    ep_bf16, ep_fp8 = (layer_comms(v3, Shard(ep=8), 1, 4096, "fp8", fp8=f)
                       for f in (None, fp8))
    for phase in ("fwd", "bwd"):
        plain, quant = ({c.name: c.bytes for c in x[phase]} for x in (ep_bf16, ep_fp8))
        assert quant["ep_dispatch"] == plain["ep_dispatch"] / 2       # to the experts: fp8
        assert quant["ep_combine"] == plain["ep_combine"]             # back: bf16


def test_memory_holds_fp8_activations_and_the_fp8_weight_cache():
    plan = ParallelPlan(tp=8, sp=True, dp=8, zero=1, stage_layers=(80,), seq_len=8192)
    model = get_model("llama3-70b")
    plain = memory_footprint(model, plan, precision="fp8")
    cached = memory_footprint(model, plan, precision="fp8", fp8=FP8Options.of("delayed", H100))
    gathered = memory_footprint(model, plan, precision="fp8",
                                fp8=FP8Options.of("delayed", H100, param_gather=True))
    weights = sum(stage_fp8_weights(model, plan, 0))
    assert cached.parameters_B == pytest.approx(plain.parameters_B + 2 * weights)  # fp8 + T
    assert gathered.parameters_B == pytest.approx(plain.parameters_B)   # fp8 replaces bf16
    assert 0.6 * plain.activations_B < cached.activations_B < plain.activations_B
    assert cached.optimizer_states_B == plain.optimizer_states_B       # fp32 master stays
    parts = (cached.parameters_B + cached.gradients_B + cached.optimizer_states_B
             + cached.activations_B + cached.temporary_B)
    assert cached.total_B == pytest.approx(parts)


def _row(topology, devices, precision, **training):
    cfg = ExperimentConfig.model_validate({
        "name": "fp8", "cluster": {"topology": topology, "devices": devices},
        "model": "llama3-70b", "training": {"global_batch": 16, "precision": precision,
                                            "parallelism": {"tp": 8, "sp": True, "zero": 1},
                                            **training},
        "simulation": {"fidelity": "analytic"}})
    return run_scenario(Scenario(0, "fp8", cfg))


@pytest.mark.parametrize("topology,recipe", [("dgx-h100", "delayed"), ("gb200-nvl72", "mxfp8")])
def test_fp8_steps_faster_than_bf16_but_below_the_peak_ratio(topology, recipe):
    bf16 = _row(topology, 8, "bf16")["step_time_s"]
    fp8 = _row(topology, 8, "fp8", fp8_recipe=recipe)["step_time_s"]
    # GEMMs run at twice the peak; casts, attention, norms and communication do not
    assert 1.1 < bf16 / fp8 < 2.0


def _cli(tmp_path, capsys, training: str) -> tuple[int, str]:
    path = tmp_path / "exp.yaml"
    path.write_text("name: fp8\ncluster: {topology: dgx-h100, devices: 8}\nmodel: llama3-8b\n"
                    f"training: {{global_batch: 8, {training}}}\n"
                    "simulation: {fidelity: analytic}\noutput: {plots: false}\n")
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--executor", "serial"])
    return code, capsys.readouterr().err


def test_mxfp8_on_hopper_is_refused_naming_the_fix(tmp_path, capsys):
    code, err = _cli(tmp_path, capsys, "precision: fp8, fp8_recipe: mxfp8")
    assert code == 2 and "block scaling" in err and "blockwise" in err, err


def test_a_recipe_without_fp8_is_refused(tmp_path, capsys):
    code, err = _cli(tmp_path, capsys, "fp8_recipe: tensorwise")
    assert code == 2 and "exp.yaml:4" in err and "precision: fp8" in err, err
    code, err = _cli(tmp_path, capsys, "precision: fp8, fp8_param_gather: true")
    assert code == 2 and "zero >= 1" in err, err
    code, err = _cli(tmp_path, capsys, "precision: fp8, fp8_param_gather: true, "
                     "framework: fsdp, fp8_recipe: delayed, parallelism: {zero: 3}")
    assert code == 2 and "tensorwise" in err, err


def test_the_default_recipe_is_the_frameworks():
    for framework, recipe in (("megatron-core", "delayed"), ("fsdp", "tensorwise")):
        t = TrainingConfig(global_batch=8, precision="fp8", framework=framework)
        assert fp8_options(t, H100).recipe.name == recipe


def test_first_and_last_layers_kept_in_bf16_cost_bf16_time():
    plan = ParallelPlan(pp=2, stage_layers=(16, 16), seq_len=8192)
    plain, kept = (FP8Options.of("delayed", H100, bf16_layers=k) for k in ((0, 0), (1, 1)))
    for stage in (0, 1):
        fp8 = chunk_work(LLAMA8, plan, stage, H100, "fp8", "none", fp8=plain)
        mixed = chunk_work(LLAMA8, plan, stage, H100, "fp8", "none", fp8=kept)
        bf16 = chunk_work(LLAMA8, plan, stage, H100, "bf16", "none")
        one_fp8, one_bf16 = fp8.layer_fwd.seconds, bf16.layer_fwd.seconds
        assert mixed.fwd.seconds == pytest.approx(fp8.fwd.seconds - one_fp8 + one_bf16)
