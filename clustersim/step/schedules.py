"""Pipeline schedules: the order in which each stage runs forward and backward passes.

- ``gpipe`` (Huang et al. 2019): every forward, then every backward.
- ``1f1b`` (PipeDream-Flush, Narayanan et al. 2021): ``p - s - 1`` warm-up forwards on stage
  ``s``, then one forward one backward, then the remaining backwards.
- ``1f1b-interleaved`` (Megatron-LM, Narayanan et al. SC'21): each stage holds ``v`` model
  chunks; micro-batches go through the chunks in groups of ``p``, with ``(p - s - 1) * 2 +
  (v - 1) * p`` warm-up forwards; the bubble shrinks by ``v``.
- ``zb-h1`` and ``zb-h2`` (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024,
  Sec. 2): the backward is split into ``B`` (the input gradient, which the previous stage
  waits for) and ``W`` (the weight gradient, which nobody waits for). ZB-H1 keeps 1F1B's
  warm-up and delays each ``W`` on stage ``s`` by ``s`` backwards, so every stage holds
  ``p`` micro-batches (1F1B's peak) and the deferred ``W`` s fill the drain: bubble
  ``(p - 1)(T_F + T_B - T_W)``. ZB-H2 runs ``2 (p - s - 1)`` warm-up forwards and delays
  ``W`` by ``2 s``: every stage holds ``2p - 1`` micro-batches and the bubble is
  ``(p - 1)(T_F + T_B - 2 T_W)``, zero when the three are equal.
- ``zb-v`` (Qi et al., "Pipeline Parallelism with Controllable Memory", NeurIPS 2024,
  arXiv 2405.15362): the model in ``2p`` chunks laid out as a V, chunk ``s`` and chunk
  ``2p - 1 - s`` on stage ``s``, so the first and last chunk share stage 0 and the turn
  (chunks ``p - 1`` and ``p``) stays on stage ``p - 1``. The order is built as the paper
  builds its schedules (:func:`_zb_v_orders`): a greedy list schedule of unit-time F, B
  and W, B first, F while the stage holds less than 1F1B's peak of ``p`` micro-batches,
  W to fill what is left, so the memory stays 1F1B's and the bubble nearly vanishes when
  ``T_F = T_B = T_W``.
- ``dualpipe`` (DeepSeek-V3 technical report, Sec. 3.2.1, Fig. 5): a bidirectional pipeline.
  Half the micro-batches enter at stage 0 and run model stages ``0 .. p-1`` on stages
  ``0 .. p-1`` (chunk 0), the other half enter at stage ``p - 1`` and run them on stages
  ``p-1 .. 0`` (chunk 1), so stage ``s`` holds model stages ``s`` and ``p - 1 - s`` (twice
  1F1B's parameters). Each stage runs eight phases (below, :func:`_dualpipe_stage`): the
  forwards of the direction that enters nearby, then both, then in the steady state a
  forward of one direction paired with a backward of the other (:func:`paired_actions`:
  the pair's compute hides the other's communication), some backwards split into B and a
  deferred W to fill the drain. Table 2 of the report: bubble
  ``(p/2 - 1)(T_F&B + T_B - 3 T_W)``, ``p + 1`` micro-batches of activations. Stages ``s``
  and ``p - 1 - s`` hold the same two model stages and sum their gradients
  (:mod:`~clustersim.step.dataparallel`); a pair runs its forward and backward one after
  the other on the compute stream (only their all-to-alls overlap), not as DeepSeek's
  interleaved kernels.

The warm-up count (:func:`warmup_forwards`) is the one place these formulas live: the orders
of :func:`schedule`, and through them the activations a stage holds
(:func:`in_flight_microbatches`), follow from it.

An action is ``(kind, chunk, microbatch)`` with kind ``"F"``, ``"B"`` (the whole backward,
or its input-gradient part where the schedule splits it: :func:`splits_backward`) or ``"W"``
(the weight-gradient part). The virtual stage of
chunk ``c`` on stage ``s`` is ``c * p + s``: data flows from virtual stage ``k`` to ``k + 1``
(DualPipe's chunk 1 flows from stage ``s`` to ``s - 1``; :func:`model_stage` says which
model stage a chunk runs).

>>> schedule("1f1b", stages=2, microbatches=3, chunks=1)[0]
(('F', 0, 0), ('F', 0, 1), ('B', 0, 0), ('F', 0, 2), ('B', 0, 1), ('B', 0, 2))
>>> schedule("1f1b", stages=2, microbatches=3, chunks=1)[1]
(('F', 0, 0), ('B', 0, 0), ('F', 0, 1), ('B', 0, 1), ('F', 0, 2), ('B', 0, 2))
"""

