"""Build the Program of one training step: model x parallel plan x cluster -> per-rank ops.

Each pipeline stage follows its schedule (:mod:`~clustersim.workload.schedules`). A forward of
a model chunk receives its input (blocking, on the main stream), computes, runs the chunk's
tensor/context/expert-parallel collectives (blocking, as Megatron does without TP overlap) and
sends its output on a side stream (like ``isend``); a backward does the same in reverse. Data
parallelism follows Megatron-Core and FSDP:

- gradients are reduced in buckets launched as the last backward of each chunk produces them
  (``overlap.grad_reduce``), else after the backward; ZeRO-1 reduce-scatters and all-gathers
  the updated parameters in buckets that the first forward of the next step waits for
  (``overlap.param_gather``), ZeRO-2 reduce-scatters every micro-batch, ZeRO-3 (FSDP)
  all-gathers each chunk's parameters one compute ahead (prefetch) and reduce-scatters its
  gradients after each backward; hybrid sharding (``shard_group``) shards within blocks of
  the data-parallel group and all-reduces across them;
- the optimizer step waits for every gradient collective; it runs on the device or offloaded
  (:mod:`~clustersim.workload.optimizer_step`).

Every collective runs on the groups :mod:`~clustersim.workload.groups` defines, the ones the
analytic model prices. In ``representative`` mode one rank per pipeline stage is simulated
and every collective or send carries all groups or pairs of its stage, so the network sees
every concurrent flow; in ``all`` mode every rank is simulated with its own calls.

>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.topology import build_cluster
>>> from clustersim.workload import get_model, resolve_plan
>>> cluster = build_cluster("dgx-h100", devices=16)
>>> model = get_model("llama3-8b")
>>> plan = resolve_plan(TrainingConfig(global_batch=16, parallelism={"tp": 4, "pp": 2}),
...                     model, 16)
>>> program = build_program(model, plan, cluster, TrainingConfig(global_batch=16))
>>> len(program.ranks), program.ranks[0].stands_for
(2, 8)
"""

from __future__ import annotations

from dataclasses import replace

from clustersim.engine.program import Program
from clustersim.workload.groups import (axis_of, block_size, collective_families,
                                        hybrid_sharded, sharded_block)
from clustersim.workload.memory import stage_parameters
from clustersim.workload.mesh import mesh_for_plan
from clustersim.workload.models import ModelSpec
from clustersim.workload.ops import element_bytes
from clustersim.workload.optimizer_step import post_optimizer_step
from clustersim.workload.plan import ParallelPlan
from clustersim.workload.schedules import (next_virtual_stage, previous_virtual_stage,
                                           schedule)
from clustersim.workload.stagework import (BUCKETS, ZERO3_PIECES, ZERO3_PREFIX, Comm, Work,
                                           activation_bytes, chunk_work, dp_comms,
                                           p2p_gather_bytes)

# BUCKETS was defined here; it lives in stagework beside the work both fidelities price
__all__ = ["build_program", "BUCKETS"]


def _piece(comm: Comm, pieces: int, i: int) -> Comm:
    """The share of a per-layer collective (``count`` back-to-back calls) in piece ``i``."""
    count = comm.count * (i + 1) // pieces - comm.count * i // pieces
    return replace(comm, count=count)


