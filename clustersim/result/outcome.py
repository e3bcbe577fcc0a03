"""What a fidelity reports for one training step, in the same shape whichever ran it.

>>> import numpy as np
>>> o = StepOutcome(2.0, 1.5, 0.6, 0.3, 0.2, flops=1e15, mem_bytes=1e12,
...                 link_bytes=np.zeros(3))
>>> o.link_busy_s is None, round(o.compute_s + o.exposed_comm_s + o.bubble_s, 9)
(True, 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["StepOutcome"]


@dataclass(frozen=True)
class StepOutcome:
    """One step: its time and the critical rank's breakdown (``compute_s`` + ``exposed_comm_s``
    + ``bubble_s`` = ``step_time_s``; ``comm_s`` counts hidden communication too), FLOPs and
    memory bytes over every device, bytes per link of ``cluster.links``; the flow fidelity
    adds busy seconds and peak utilisation per link, and the trace events when asked."""

    step_time_s: float
    compute_s: float
    comm_s: float
    exposed_comm_s: float
    bubble_s: float
    flops: float
    mem_bytes: float
    link_bytes: np.ndarray = field(repr=False)
    hidden_sm_comm_s: float = 0.0   # hidden communication that ran on SMs (result.overlap)
    overlap_cost_s: float = 0.0     # the compute time it took (added by result.overlap)
    link_busy_s: np.ndarray | None = field(default=None, repr=False)
    link_peak_util: np.ndarray | None = field(default=None, repr=False)
    trace: list | None = field(default=None, repr=False)
