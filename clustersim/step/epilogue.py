"""What a stage does after its last slot: the data-parallel tails, the tied embeddings, and
the optimizer step, on the device or offloaded.

In order: without ``overlap.grad_reduce`` the gradients are reduced once the pipeline has
drained; hybrid-sharded ZeRO 3 sums its gradient shards across blocks once every other
data-parallel call is done; under DualPipe each stage and its mirror (pp-1-s) sum the
gradients of their two copies of the same model stages; the first and last stage sum their tied-embedding gradients
(Megatron and DeepSpeed after the gradient sync, blocking); the optimizer waits for every
gradient (``drain``). With ``training.offload.optimizer``, ``host``
runs the step on the CPU ZeRO-Offload style (gradients down, a CPU step bound by the host's
DRAM bandwidth, parameters back); ``cxl`` keeps the optimizer states in a CXL memory pool and
streams them through the device (reads and writes at once: the links are full duplex). The
offload traffic is ordinary transfers, so it crosses the host / CXL links and contends with
everything else. ZeRO 1/2 without ``overlap.param_gather`` all-gather the updated parameters
after the step, blocking.

>>> from clustersim.hardware import get_device
>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.step.slots import StageContext
>>> from clustersim.workload import ParallelPlan, get_model
>>> plan = ParallelPlan(dp=8, zero=1, stage_layers=(32,), seq_len=8192)
>>> ctx = StageContext.of(get_model("llama3-8b"), plan, TrainingConfig(global_batch=8),
...                       get_device("h100-sxm-80gb"), 3.35e12)
>>> [str(x) for x in stage_epilogue(ctx, 0)]   # doctest: +NORMALIZE_WHITESPACE
['grad_reduce_scatter reduce_scatter 29.9 GiB on dp (drain)',
 'compute optimizer step 9.253 ms (drain)',
 'param_all_gather all_gather 15.0 GiB on dp (blocking)']
"""

from __future__ import annotations

from dataclasses import replace

from clustersim.step.stepplan import Compute, Dep, Offload
from clustersim.workload.chunks import optimizer_state, optimizer_work
from clustersim.workload.ops import Work

__all__ = ["stage_epilogue"]


def _optimizer(ctx, stage: int, host_dram_Bps: float | None, first: int) -> tuple:
    """The optimizer step: on the device, on the host CPU, or through a CXL pool (its items
    start at index ``first`` of the epilogue)."""
    t, plan = ctx.training, ctx.plan
    where = t.offload.optimizer

    def on_device(states_on_device: bool = True) -> Work:
        return optimizer_work(ctx.model, plan, stage, ctx.device, t.precision, t.optimizer,
                              ctx.mem_bw_Bps, states_on_device=states_on_device, fp8=ctx.fp8)

    if where == "none":
        return (Compute(on_device(), "optimizer step", "optimizer", dep=Dep.DRAIN),)
    state = optimizer_state(ctx.model, plan, stage, t.precision, t.optimizer)
    if where == "host":
        cpu_s = state.params * (state.grad_B + 2 * state.state_B + state.param_B) \
            / host_dram_Bps
        return (Offload("host", False, state.params * state.grad_B, "offload",
                        "gradients to host"),
                Compute(Work(cpu_s), "CPU optimizer step", "optimizer", stream="host",
                        dep=Dep.CHAINED),
                Offload("host", True, state.params * state.param_B, "offload",
                        "parameters from host", dep=Dep.CHAINED),
                Compute(Work(), "offloaded step done", "optimizer", dep=Dep.CHAINED))
    read, write = first, first + 1   # both stream at once: the links are full duplex
    return (Offload("cxl", True, state.total_state_B, "offload-read",
                    "optimizer states from CXL"),
            Offload("cxl", False, state.total_state_B, "offload-write",
                    "optimizer states to CXL"),
            Compute(on_device(states_on_device=False), "optimizer step", "optimizer",
                    waits_for=(read,), dep=Dep.DRAIN),
            Compute(Work(), "states written back", "optimizer", waits_for=(write,)))


def stage_epilogue(ctx, stage: int, host_dram_Bps: float | None = None) -> tuple:
    """The items that follow ``stage``'s last slot, in order (``host_dram_Bps``: the host
    DRAM bandwidth one device's CPU optimizer step gets, for ``offload.optimizer: host``)."""
    grads = ctx.gradients(stage)
    items: list = []
    if not ctx.overlap.grad_reduce:   # after the pipeline drains (Megatron-LM's train_step,
        # DeepSpeed's accumulation boundary): one reduce of the stage's whole gradient buffer
        items += [replace(r, dep=Dep.DRAIN, stream="compute") for r in grads.reduces]
    if grads.zero3_across is not None:
        items.append(replace(grads.zero3_across, dep=Dep.QUEUED))
    # DualPipe's two copies of a model stage sum their reduced gradients before the step
    items += [replace(c, dep=Dep.DRAIN, stream="compute") for c in grads.mirror]
    if ctx.framework.tied_blocking:   # after the gradient sync, blocking (Megatron, DeepSpeed)
        items += [replace(t, dep=Dep.DRAIN, stream="compute") for t in grads.tied]
    else:
        items += [replace(t, dep=Dep.SIDE) for t in grads.tied]
    items += _optimizer(ctx, stage, host_dram_Bps, len(items))
    if not ctx.overlap.param_gather:
        items += [replace(g, dep=Dep.BLOCKING, stream="compute") for g in grads.gathers]
    return tuple(items)
