"""The optimizer step in the flow program: on the device, or offloaded.

With ``training.offload.optimizer``: ``host`` runs the step on the CPU ZeRO-Offload style
(gradients down, a CPU step bound by the host's DRAM bandwidth, parameters back); ``cxl``
keeps the optimizer states in a CXL memory pool and streams them through the device (reads
and writes at once: the links are full duplex). The offload traffic is ordinary transfers in
the program, so it crosses the host / CXL links and contends with everything else.

>>> from clustersim.topology import build_cluster
>>> cluster = build_cluster("cxl-memory-pool", devices=8)
>>> [(a, b) for a, b in offload_pairs(cluster, cluster.devices[:2], "cxl", to_device=True)]
[('cxl0/mem0', 'n0/g0'), ('cxl0/mem1', 'n0/g1')]
"""

from __future__ import annotations

from clustersim.errors import InputError
from clustersim.topology.graph import COMPUTE_KINDS
from clustersim.workload.stagework import Work, optimizer_state, optimizer_work

__all__ = ["post_optimizer_step", "offload_pairs", "host_dram_share_Bps"]


def post_optimizer_step(builder, sim: int, stage: int, deps: list) -> None:
    """Post the optimizer step of simulated rank ``sim`` (pipeline ``stage``) after
    ``deps``, on its main stream; offloaded steps use the ``offload`` streams (``host`` for
    the CPU step). ``builder`` is the program builder of
    :func:`~clustersim.workload.program.build_program`: its program, plan, model, training,
    the rank's main stream (``builder.main``) and the real ranks ``sim`` stands for
    (``builder.ranks_of``)."""
    b, training, plan = builder, builder.training, builder.plan
    where = training.offload.optimizer
    if where == "none":
        opt = optimizer_work(b.model, plan, stage, b.device, training.precision,
                             training.optimizer, b.mem_bw)
        b.main(sim, b.compute(sim, opt, deps, label="optimizer step", category="optimizer"))
        return
    state = optimizer_state(b.model, plan, stage, training.precision, training.optimizer)
    if where == "host":
        down = _offload(b, sim, "host", False, state.params * state.grad_B, "offload", deps,
                        "gradients to host")
        cpu_s = state.params * (state.grad_B + 2 * state.state_B + state.param_B) \
            / host_dram_share_Bps(b.cluster, b.devices[b.real_of[sim]])
        cpu = b.program.compute(sim, cpu_s, deps=(down,), stream="host",
                                category="optimizer", label="CPU optimizer step")
        up = _offload(b, sim, "host", True, state.params * state.param_B, "offload", (cpu,),
                      "parameters from host")
        b.main(sim, b.compute(sim, Work(), (b.main(sim, None), up),
                              label="offloaded step done", category="optimizer"))
        return
    read = _offload(b, sim, "cxl", True, state.total_state_B, "offload-read", deps,
                    "optimizer states from CXL")
    write = _offload(b, sim, "cxl", False, state.total_state_B, "offload-write", deps,
                     "optimizer states to CXL")
    opt = optimizer_work(b.model, plan, stage, b.device, training.precision,
                         training.optimizer, b.mem_bw, states_on_device=False)
    b.main(sim, b.compute(sim, opt, (*deps, read), label="optimizer step",
                          category="optimizer"))
    b.main(sim, b.compute(sim, Work(), (b.main(sim, None), write),
                          label="states written back", category="optimizer"))


def _offload(b, sim: int, where: str, to_device: bool, size: float, stream: str, deps,
             label: str) -> int:
    devices = [b.devices[r] for r in b.ranks_of(sim)]
    call = b.program.transfer(offload_pairs(b.cluster, devices, where, to_device), size,
                              participants=(sim,), label=label)
    return b.program.post(sim, call, stream=stream, deps=tuple(d for d in deps
                                                                if d is not None),
                          category="offload")


def offload_pairs(cluster, devices, where: str, to_device: bool) -> list[tuple]:
    """(source, destination) flows between each of ``devices`` and the memory its optimizer
    states live in (``where``: ``host`` or ``cxl``); an InputError names the topology needed
    when the cluster has no such memory."""
    pairs = []
    for device in devices:
        found = cluster.offload_memory(device, where)
        if found is None:
            raise InputError(f"training.offload.optimizer: {where!r} needs a topology with "
                             f"{'a CXL memory pool' if where == 'cxl' else 'host memory'} "
                             f"(e.g. topology: cxl-memory-pool, or set "
                             f"cluster.overrides.memory_pool)")
        pairs.append((found[0], device) if to_device else (device, found[0]))
    return pairs


def host_dram_share_Bps(cluster, device) -> float:
    """DRAM bandwidth of the host ``device`` offloads to, shared by all its devices, at
    STREAM-class efficiency (~75% of peak on DDR4/DDR5 servers: an estimate).

    >>> from clustersim.topology import build_cluster
    >>> cluster = build_cluster("cxl-memory-pool", devices=8)
    >>> round(host_dram_share_Bps(cluster, cluster.devices[0]) / 1e9, 1)   # 8 GPUs a host
    76.8
    """
    node, _ = cluster.offload_memory(device, "host")
    G = cluster.graph
    host = next(iter(G.predecessors(node)))
    sharing = sum(1 for n in G.predecessors(host) if G.nodes[n]["kind"] in COMPUTE_KINDS)
    return 0.75 * G.edges[host, node]["bw_Bps"] / max(1, sharing)
