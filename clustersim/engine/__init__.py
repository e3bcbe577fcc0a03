"""The SimPy engine: Programs of per-rank ops run on a Cluster over the flow network.

>>> from clustersim.engine import Program, simulate
"""

from clustersim.engine.core import Deadlock, SimResult, simulate
from clustersim.engine.program import CollectiveCall, Op, Program, RankInfo, TransferCall
from clustersim.engine.trace import trace_events

__all__ = ["Program", "Op", "RankInfo", "CollectiveCall", "TransferCall", "simulate",
           "SimResult", "Deadlock", "trace_events"]
