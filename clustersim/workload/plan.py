"""The parallel plan: how a model is cut over the devices, checked before anything runs.

:func:`resolve_plan` turns the experiment's ``training:`` section into a :class:`ParallelPlan`
or raises :class:`Infeasible` with a reason that names the offending numbers and what would
work. A sweep records an infeasible scenario as a row with ``status="infeasible"``.

Pipeline stages in Megatron order: virtual stage ``j`` (0-based, pipeline order) runs on
physical stage ``j % pp``, so physical stage ``k`` holds virtual stages ``k, k+pp, ...``.

>>> from clustersim.config.experiment import TrainingConfig
>>> from clustersim.workload.models import get_model
>>> t = TrainingConfig(global_batch=1536, parallelism={"tp": 8, "pp": 16})
>>> plan = resolve_plan(t, get_model("llama3-405b"), 1024)
>>> plan.dp, plan.num_microbatches, plan.stage_layers[:3], plan.stage_layers[-1]
(8, 192, (7, 8, 8), 7)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clustersim.workload.models import ModelSpec
from clustersim.workload.ops import Shard

__all__ = ["Infeasible", "ParallelPlan", "resolve_plan", "split_layers", "SCHEDULES", "CP_COMMS"]

# The pipeline schedules a plan may name; their orders are the step plan's
# (:mod:`clustersim.step.schedules`).
SCHEDULES = ("gpipe", "1f1b", "1f1b-interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe")
# How context-parallel ranks exchange what attention needs (Transformer Engine's
# ``cp_comm_type``, Megatron-Core's ``--cp-comm-type``, default p2p): ``p2p`` ring attention,
# ``a2a`` Ulysses, ``all_gather`` K/V gathered before attention (Llama 3). Their collectives
# are :func:`~clustersim.workload.comms.layer_comms`' and
# :func:`~clustersim.workload.comms.ring_attention_steps`'.
CP_COMMS = ("p2p", "a2a", "all_gather")


class Infeasible(Exception):
    """A parallel plan that cannot run; ``reason`` says why and what would work. A sweep
    records it as a row with the status below."""

    status = "infeasible"

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParallelPlan:
    """A checked parallel plan (every product and divisibility already verified).

    >>> p = ParallelPlan(tp=2, pp=2, dp=2, stage_layers=(3, 5), micro_batch=1,
    ...                  num_microbatches=4, global_batch=8, seq_len=128)
    >>> p.devices, p.layers_on_stage(1), p.shard, p.shard_group
    (8, 5, Shard(tp=2, sp=False, cp=1, ep=1), 2)
    """

    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
    sp: bool = False
    zero: int = 0
    shard_group: int = 0       # 0: all of dp (no hybrid sharding)
    schedule: str = "1f1b"
    virtual_stages: int = 1
    placement: tuple[str, ...] = ("tp", "cp", "ep", "dp", "pp")
    micro_batch: int = 1
    num_microbatches: int = 1
    global_batch: int = 1
    seq_len: int = 2048
    stage_layers: tuple[int, ...] = (1,)
    cp_comm: str = "p2p"       # see CP_COMMS

    def __post_init__(self):
        if not self.shard_group:
            object.__setattr__(self, "shard_group", self.dp)

    @property
    def devices(self) -> int:
        """Ranks the plan occupies: tp x pp x dp x cp (ep is carved out of dp)."""
        return self.tp * self.pp * self.dp * self.cp

    @property
    def shard(self) -> Shard:
        """The per-layer sharding the FLOP and collective functions take."""
        return Shard(self.tp, self.sp and self.tp > 1, self.cp, self.ep)

    @property
    def expert_dp(self) -> int:
        """Data-parallel replicas of each expert weight: dp x cp / ep (Megatron-Core)."""
        return self.dp * self.cp // self.ep

    def virtual_stages_of(self, stage: int) -> tuple[int, ...]:
        """Indices (pipeline order) of the virtual stages physical ``stage`` runs."""
        return tuple(range(stage, self.pp * self.virtual_stages, self.pp))

    @property
    def model_stage_layers(self) -> tuple[int, ...]:
        """Layers of each model stage in model order: ``stage_layers`` itself, but DualPipe's
        two directions run the same ``pp`` model stages (the first half) and ZB-V's second
        arm runs its chunks back up the stages (:func:`_check_dualpipe`, :func:`_check_zb_v`
        lay them out so).

        >>> ParallelPlan(pp=2, virtual_stages=2, schedule="zb-v",
        ...              stage_layers=(1, 2, 4, 3)).model_stage_layers
        (1, 2, 3, 4)
        """
        layers, pp = self.stage_layers, self.pp
        if self.schedule == "dualpipe":
            return layers[:pp]
        if self.schedule == "zb-v":
            return layers[:pp] + layers[pp:][::-1]
        return layers

    def layers_on_stage(self, stage: int) -> int:
        """Transformer layers held by physical pipeline ``stage`` (all its virtual stages)."""
        if not 0 <= stage < self.pp:
            raise ValueError(f"stage {stage} is outside 0..{self.pp - 1}")
        return sum(self.stage_layers[j] for j in self.virtual_stages_of(stage))


def split_layers(layers: int, stages: int) -> tuple[int, ...]:
    """Layers per stage, as even as possible, the extra layers on the middle stages.

    The first stage also runs the embedding and the last the output projection and loss, so
    when the layers do not divide, the remainder goes to the stages nearest the middle and
    the ends keep the smaller count (Llama 3 trained 126 layers on 16 stages so, with one
    layer fewer on the first and last stage; Llama Team 2024, Sec. 3.3.2).

    >>> split_layers(126, 16)
    (7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 7)
    >>> split_layers(10, 4)
    (2, 3, 3, 2)
    >>> split_layers(9, 4)
    (2, 3, 2, 2)
    """
    if stages <= 0 or layers < stages:
        raise ValueError(f"cannot split {layers} layers over {stages} stages")
    base, extra = divmod(layers, stages)
    centre = (stages - 1) / 2
    order = sorted(range(stages), key=lambda i: (abs(i - centre), i))
    counts = [base] * stages
    for i in order[:extra]:
        counts[i] += 1
    return tuple(counts)


def _divisors(n: int, limit: int = 12) -> str:
    found = [d for d in range(1, n + 1) if n % d == 0]
    return ", ".join(map(str, found[:limit])) + (" ..." if len(found) > limit else "")


def _check_tensor_parallel(model: ModelSpec, tp: int) -> None:
    if model.heads % tp:
        raise Infeasible(f"tp={tp} does not divide the {model.heads} attention heads of "
                         f"{model.name!r}; tp must divide heads (allowed: "
                         f"{_divisors(model.heads)})")
    if model.kv_heads % tp and tp % model.kv_heads:
        raise Infeasible(f"tp={tp} neither divides nor is a multiple of the {model.kv_heads} "
                         f"KV heads of {model.name!r}; with tp > kv_heads the KV heads are "
                         f"replicated, which needs tp to be a multiple of {model.kv_heads}")
    if model.ffn_hidden % tp:
        raise Infeasible(f"tp={tp} does not divide ffn_hidden={model.ffn_hidden} of "
                         f"{model.name!r} (allowed: {_divisors(model.ffn_hidden)})")


def _check_context_parallel(model: ModelSpec, tp: int, cp: int, cp_comm: str, seq_len: int
                            ) -> None:
    """Load-balanced causal CP gives each rank two of 2 x cp sequence chunks (every cp_comm;
    Megatron-Core splits the batch so for all of them). Ulysses (``a2a``) splits the heads of
    each tensor-parallel rank over cp: Transformer Engine's all-to-all attention asserts that
    both its query heads and its KV heads divide by the cp size (it does not replicate KV
    heads, nor did DeepSpeed-Ulysses as published, Jacobs et al. 2023)."""
    if cp_comm not in CP_COMMS:
        raise Infeasible(f"unknown cp_comm {cp_comm!r}; allowed: {', '.join(CP_COMMS)}")
    if cp > 1 and seq_len % (2 * cp):
        raise Infeasible(f"seq_len={seq_len} must be divisible by 2 x cp = {2 * cp}: "
                         "load-balanced causal context parallelism gives each rank two "
                         "chunks")
    if cp == 1 or cp_comm != "a2a":
        return
    heads = model.heads // tp
    kv = model.kv_heads // tp if model.kv_heads % tp == 0 else 1   # replicated past tp
    if heads % cp or kv % cp:
        raise Infeasible(f"cp_comm a2a (Ulysses) splits each tensor-parallel rank's heads "
                         f"over cp={cp}, but {model.name!r} has {heads} query and {kv} KV "
                         f"heads per rank at tp={tp}; both must divide by cp (allowed cp: "
                         f"{_divisors(math.gcd(heads, kv))}); use cp_comm: p2p or "
                         f"all_gather, or a smaller cp or tp")


def _check_dualpipe(model: ModelSpec, pp: int, vs: int, micro: int, stage_layers
                    ) -> tuple[int, ...]:
    """DualPipe's plan: pp even, an even number of micro-batches, at least two per stage
    (half enter at each end, each direction needs pp in flight); every stage holds model
    stages ``s`` and ``pp - 1 - s``, so its stage layers read ``split + reversed(split)``
    (two chunks per stage, pipeline order of each direction)."""
    if pp < 2 or pp % 2:
        raise Infeasible(f"the dualpipe schedule needs an even pp >= 2 (each stage pairs "
                         f"with the stage mirrored about the middle), got pp={pp}; use an "
                         f"even pp or schedule: zb-h1")
    if micro % 2 or micro < 2 * pp:
        raise Infeasible(f"the dualpipe schedule needs an even number of micro-batches, at "
                         f"least 2 x pp = {2 * pp} (half enter at each end), got {micro}; "
                         "raise global_batch or lower micro_batch or dp")
    if vs not in (1, 2):
        raise Infeasible(f"the dualpipe schedule runs two chunks per stage, one per "
                         f"direction; leave virtual_stages out (got {vs})")
    if pp > model.layers:
        raise Infeasible(f"pp={pp} pipeline stages exceed the {model.layers} layers of "
                         f"{model.name!r}; every stage needs at least one layer")
    if stage_layers is None:
        split = split_layers(model.layers, pp)
    else:
        split = tuple(stage_layers)
        if len(split) != pp or sum(split) != model.layers:
            raise Infeasible(f"with dualpipe, stage_layers lists the {pp} model stages "
                             f"(summing to the {model.layers} layers of {model.name!r}); "
                             f"got {list(split)}")
    return split + split[::-1]


def _check_zb_v(model: ModelSpec, pp: int, vs: int, stage_layers) -> tuple[int, ...]:
    """ZB-V's plan: the model in 2 pp chunks, stage ``s`` holding chunks ``s`` and
    ``2pp - 1 - s`` (a V: down the stages and back up), so its stage layers read
    ``chunks[:pp] + reversed(chunks[pp:])`` (two chunks per stage, the second flowing back)."""
    if pp < 2 or vs not in (1, 2):
        raise Infeasible(f"the zb-v schedule runs two chunks per stage on pp >= 2 stages "
                         f"(got pp={pp}, virtual_stages={vs}); leave virtual_stages out")
    if 2 * pp > model.layers:
        raise Infeasible(f"zb-v cuts {model.name!r} into 2 x pp = {2 * pp} chunks, more "
                         f"than its {model.layers} layers; lower pp")
    chunks = split_layers(model.layers, 2 * pp) if stage_layers is None else tuple(stage_layers)
    if len(chunks) != 2 * pp or sum(chunks) != model.layers:
        raise Infeasible(f"with zb-v, stage_layers lists the {2 * pp} chunks in model order "
                         f"(summing to the {model.layers} layers of {model.name!r}); got "
                         f"{list(chunks)}")
    return chunks[:pp] + chunks[pp:][::-1]


def _check_pipeline(model: ModelSpec, pp: int, vs: int, schedule: str, micro: int,
                    stage_layers) -> tuple[int, ...]:
    if schedule not in SCHEDULES:
        raise Infeasible(f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if schedule == "dualpipe":
        return _check_dualpipe(model, pp, vs, micro, stage_layers)
    if schedule == "zb-v":
        return _check_zb_v(model, pp, vs, stage_layers)
    if schedule == "1f1b-interleaved":
        if pp == 1:
            raise Infeasible("the interleaved 1F1B schedule needs pp > 1; got pp=1 (use "
                             "schedule: 1f1b)")
        if vs < 2:
            raise Infeasible(f"the interleaved 1F1B schedule needs virtual_stages >= 2, got "
                             f"{vs}")
        if micro % pp:
            raise Infeasible(f"the interleaved 1F1B schedule needs the number of "
                             f"micro-batches ({micro}) to be a multiple of pp={pp} "
                             "(Megatron-LM's requirement); change global_batch, micro_batch "
                             "or dp")
    elif vs > 1:
        raise Infeasible(f"virtual_stages={vs} needs schedule: 1f1b-interleaved (the "
                         f"{schedule} schedule runs one stage per device)")
    stages = pp * vs
    if stages > model.layers:
        raise Infeasible(f"pp x virtual_stages = {pp} x {vs} = {stages} pipeline stages "
                         f"exceed the {model.layers} layers of {model.name!r}; every stage "
                         "needs at least one layer")
    if stage_layers is None:
        return split_layers(model.layers, stages)
    stage_layers = tuple(stage_layers)
    if len(stage_layers) != stages:
        raise Infeasible(f"stage_layers lists {len(stage_layers)} stages but pp x "
                         f"virtual_stages = {pp} x {vs} = {stages}; give one count per "
                         "(virtual) stage in pipeline order")
    if sum(stage_layers) != model.layers:
        raise Infeasible(f"stage_layers sum to {sum(stage_layers)} but {model.name!r} has "
                         f"{model.layers} layers")
    return stage_layers


def resolve_plan(training, model: ModelSpec, devices: int) -> ParallelPlan:
    """Check a TrainingConfig against a model and a device count; return the plan.

    >>> from clustersim.config.experiment import TrainingConfig
    >>> from clustersim.workload.models import get_model
    >>> t = TrainingConfig(global_batch=64, parallelism={"tp": 3})
    >>> resolve_plan(t, get_model("llama3-8b"), 24)
    Traceback (most recent call last):
    ...
    clustersim.workload.plan.Infeasible: tp=3 does not divide the 32 attention heads of ...
    """
    par = training.parallelism
    tp, pp, cp, ep, vs = par.tp, par.pp, par.cp, par.ep, par.virtual_stages
    seq_len = training.seq_len or model.seq_len
    model_parallel = tp * pp * cp
    if par.dp is None:
        if devices % model_parallel:
            raise Infeasible(f"tp x pp x cp = {tp} x {pp} x {cp} = {model_parallel} does not "
                             f"divide the {devices} devices; choose sizes whose product "
                             f"divides {devices}")
        dp = devices // model_parallel
    else:
        dp = par.dp
        if model_parallel * dp != devices:
            raise Infeasible(f"tp x pp x dp x cp = {tp} x {pp} x {dp} x {cp} = "
                             f"{model_parallel * dp}, but the cluster has {devices} devices; "
                             f"leave dp out to use dp = devices / (tp x pp x cp)")
    _check_tensor_parallel(model, tp)
    # Sequence parallelism needs no divisibility of its own: where the tokens do not split
    # over tp (Megatron's sequence dimension), the activations split over the hidden
    # dimension instead, as GSPMD shards PaLM's (same bytes, same collectives), and hidden
    # already divides by tp.
    _check_context_parallel(model, tp, cp, par.cp_comm, seq_len)
    if ep > 1:
        if model.moe is None:
            raise Infeasible(f"ep={ep} but {model.name!r} has no experts; use ep=1")
        if model.moe.experts % ep:
            raise Infeasible(f"ep={ep} does not divide the {model.moe.experts} experts of "
                             f"{model.name!r} (allowed: {_divisors(model.moe.experts)})")
        # The mesh nests ep inside dp (tp, cp, ep, dp / ep, pp): an ep that divides dp x cp
        # but not dp would need experts split over context-parallel ranks, which the mesh
        # (workload.mesh.mesh_for_plan) cannot lay out.
        if dp % ep:
            allowed = _divisors(math.gcd(dp, model.moe.experts))
            raise Infeasible(f"ep={ep} must divide dp={dp}: expert parallelism is carved out "
                             f"of the data-parallel ranks (the inner part of dp in the device "
                             f"mesh; experts are not split over context-parallel ranks); "
                             f"allowed here: ep in {allowed}, or more data parallelism")
    per_step = training.micro_batch * dp
    if training.global_batch % per_step:
        lower = training.global_batch // per_step * per_step
        hint = f"{lower} or {lower + per_step}" if lower else f"{per_step}"
        raise Infeasible(f"global_batch={training.global_batch} is not divisible by "
                         f"micro_batch x dp = {training.micro_batch} x {dp} = {per_step}; "
                         f"try global_batch {hint}")
    micro = training.global_batch // per_step
    stage_layers = _check_pipeline(model, pp, vs, par.schedule, micro, par.stage_layers)
    if par.schedule in ("dualpipe", "zb-v"):
        vs = 2   # a chunk per direction (DualPipe) or per arm of the V (ZB-V)
    shard_group = par.shard_group or dp
    if dp % shard_group:
        raise Infeasible(f"shard_group={shard_group} does not divide dp={dp}; hybrid "
                         f"sharding needs groups that tile the data-parallel ranks "
                         f"(allowed: {_divisors(dp)})")
    return ParallelPlan(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, sp=par.sp, zero=par.zero,
                        shard_group=shard_group, schedule=par.schedule, virtual_stages=vs,
                        placement=tuple(par.placement), micro_batch=training.micro_batch,
                        num_microbatches=micro, global_batch=training.global_batch,
                        seq_len=seq_len, stage_layers=stage_layers, cp_comm=par.cp_comm)
