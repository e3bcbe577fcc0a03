"""Pipeline schedules: the order in which each stage runs forward and backward passes.

- ``gpipe`` (Huang et al. 2019): every forward, then every backward.
- ``1f1b`` (PipeDream-Flush, Narayanan et al. 2021): ``p - s - 1`` warm-up forwards on stage
  ``s``, then one forward one backward, then the remaining backwards.
- ``1f1b-interleaved`` (Megatron-LM, Narayanan et al. SC'21): each stage holds ``v`` model
  chunks; micro-batches go through the chunks in groups of ``p``, with ``(p - s - 1) * 2 +
  (v - 1) * p`` warm-up forwards; the bubble shrinks by ``v``.

An action is ``(kind, chunk, microbatch)`` with kind ``"F"`` or ``"B"``. The virtual stage of
chunk ``c`` on stage ``s`` is ``c * p + s``: data flows from virtual stage ``k`` to ``k + 1``.

>>> schedule("1f1b", stages=2, microbatches=3, chunks=1)[0]
[('F', 0, 0), ('F', 0, 1), ('B', 0, 0), ('F', 0, 2), ('B', 0, 1), ('B', 0, 2)]
>>> schedule("1f1b", stages=2, microbatches=3, chunks=1)[1]
[('F', 0, 0), ('B', 0, 0), ('F', 0, 1), ('B', 0, 1), ('F', 0, 2), ('B', 0, 2)]
"""

from __future__ import annotations

__all__ = ["SCHEDULES", "schedule", "previous_virtual_stage", "next_virtual_stage",
           "in_flight_microbatches"]

SCHEDULES = ("gpipe", "1f1b", "1f1b-interleaved")

Action = tuple[str, int, int]


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


def schedule(name: str, stages: int, microbatches: int, chunks: int = 1) -> list[list[Action]]:
    """Per stage, the ordered list of actions of one training step."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown pipeline schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    if name != "1f1b-interleaved" and chunks != 1:
        raise ValueError(f"schedule {name!r} runs one model chunk per stage, got {chunks}")
    out = []
    for s in range(stages):
        if name == "gpipe":
            out.append([("F", 0, m) for m in range(microbatches)]
                       + [("B", 0, m) for m in range(microbatches)])
            continue
        if name == "1f1b":
            forwards = [("F", 0, m) for m in range(microbatches)]
            backwards = [("B", 0, m) for m in range(microbatches)]
            warmup = min(stages - s - 1, microbatches)
        else:
            forwards = _interleaved_order("F", stages, microbatches, chunks)
            backwards = _interleaved_order("B", stages, microbatches, chunks)
            total = microbatches * chunks
            warmup = min((stages - s - 1) * 2 + (chunks - 1) * stages, total)
        order = forwards[:warmup]
        f, b = warmup, 0
        while f < len(forwards):
            order.append(forwards[f])
            order.append(backwards[b])
            f += 1
            b += 1
        order.extend(backwards[b:])
        out.append(order)
    return out


def previous_virtual_stage(stage: int, chunk: int, stages: int) -> tuple[int, int] | None:
    """Where a forward's input comes from: ``(stage, chunk)``, or None for the first."""
    if stage > 0:
        return stage - 1, chunk
    if chunk > 0:
        return stages - 1, chunk - 1
    return None


def next_virtual_stage(stage: int, chunk: int, stages: int, chunks: int
                       ) -> tuple[int, int] | None:
    """Where a forward's output goes: ``(stage, chunk)``, or None after the last."""
    if stage < stages - 1:
        return stage + 1, chunk
    if chunk < chunks - 1:
        return 0, chunk + 1
    return None


def in_flight_microbatches(name: str, stage: int, stages: int, microbatches: int,
                           chunks: int = 1) -> float:
    """Most micro-batches whose activations a stage holds at once, in units of a whole
    stage's activations (a chunk holds ``1 / chunks`` of them), read off the schedule."""
    held, most = 0, 0
    for kind, _, _ in schedule(name, stages, microbatches, chunks)[stage]:
        held += 1 if kind == "F" else -1
        most = max(most, held)
    return most / chunks
