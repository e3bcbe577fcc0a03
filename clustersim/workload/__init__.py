"""Workload: model specs, parallel plans, FLOPs and bytes per op, memory per device.

Model, plan and hardware stay separate values (Calculon's what / how / on what):
:func:`resolve_model` and :func:`resolve_plan` turn the experiment's ``model:`` and
``training:`` sections into a :class:`ModelSpec` and a checked :class:`ParallelPlan`, or raise
:class:`Infeasible` with a reason; :mod:`~clustersim.workload.flops` lists the kernels of a
layer on one rank (its attention core :mod:`~clustersim.workload.attention`),
:mod:`~clustersim.workload.comms` its collectives and :mod:`~clustersim.workload.memory` the
bytes a device holds. Timing those kernels is the hardware layer's job
(``clustersim.hardware.compute``); :mod:`~clustersim.workload.chunks` times one model chunk,
and :mod:`~clustersim.workload.groups` forms the rank groups its collectives run on. How a
step schedules that work is the step plan's (:mod:`clustersim.step`).

>>> from clustersim.config.experiment import ModelConfig, TrainingConfig
>>> model = resolve_model(ModelConfig(preset="gpt3-175b"))
>>> plan = resolve_plan(TrainingConfig(global_batch=1536, parallelism={"tp": 8, "pp": 16}),
...                     model, 1024)
>>> plan.dp, plan.num_microbatches, round(model_flops_per_token(model) / 1e12, 2)
(8, 192, 1.08)
"""

from clustersim.workload.comms import CommCost, embedding_comms, layer_comms, logits_comms
from clustersim.workload.flops import (ATTENTION_KINDS, PRECISIONS, OpCost, Shard,
                                       element_bytes, embedding_ops, hardware_flops_per_token,
                                       layer_ops, layer_params_on_rank, logits_ops,
                                       megatron_flops_per_iteration, model_flops_per_token,
                                       optimizer_ops)
from clustersim.workload.memory import (InFlight, MemoryBreakdown, StageParameters,
                                        layer_activation_bytes, memory_footprint,
                                        stage_parameters)
from clustersim.workload.models import ModelSpec, get_model, model_presets, resolve_model
from clustersim.workload.moe import MoESpec
from clustersim.workload.plan import (SCHEDULES, Infeasible, ParallelPlan, resolve_plan,
                                      split_layers)

__all__ = [
    "ModelSpec", "MoESpec", "model_presets", "get_model", "resolve_model",
    "ParallelPlan", "Infeasible", "resolve_plan", "split_layers", "SCHEDULES",
    "OpCost", "CommCost", "Shard", "PRECISIONS", "ATTENTION_KINDS", "element_bytes",
    "layer_params_on_rank",
    "layer_ops", "layer_comms", "embedding_ops", "embedding_comms", "logits_ops",
    "logits_comms", "optimizer_ops",
    "model_flops_per_token", "hardware_flops_per_token", "megatron_flops_per_iteration",
    "MemoryBreakdown", "StageParameters", "stage_parameters", "layer_activation_bytes",
    "InFlight", "memory_footprint",
]
