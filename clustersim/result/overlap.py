"""What overlap costs: communication kernels that run beside compute take SMs (CUs) and
memory bandwidth, so the compute they hide behind runs slower.

Both fidelities report, for the critical rank, the communication hidden behind compute that
ran on SMs (``hidden_sm_comm_s``: NCCL/RCCL collectives and point-to-point sends; not the
copy-engine traffic of offload or of Transformer Engine's userbuffers TP overlap, see
:func:`slows_compute`). While it ran, compute ran ``overlap_slowdown`` times slower (per
device family, ``hardware/data/compute.yaml``: 1.189 on GPUs, the mean that arXiv 2507.03114
measured on A100, H100, MI250 and MI210; 1.0 where collectives run on DMA engines, as TPU
ICI's), so the step and its compute lengthen by ``(overlap_slowdown - 1) x hidden``. A
first-order charge: the longer compute could hide a little more communication, which it does
not claim.

>>> import numpy as np
>>> o = StepOutcome(2.0, 1.5, 0.6, 0.3, 0.2, flops=1.0, mem_bytes=1.0, link_bytes=np.zeros(1),
...                 hidden_sm_comm_s=0.3)
>>> slowed = with_overlap_cost(o, 1.2)
>>> round(slowed.step_time_s, 6), round(slowed.compute_s, 6), round(slowed.overlap_cost_s, 6)
(2.06, 1.56, 0.06)
>>> slows_compute("dp", None), slows_compute("offload-read", None)
(True, False)
"""

from __future__ import annotations

from dataclasses import replace

from clustersim.result.outcome import StepOutcome

__all__ = ["with_overlap_cost", "slows_compute"]

# streams whose traffic the DMA engines move (offload to host or CXL) or the host computes
_QUIET = ("offload", "host")


def slows_compute(stream: str, framework) -> bool:
    """Whether communication on ``stream`` takes SMs from the compute beside it."""
    if stream.startswith(_QUIET):
        return False
    return not (stream == "tp" and framework is not None and
                framework.tp_overlap_on_copy_engines)


def with_overlap_cost(outcome: StepOutcome, slowdown: float) -> StepOutcome:
    """``outcome`` with its compute slowed while SM-borne communication hid behind it."""
    cost = (slowdown - 1.0) * min(outcome.hidden_sm_comm_s, outcome.compute_s)
    if cost <= 0.0:
        return outcome
    return replace(outcome, step_time_s=outcome.step_time_s + cost,
                   compute_s=outcome.compute_s + cost, overlap_cost_s=cost)