from __future__ import annotations

from functools import lru_cache

from clustersim.workload.plan import SCHEDULES

__all__ = ["SCHEDULES", "Action", "warmup_forwards", "deferred_weight_gradients",
           "splits_backward", "schedule", "paired_actions", "model_stage", "previous_virtual_stage",
           "next_virtual_stage", "in_flight_microbatches", "held_microbatches"]

Action = tuple[str, int, int]


def warmup_forwards(name: str, stage: int, stages: int, microbatches: int,
                    chunks: int = 1) -> int:
    """Forwards ``stage`` runs before its first backward.

    >>> [warmup_forwards("1f1b", s, 4, 8) for s in range(4)], warmup_forwards("gpipe", 0, 4, 8)
    ([3, 2, 1, 0], 8)
    >>> warmup_forwards("1f1b-interleaved", 0, 4, 8, chunks=2)   # 2(p - 1) + (v - 1) p
    10
    """
    if name == "gpipe":
        return microbatches * chunks
    if name in ("dualpipe", "zb-v"):   # read off the built order
        order = schedule(name, stages, microbatches, chunks)[stage]
        return next(i for i, action in enumerate(order) if action[0] == "B")
    if name in ("1f1b", "zb-h1"):
        return min(stages - stage - 1, microbatches)
    if name == "zb-h2":
        return min(2 * (stages - stage - 1), microbatches)
    return min(2 * (stages - stage - 1) + (chunks - 1) * stages, microbatches * chunks)


def splits_backward(name: str) -> bool:
    """Whether ``name`` runs the weight gradient (``W``) apart from the backward (``B``)."""
    return name in ("zb-h1", "zb-h2", "zb-v", "dualpipe")


def model_stage(name: str, stage: int, chunk: int, stages: int) -> int:
    """The model stage (pipeline order) ``chunk`` of ``stage`` runs.

    >>> model_stage("1f1b-interleaved", 1, 1, 4), model_stage("dualpipe", 1, 1, 4)
    (5, 2)
    >>> model_stage("zb-v", 1, 1, 4)    # the V's way back: chunk 2p - 1 - s
    6
    """
    if name == "dualpipe":
        return stage if chunk == 0 else stages - 1 - stage
    if name == "zb-v":
        return stage if chunk == 0 else 2 * stages - 1 - stage
    return chunk * stages + stage


def deferred_weight_gradients(name: str, stage: int, stages: int) -> int:
    """Backwards ``stage`` runs between a micro-batch's ``B`` and its ``W`` (Qi et al.: the
    ``W`` s start late by what the warm-up is short of the first stage's, so every stage
    keeps as many micro-batches in flight as the first).

    >>> [deferred_weight_gradients("zb-h1", s, 4) for s in range(4)]
    [0, 1, 2, 3]
    >>> deferred_weight_gradients("zb-h2", 3, 4), deferred_weight_gradients("1f1b", 3, 4)
    (6, 0)
    """
    if name == "zb-h1":
        return stage
    if name == "zb-h2":
        return 2 * stage
    return 0


def _with_weight_gradients(order: list[Action], delay: int) -> list[Action]:
    """``order`` with each backward's ``W`` placed after the ``delay``-th backward that
    follows it (the ones left at the end, after the last backward)."""
    out, pending = [], []
    for action in order:
        out.append(action)
        if action[0] == "B":
            pending.append(("W", action[1], action[2]))
            if len(pending) > delay:
                out.append(pending.pop(0))
    return out + pending


