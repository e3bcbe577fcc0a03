"""The step plan: what each pipeline stage does in one training step, decided once.

:func:`plan_step` turns a model, a checked parallel plan, a cluster and the experiment's
training section into a :class:`StepPlan` (a plain frozen value: print it to read it). Both
fidelities (:mod:`clustersim.fidelity`) read it; neither decides scheduling on its own.

>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.network import build_cluster
>>> from clustersim.workload import get_model, resolve_plan
>>> cluster = build_cluster("dgx-h100", devices=8)
>>> model = get_model("llama3-8b")
>>> training = TrainingConfig(global_batch=8, parallelism={"tp": 8})
>>> step = plan_step(model, resolve_plan(training, model, 8), cluster, training)
>>> len(step.stages), step.stages[0].ranks, round(step.peak_stage.memory.total_B / 2**30, 1)
(1, 8, 27.1)
"""

from clustersim.step.dataparallel import MAX_PIECES
from clustersim.step.frameworks import FRAMEWORKS, Framework
from clustersim.step.planner import in_flight, plan_step
from clustersim.step.schedules import SCHEDULES, schedule, warmup_forwards
from clustersim.step.stepplan import (MAIN, Call, Compute, Dep, Family, Offload, Piece, Slot,
                                      StagePlan, StepPlan, Transfer)

__all__ = ["plan_step", "in_flight", "StepPlan", "StagePlan", "Slot", "Piece", "Call",
           "Compute", "Transfer", "Offload", "Family", "Dep", "MAIN", "SCHEDULES", "schedule",
           "warmup_forwards", "MAX_PIECES", "FRAMEWORKS", "Framework"]