class _Builder:
    def __init__(self, model: ModelSpec, plan: ParallelPlan, cluster, training,
                 representative: bool):
        self.model, self.plan, self.cluster, self.training = model, plan, cluster, training
        self.mesh = mesh_for_plan(plan)
        if len(cluster.devices) < plan.devices:
            raise ValueError(f"the plan needs {plan.devices} devices, the cluster has "
                             f"{len(cluster.devices)}")
        self.devices = cluster.devices
        self.device = cluster.device
        self.mem_bw = cluster.memory_bw_Bps(cluster.devices[0])
        self.program = Program()
        self.representative = representative
        self.sim_of: list[int] = [0] * plan.devices
        self.real_of: list[int] = []
        per_stage = plan.devices // plan.pp
        for r in range(plan.devices):
            stage = self.mesh.coords(r)["pp"]
            if representative and self.mesh.rank(pp=stage) != r:
                continue
            sim = self.program.add_rank(self.devices[r], per_stage if representative else 1,
                                        label=f"stage {stage}" + ("" if representative
                                                                  else f" rank {r}"))
            self.real_of.append(r)
        for r in range(plan.devices):
            stage = self.mesh.coords(r)["pp"]
            self.sim_of[r] = (self.real_of.index(self.mesh.rank(pp=stage))
                              if representative else r)
        self._families: dict = {}
        self._calls: dict = {}
        self._pairs: dict = {}
        self._device_groups: dict = {}
        self.last_main: dict[int, int | None] = {}

    # -- groups and calls -----------------------------------------------------------------
    def _family(self, axis: str, block: str):
        """For an axis (and a hybrid-sharding block kind): rank -> group, sig -> groups."""
        key = (axis, block)
        if key not in self._families:
            groups = collective_families(self.mesh, axis, block, 0 if block == "all" else
                                         block_size(self.plan, axis, self.mesh))
            of_rank, by_sig = {}, {}
            for g in groups:
                sig = frozenset(self.sim_of[x] for x in g)
                by_sig.setdefault(sig, []).append(g)
                for x in g:
                    of_rank[x] = (g, sig)
            self._families[key] = (of_rank, by_sig)
        return self._families[key]

    def collective(self, sim: int, comm: Comm, tag, stream: str, deps=(), block: str = "all",
                   size: float | None = None, category: str = "") -> int | None:
        """Post ``comm`` for simulated rank ``sim`` on its group; None if the group is one rank."""
        axis = axis_of(comm)
        of_rank, by_sig = self._family(axis, block)
        group, sig = of_rank[self.real_of[sim]]
        if len(group) < 2 or comm.count == 0:
            return None
        key = (tag, comm.name, axis, block, sig)
        call = self._calls.get(key)
        if call is None:
            call = self.program.collective(
                comm.op, comm.bytes if size is None else size,
                self._devices_of(axis, block, sig, group), sorted(sig),
                repeat=comm.count, label=f"{comm.name} x{comm.count}" if comm.count > 1
                else comm.name)
            self._calls[key] = call
        return self.program.post(sim, call, stream=stream, deps=tuple(d for d in deps
                                                                      if d is not None),
                                 category=category or comm.axis)

    def _devices_of(self, axis: str, block: str, sig, group) -> tuple[tuple, ...]:
        """The device groups one call of a family carries, built once and shared by every
        micro-batch's call (the engine caches the call's expansion by this very tuple)."""
        key = (axis, block, sig) if self.representative else (axis, block, tuple(group))
        found = self._device_groups.get(key)
        if found is None:
            family = self._family(axis, block)[1][sig] if self.representative else [group]
            found = tuple(tuple(self.devices[x] for x in g) for g in family)
            self._device_groups[key] = found
        return found

    def p2p(self, sim: int, to_stage: int, size: float, tag, stream: str, deps=(),
            receive: bool = False) -> int:
        """Send (or, with ``receive``, receive) a stage's activations or gradients."""
        me = self.real_of[sim]
        here = self.mesh.coords(me)["pp"]
        src_stage, dst_stage = (to_stage, here) if receive else (here, to_stage)
        pairs, devices = self._stage_pairs(me, src_stage, dst_stage)
        sig = (self.sim_of[pairs[0][0]], self.sim_of[pairs[0][1]])
        key = (tag, sig)
        call = self._calls.get(key)
        if call is None:
            call = self.program.transfer(devices, size, participants=sig,
                                         label=f"{tag[0]} {tag[1:]}")
            self._calls[key] = call
        return self.program.post(sim, call, stream=stream, deps=tuple(d for d in deps
                                                                      if d is not None),
                                 kind="recv" if receive else "send", category="pp")

    def _stage_pairs(self, me: int, src_stage: int, dst_stage: int):
        """(sender, receiver) ranks between two stages -- every position of the stage in
        representative mode, ``me``'s own position otherwise -- and the same pairs as
        devices, built once so every micro-batch's transfer shares one tuple."""
        key = (src_stage, dst_stage, None if self.representative else me)
        found = self._pairs.get(key)
        if found is None:
            mesh = self.mesh
            stride = mesh.stride["pp"]
            if self.representative:
                members = [r for r in range(self.plan.devices)
                           if mesh.coords(r)["pp"] == src_stage]
            else:
                members = [me + (src_stage - mesh.coords(me)["pp"]) * stride]
            pairs = [(r, r + (dst_stage - src_stage) * stride) for r in members]
            found = (pairs, tuple((self.devices[a], self.devices[b]) for a, b in pairs))
            self._pairs[key] = found
        return found

    def ranks_of(self, sim: int) -> list[int]:
        """The real ranks simulated rank ``sim`` stands for: its whole stage in representative
        mode, itself otherwise."""
        me = self.real_of[sim]
        if not self.representative:
            return [me]
        stage = self.mesh.coords(me)["pp"]
        return [r for r in range(self.plan.devices) if self.mesh.coords(r)["pp"] == stage]

    def receive(self, sim: int, from_stage: int, size: float, gather: Comm, tag) -> None:
        """Receive activations (or gradients) on the main stream; without sequence
        parallelism, all-gather the 1/tp pieces scatter/gather sent (``gather.bytes`` > 0)."""
        self.main(sim, self.p2p(sim, from_stage, size, tag, "compute",
                                deps=(self.main(sim, None),), receive=True))
        if gather.bytes:
            self.main(sim, self.collective(sim, gather, ("gather",) + tuple(tag), "compute",
                                           deps=(self.main(sim, None),)))

    def compute(self, sim: int, work: Work, deps=(), label: str = "", category: str = "") -> int:
        return self.program.compute(sim, work.seconds, deps=tuple(d for d in deps
                                                                  if d is not None),
                                    flops=work.flops, mem_bytes=work.bytes, category=category,
                                    label=label)

    def main(self, sim: int, op: int | None) -> int | None:
        if op is not None:
            self.last_main[sim] = op
        return self.last_main.get(sim)

    # -- one stage ------------------------------------------------------------------------
    def build_rank(self, sim: int) -> None:
        plan, training = self.plan, self.training
        overlap = training.overlap
        stage = self.mesh.coords(self.real_of[sim])["pp"]
        chunks = plan.virtual_stages
        precision, recompute = training.precision, training.recompute
        work = {c: chunk_work(self.model, plan, c * plan.pp + stage, self.device, precision,
                              recompute, self.mem_bw, attention=training.attention)
                for c in range(chunks)}
        layers_here = sum(w.layers for w in work.values())
        step_comms = dp_comms(self.model, plan, stage, precision)
        hybrid, dp_block = hybrid_sharded(plan), sharded_block(plan)
        act_B = activation_bytes(self.model, plan, precision)
        gather = Comm("p2p_all_gather", "all_gather", "tp",
                      p2p_gather_bytes(self.model, plan, precision))
        self.last_main[sim] = None
        dp_ops: list[int] = []

        # ZeRO-1/2: the parameters updated last step are all-gathered in buckets that the
        # first forward of each chunk waits for (overlapped), or after the optimizer.
        gathers = [c for c in step_comms["step"] if c.op == "all_gather"]
        reduces = [c for c in step_comms["step"] if c.op != "all_gather" and c.axis != "pp"]
        tied = [c for c in step_comms["step"] if c.axis == "pp"]
        param_buckets: dict[int, list[int]] = {}
        if gathers and overlap.param_gather:
            for c in range(chunks):
                share = work[c].layers / layers_here
                param_buckets[c] = [
                    op for g in gathers for b in range(BUCKETS)
                    if (op := self.collective(sim, g, ("ag", c, b), "dp",
                                              size=g.bytes * share / BUCKETS,
                                              block=dp_block)) is not None]
        actions = schedule(plan.schedule, plan.pp, plan.num_microbatches, chunks)[stage]
        last_b = {c: max(m for k, cc, m in actions if k == "B" and cc == c)
                  for c in range(chunks)}
        first_f = {c: min(m for k, cc, m in actions if k == "F" and cc == c)
                   for c in range(chunks)}
        prefetch_from: int | None = None   # op before the previous compute (FSDP prefetch)
        for kind, c, m in actions:
            vstage = c * plan.pp + stage
            w = work[c]
            if kind == "F":
                prev = previous_virtual_stage(stage, c, plan.pp)
                if prev is not None:
                    self.receive(sim, prev[0], act_B, gather, ("act", vstage, m))
                comms = w.fwd_comms
                body, bucket_comms = w.fwd, None
                if m == first_f[c] and c in param_buckets:
                    bucket_comms = param_buckets[c]
            else:
                nxt = next_virtual_stage(stage, c, plan.pp, chunks)
                if nxt is not None:
                    self.receive(sim, nxt[0], act_B, gather, ("grad", vstage, m))
                comms = w.bwd_comms
                body, bucket_comms = w.bwd, None
            # FSDP (ZeRO-3): the chunk runs in pieces of layers; each piece's parameters are
            # gathered one piece ahead (prefetch) and its gradients reduce-scattered after it.
            gathers3 = [cm for cm in comms if cm.prefetched]
            reduces3 = [cm for cm in comms if cm.name.startswith(ZERO3_PREFIX)
                        and not cm.prefetched]
            compute_from = self.main(sim, None)
            last_reduce = kind == "B" and m == last_b[c]
            if gathers3 or reduces3:
                pieces = max(1, min(w.layers, ZERO3_PIECES))
            elif bucket_comms or (last_reduce and reduces):
                pieces = BUCKETS
            else:
                pieces = 1
            for i in range(pieces):
                deps = [self.main(sim, None)]
                for g in gathers3:
                    deps.append(self.collective(sim, _piece(g, pieces, i), (kind, c, m, i), "dp",
                                                deps=(prefetch_from,),
                                                block=dp_block))
                prefetch_from = self.main(sim, None)
                if bucket_comms and i < len(bucket_comms):
                    deps.append(bucket_comms[i])
                self.main(sim, self.compute(sim, body * (1 / pieces), deps,
                                            label=f"{kind} c{c} mb{m}" +
                                            (f" {i + 1}/{pieces}" if pieces > 1 else ""),
                                            category="fwd" if kind == "F" else "bwd"))
                for r in reduces3:
                    dp_ops.append(self.collective(sim, _piece(r, pieces, i), (kind, c, m, i),
                                                  "dp", deps=(self.main(sim, None),),
                                                  block=dp_block))
                if last_reduce and reduces:   # gradient buckets as the backward makes them
                    share = work[c].layers / layers_here / pieces
                    stream = "dp" if overlap.grad_reduce else "compute"
                    for r in reduces:
                        op = self.collective(sim, r, ("rs", c, i), stream,
                                             deps=(self.main(sim, None),),
                                             size=r.bytes * share,
                                             block=dp_block)
                        if op is not None:
                            dp_ops.append(op)
                            if not overlap.grad_reduce:
                                self.main(sim, op)
                        if hybrid:
                            cross = replace(r, op="all_reduce", name=r.name + "_across")
                            op = self.collective(sim, cross, ("ar", c, i), stream,
                                                 deps=(op if op is not None else
                                                       self.main(sim, None),),
                                                 size=r.bytes * share / block_size(
                                                     plan, axis_of(r), self.mesh),
                                                 block="across")
                            if op is not None:
                                dp_ops.append(op)
            overlapped: list[int | None] = []
            for comm in comms:
                if comm.name.startswith(ZERO3_PREFIX):
                    continue  # run with the compute pieces above
                if plan.zero == 2 and comm.axis == "dp":
                    op = self.collective(sim, comm, (kind, c, m), "dp",
                                         deps=(self.main(sim, None),),
                                         block=dp_block)
                    if op is not None:
                        dp_ops.append(op)
                    continue
                if overlap.tp_comm and comm.axis == "tp":
                    # --tp-comm-overlap: the chunk's TP collectives run under its GEMMs
                    overlapped.append(self.collective(sim, comm, (kind, c, m), "tp",
                                                      deps=(compute_from,)))
                    continue
                self.main(sim, self.collective(sim, comm, (kind, c, m), "compute",
                                               deps=(self.main(sim, None),)))
            if any(op is not None for op in overlapped):
                self.main(sim, self.compute(sim, Work(), (self.main(sim, None), *overlapped),
                                            label=f"{kind} c{c} mb{m} joins tp comm",
                                            category="fwd" if kind == "F" else "bwd"))
            if kind == "B":
                for comm in step_comms["microbatch"]:
                    op = self.collective(sim, comm, ("mb", c, m), "dp",
                                         deps=(self.main(sim, None),),
                                         size=comm.bytes * work[c].layers / layers_here)
                    if op is not None:
                        dp_ops.append(op)
            # send the output (or input gradient) on, without blocking the compute stream
            target = (next_virtual_stage(stage, c, plan.pp, chunks) if kind == "F"
                      else previous_virtual_stage(stage, c, plan.pp))
            if target is not None:
                tvstage = target[1] * plan.pp + target[0]
                self.p2p(sim, target[0], act_B, ("act" if kind == "F" else "grad", tvstage, m),
                         "send-next" if kind == "F" else "send-prev",
                         deps=(self.main(sim, None),))
        # hybrid FSDP: the gradient shards reduced inside each block are summed across blocks
        if plan.zero >= 3 and hybrid:
            shard = (stage_parameters(self.model, plan, stage).dense
                     / block_size(plan, "dp", self.mesh))
            across = Comm("zero3_grad_all_reduce_across", "all_reduce", "dp",
                          shard * element_bytes(precision)[0])
            dp_ops.append(self.collective(sim, across, ("ar3",), "dp",
                                          deps=[d for d in dp_ops if d is not None],
                                          block="across"))
        # tied embeddings: first and last stage sum their gradients
        for comm in tied:
            op = self.collective(sim, comm, ("tied",), "dp", deps=(self.main(sim, None),))
            if op is not None:
                dp_ops.append(op)
        post_optimizer_step(self, sim, stage, [*dp_ops, self.main(sim, None)])
        if gathers and not overlap.param_gather:
            for g in gathers:
                self.main(sim, self.collective(sim, g, ("ag-after",), "compute",
                                               deps=(self.main(sim, None),),
                                               block=dp_block))


def build_program(model: ModelSpec, plan: ParallelPlan, cluster, training,
                  representative: bool = True) -> Program:
    """The Program of one training step of ``model`` under ``plan`` on ``cluster``."""
    builder = _Builder(model, plan, cluster, training, representative)
    for sim in range(len(builder.real_of)):
        builder.build_rank(sim)
    return builder.program