def _interleaved_order(kind: str, stages: int, microbatches: int, chunks: int) -> list[Action]:
    """Megatron's order of (chunk, micro-batch) for forwards (or backwards, chunks reversed)."""
    out = []
    for k in range(microbatches * chunks):
        group, pos = divmod(k, stages * chunks)
        chunk = (k // stages) % chunks
        if kind == "B":
            chunk = chunks - 1 - chunk
        out.append((kind, chunk, group * stages + pos % stages))
    return out


class _DualPipeStage:
    """One stage's DualPipe order as it is built: per chunk the next forward and backward
    micro-batch, the weight gradients deferred (oldest first), and which positions are a
    forward and a backward run as one overlapped pair."""

    def __init__(self, stage: int, stages: int, microbatches: int):
        half = microbatches // 2
        self.near = 0 if stage < stages // 2 else 1   # the direction entering on this side
        self.far = 1 - self.near
        self.next_f = {0: 0, 1: half}   # chunk 1 runs micro-batches half .. m - 1
        self.next_b = dict(self.next_f)
        self.pending: list[Action] = []
        self.order: list[Action] = []
        self.paired: list[int] = []

    def forward(self, chunk: int) -> None:
        self.order.append(("F", chunk, self.next_f[chunk]))
        self.next_f[chunk] += 1

    def backward(self, chunk: int, defer: bool = False) -> None:
        """B, and its W now or (``defer``) when :meth:`weight` runs it."""
        mb = self.next_b[chunk]
        self.next_b[chunk] += 1
        self.order.append(("B", chunk, mb))
        (self.pending.append if defer else self.order.append)(("W", chunk, mb))

    def weight(self) -> None:
        if self.pending:
            self.order.append(self.pending.pop(0))

    def pair(self, forward: int, backward: int) -> None:
        start = len(self.order)
        self.forward(forward)
        self.backward(backward)
        self.paired += [start, start + 1]


def _dualpipe_stage(stage: int, stages: int, microbatches: int) -> _DualPipeStage:
    """The eight phases of DualPipe on ``stage`` (DeepSeek-V3 report, Fig. 5; the order of
    deepseek-ai/DualPipe's schedule, restated): ``k`` is the stage's distance from the
    nearer end, ``n = p / 2``, ``half = m / 2``; ``near`` is the direction entering on its
    side."""
    n, half = stages // 2, microbatches // 2
    k = min(stage, stages - 1 - stage)
    st = _DualPipeStage(stage, stages, microbatches)
    near, far = st.near, st.far
    for _ in range(2 * (n - k - 1)):                 # 1: forwards of the near direction
        st.forward(near)
    for _ in range(k + 1):                           # 2: both directions' forwards
        st.forward(near)
        st.forward(far)
    for _ in range(n - k - 1):                       # 3: B W F of the far direction
        st.backward(far)
        st.forward(far)
    for _ in range(half - 2 * n + k + 1):            # 4: steady state, F and B paired
        st.pair(near, far)
        st.pair(far, near)
    for _ in range(n - k - 1):                       # 5: B of far, then F far with B near
        st.backward(far)
        st.pair(far, near)
    for i in range(2 * (k + 1)):                     # 6: backwards; the last k + 1 defer W
        st.backward(far if i % 2 == 0 else near, defer=i >= k + 1)
    for _ in range(n - k - 1):                       # 7: a deferred W, then B near
        st.weight()
        st.backward(near, defer=True)
    while st.pending:                                # 8: the remaining W
        st.weight()
    return st


def _zb_v_ready(kind: str, j: int, mb: int, t: int, done: dict, last: int) -> bool:
    """Whether ``kind`` of virtual stage ``j`` (model order) for ``mb`` can start at ``t``:
    a forward after the previous chunk's, a backward after the next chunk's (the last
    chunk's after its own forward)."""
    if kind == "F":
        return j == 0 or done.get(("F", j - 1, mb), t + 1) <= t
    before = ("F", j, mb) if j == last else ("B", j + 1, mb)
    return done.get(before, t + 1) <= t


def _zb_v_pick(s: int, stages: int, t: int, state, done: dict, microbatches: int):
    """The action stage ``s`` starts at ``t``: a ready B (the earlier micro-batch, then the
    later chunk), else a ready F while it holds fewer than ``2p`` chunk-micro-batches (1F1B's
    ``p`` whole ones), else its oldest deferred W; None to wait."""
    next_f, next_b, pending, held = state
    last = 2 * stages - 1
    chunks = ((1, last - s), (0, s))
    ready_b = [(next_b[c], -c, c, j) for c, j in chunks if next_b[c] < microbatches
               and _zb_v_ready("B", j, next_b[c], t, done, last)]
    if ready_b:
        mb, _, c, j = min(ready_b)
        return "B", c, j, mb
    if held < 2 * stages:
        for c, j in chunks:
            if next_f[c] < microbatches and _zb_v_ready("F", j, next_f[c], t, done, last):
                return "F", c, j, next_f[c]
    if pending:
        return pending[0]
    return None


@lru_cache(maxsize=64)
def _zb_v_orders(stages: int, microbatches: int) -> tuple[tuple[Action, ...], ...]:
    """ZB-V's per-stage orders: the greedy list schedule of Qi et al. (2405.15362, Sec. 3)
    over unit-time F, B and W (their design point, ``T_F = T_B = T_W``), stage by stage
    at each tick (:func:`_zb_v_pick`)."""
    states = [([0, 0], [0, 0], [], 0) for _ in range(stages)]
    orders: list[list[Action]] = [[] for _ in range(stages)]
    done: dict = {}
    t, total = 0, 6 * microbatches
    while any(len(o) < total for o in orders):
        if t > 12 * microbatches * stages:   # a bug, never a plan: the greedy always ends
            raise RuntimeError(f"zb-v schedule for p={stages}, m={microbatches} stalled")
        for s in range(stages):
            next_f, next_b, pending, held = states[s]
            picked = _zb_v_pick(s, stages, t, states[s], done, microbatches)
            if picked is None:
                continue
            kind, c, j, mb = picked
            if kind == "F":
                next_f[c] += 1
                held += 1
            elif kind == "B":
                next_b[c] += 1
                pending.append(("W", c, j, mb))
            else:
                pending.pop(0)
                held -= 1
            states[s] = (next_f, next_b, pending, held)
            done[(kind, j, mb)] = t + 1
            orders[s].append((kind, c, mb))
        t += 1
    return tuple(tuple(o) for o in orders)


@lru_cache(maxsize=256)
def paired_actions(name: str, stages: int, microbatches: int, chunks: int = 1
                   ) -> tuple[frozenset[int], ...]:
    """Per stage, the positions in its order of the forwards and backwards DualPipe runs as
    overlapped pairs (none for the other schedules).

    >>> paired_actions("dualpipe", 2, 4, 2)[0]
    frozenset({2, 3, 5, 6})
    """
    if name != "dualpipe":
        return (frozenset(),) * stages
    return tuple(frozenset(_dualpipe_stage(s, stages, microbatches).paired)
                 for s in range(stages))


@lru_cache(maxsize=256)
def schedule(name: str, stages: int, microbatches: int, chunks: int = 1
             ) -> tuple[tuple[Action, ...], ...]:
    """Per stage, the ordered actions of one training step: the warm-up forwards, then
    alternating forward and backward, then the remaining backwards (cached; tuples)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown pipeline schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    if name == "dualpipe":
        if chunks != 2 or stages % 2 or microbatches % 2 or microbatches < 2 * stages:
            raise ValueError(f"dualpipe runs 2 chunks on an even number of stages and an even "
                             f"number of micro-batches >= 2 x stages; got chunks={chunks}, "
                             f"stages={stages}, micro-batches={microbatches}")
        return tuple(tuple(_dualpipe_stage(s, stages, microbatches).order)
                     for s in range(stages))
    if name == "zb-v":
        if chunks != 2 or stages < 2:
            raise ValueError(f"zb-v runs 2 chunks on >= 2 stages; got chunks={chunks}, "
                             f"stages={stages}")
        return _zb_v_orders(stages, microbatches)
    if name != "1f1b-interleaved" and chunks != 1:
        raise ValueError(f"schedule {name!r} runs one model chunk per stage, got {chunks}")
    if name == "1f1b-interleaved":
        forwards = _interleaved_order("F", stages, microbatches, chunks)
        backwards = _interleaved_order("B", stages, microbatches, chunks)
    else:
        forwards = [("F", 0, m) for m in range(microbatches)]
        backwards = [("B", 0, m) for m in range(microbatches)]
    out = []
    for s in range(stages):
        warmup = warmup_forwards(name, s, stages, microbatches, chunks)
        order = forwards[:warmup]
        for f, b in zip(forwards[warmup:], backwards):
            order += [f, b]
        order += backwards[len(forwards) - warmup:]
        if splits_backward(name):
            order = _with_weight_gradients(order, deferred_weight_gradients(name, s, stages))
        out.append(tuple(order))
    return tuple(out)


def previous_virtual_stage(stage: int, chunk: int, stages: int, name: str = ""
                           ) -> tuple[int, int] | None:
    """Where a forward's input comes from: ``(stage, chunk)``, or None for the first.

    >>> previous_virtual_stage(0, 1, 4), previous_virtual_stage(0, 0, 4)
    ((3, 0), None)
    >>> previous_virtual_stage(0, 1, 4, "dualpipe"), previous_virtual_stage(3, 1, 4, "dualpipe")
    ((1, 1), None)
    """
    if name == "dualpipe" and chunk == 1:   # the second direction flows down the stages
        return (stage + 1, 1) if stage < stages - 1 else None
    if name == "zb-v":   # down the stages in chunk 0, back up in chunk 1 (the turn stays)
        if chunk == 1:
            return (stage + 1, 1) if stage < stages - 1 else (stage, 0)
        return (stage - 1, 0) if stage > 0 else None
    if stage > 0:
        return stage - 1, chunk
    if chunk > 0:
        return stages - 1, chunk - 1
    return None


def next_virtual_stage(stage: int, chunk: int, stages: int, chunks: int, name: str = ""
                       ) -> tuple[int, int] | None:
    """Where a forward's output goes: ``(stage, chunk)``, or None after the last.

    >>> next_virtual_stage(3, 0, 4, 2), next_virtual_stage(3, 1, 4, 2)
    ((0, 1), None)
    >>> next_virtual_stage(3, 0, 4, 2, "dualpipe"), next_virtual_stage(3, 1, 4, 2, "dualpipe")
    (None, (2, 1))
    """
    if name == "dualpipe":
        step = 1 if chunk == 0 else -1
        return (stage + step, chunk) if 0 <= stage + step < stages else None
    if name == "zb-v":
        if chunk == 0:
            return (stage + 1, 0) if stage < stages - 1 else (stage, 1)
        return (stage - 1, 1) if stage > 0 else None
    if stage < stages - 1:
        return stage + 1, chunk
    if chunk < chunks - 1:
        return 0, chunk + 1
    return None


@lru_cache(maxsize=1024)
def held_microbatches(name: str, stage: int, stages: int, microbatches: int,
                      chunks: int = 1) -> tuple[int, ...]:
    """Per chunk, the most micro-batches whose forward ``stage`` has run and whose backward
    it has not (its weight gradient, where the schedule splits the backward: a ``W`` still
    needs the layer inputs), the activations of that chunk it holds at once, read off the
    schedule.

    >>> held_microbatches("1f1b", 0, 4, 8), held_microbatches("gpipe", 3, 4, 8)
    ((4,), (8,))
    """
    held, most = [0] * chunks, [0] * chunks
    frees = "W" if splits_backward(name) else "B"
    for kind, chunk, _ in schedule(name, stages, microbatches, chunks)[stage]:
        held[chunk] += 1 if kind == "F" else -1 if kind == frees else 0
        most[chunk] = max(most[chunk], held[chunk])
    return tuple(most)


@lru_cache(maxsize=1024)
def in_flight_microbatches(name: str, stage: int, stages: int, microbatches: int,
                           chunks: int = 1) -> float:
    """Most micro-batches whose activations a stage holds at once, in units of a whole
    stage's activations (a chunk holds ``1 / chunks`` of them), read off the schedule:
    for 1F1B one more than the warm-up forwards (at most all of them). For the first stage
    of the interleaved schedule this is Korthikanti et al.'s ``p (1 + (p - 1) / (p v))``.

    >>> in_flight_microbatches("1f1b", 0, 4, 8), in_flight_microbatches("1f1b-interleaved",
    ...                                                                 0, 4, 8, 2)
    (4.0, 5.5)
    """
    held, most = 0, 0
    frees = "W" if splits_backward(name) else "B"
    for kind, _, _ in schedule(name, stages, microbatches, chunks)[stage]:
        held += 1 if kind == "F" else -1 if kind == frees else 0
        most = max(most, held)
    return most / chunks
