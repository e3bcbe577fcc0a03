"""The ``analytic`` fidelity: a closed-form step time for the work of the flow program.

The work is the flow program's (:mod:`~clustersim.workload.program`): compute and collectives
from :mod:`~clustersim.workload.stagework`; every collective priced by the collectives layer
(``collective_time_s``, algorithm ``auto``) on the group family the builder forms, every send
at the flow engine's point-to-point cost. Only how the pieces combine differs. A slot of
chunk ``c`` on stage ``s`` is ``F = receive + compute + blocking TP/CP/EP collectives`` (a
receive waits for the whole transfer, a call starting once both sides have posted it, then
all-gathers it over TP without sequence parallelism; with ``overlap.tp_comm`` the TP
collectives run beside the compute: ``max(compute + blocking, TP)``), and ``B`` likewise.
The main stream of stage 0 ends at

    T = max_s [ D_s + down_s + W_s + max(0, RT_s - (k_s - (v-1)p) F_s) + up_s ]

``W_s = m sum_c (F_sc + B_sc)`` plus one-off stalls; ``down_s`` brings the first micro-batch
to ``s`` (``sum_{r<s} F_r``, or round the rings of earlier chunks when interleaved), ``up_s``
takes the last one back (``sum_{r<s} B_r``); ``RT_s``, the round trip through the stages
after ``s``, delays its first backward when longer than its ``k_s`` warm-up forwards (1F1B
``p - s - 1``, interleaved ``2(p - s - 1) + (v - 1)p``). Equal stages give the classic
``(m + p - 1)(F + B)``, and ``(mv + p - 1)(F + B)/v`` interleaved (Narayanan et al. SC'21);
GPipe is two flow shops, ``sum F + (m-1) max F + sum B + (m-1) max B``. ``D_s`` delays the
fill where first forwards wait for their parameters. Data parallelism adds, per stage:

- ZeRO-0/1 gradient buckets, reduced on the side stream as the last backward of each chunk
  makes them (``BUCKETS`` per chunk; hybrid sharding adds the across-block all-reduce): what
  does not fit under the remaining buckets of compute is exposed; without
  ``overlap.grad_reduce`` all of it, on the main stream;
- ZeRO-1/2 parameter all-gather buckets from the step's start, which the first forward of
  each chunk waits for piece by piece (or all of it after the optimizer);
- ZeRO-2's per-micro-batch reduce-scatter, queued behind each backward;
- ZeRO-3 (``ZERO3_PIECES`` pieces a slot): each piece waits for its gather, launched one
  piece ahead but queued behind the previous piece's reduce-scatter on the same stream: in
  a forward ``max(0, gather - piece)`` per piece, in a backward ``reduce-scatter + gather``;
  a slot's first piece likewise after the previous slot, counted per transition of the
  schedule; the step's first gather and last reduce-scatter are exposed;
- the tied-embedding all-reduce of the first and last stage, then each stage's optimizer.

The step ends when the slowest stage's optimizer does; the breakdown is that stage's, as
:func:`clustersim.engine.breakdown.rank_breakdown` defines it: communication that no compute
overlaps is exposed (blocking collectives, receives, and side-stream collectives while the
stage waits for them or has nothing else to do: ``dp_wait_s``); ``comm_s`` adds what runs
under compute.

Not modelled, by design: contention between concurrent transfers (the flow fidelity's job).
Approximate: for unequal stages the pipeline form is the longest of the paths above, a lower
bound of the schedule's critical path (exact for equal stages, within 0.1% on 1,024-GPU plans,
up to ~10% when hops of very different cost meet ``m = p`` micro-batches).

The pieces: :mod:`~clustersim.workload.analytic.pipeline` (the span formulas),
:mod:`~clustersim.workload.analytic.pricer` (collectives, sends and stage work priced on one
cluster, cached across a sweep), :mod:`~clustersim.workload.analytic.stage` (one stage's
slots and side-stream work from its prices), :mod:`~clustersim.workload.analytic.step` (the
step assembled: fill, tails, optimizer, breakdown).

>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.topology import build_cluster
>>> from clustersim.workload import get_model, resolve_plan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> training = TrainingConfig(global_batch=16, parallelism={"tp": 4, "pp": 2})
>>> model = get_model("llama3-8b")
>>> est = estimate_step(model, resolve_plan(training, model, 16), cluster, training)
>>> est.critical_stage, abs(est.compute_s + est.exposed_comm_s + est.bubble_s
...                         - est.step_time_s) < 1e-12
(0, True)
"""

from clustersim.workload.analytic.pipeline import pipeline_span_s, warmup_forwards
from clustersim.workload.analytic.pricer import PRICERS, mesh_key_of, pricer_for, stage_families
from clustersim.workload.analytic.step import StepEstimate, estimate_step

__all__ = ["StepEstimate", "estimate_step", "pipeline_span_s", "warmup_forwards"]

# The names this module had before it became a package, for tests and benchmarks that reach
# into the caches (PRICERS is the same dict, so clearing it here clears the pricers).
_PRICERS, _pricer, _mesh_key, _families = PRICERS, pricer_for, mesh_key_of, stage_families
