"""Pipeline schedules: every micro-batch through every chunk once, in an order a pipeline can
run, with the published warm-up counts and the activations they keep in flight."""

from __future__ import annotations

import itertools

import pytest

from clustersim.config.experiment import TrainingConfig
from clustersim.step.schedules import (SCHEDULES, held_microbatches, in_flight_microbatches,
                                       model_stage, next_virtual_stage, paired_actions,
                                       previous_virtual_stage, schedule, splits_backward,
                                       warmup_forwards)
from clustersim.workload import Infeasible, get_model, resolve_plan
from clustersim.workload.plan import SCHEDULES as PLAN_SCHEDULES

CHUNKS = {"1f1b-interleaved": 2, "dualpipe": 2, "zb-v": 2}
SHAPES = [(name, p, m, CHUNKS.get(name, 1))
          for name, p, m in itertools.product(SCHEDULES, (1, 2, 4, 8), (1, 4, 8, 16))
          if (name != "1f1b-interleaved" or (p > 1 and m % p == 0))
          and (name != "dualpipe" or (p % 2 == 0 and m >= 2 * p))
          and (name != "zb-v" or p > 1)]


def _microbatches(name, chunk, m):
    """DualPipe sends the first half of the micro-batches one way (chunk 0), the rest the
    other; every other schedule runs each micro-batch through every chunk."""
    if name == "dualpipe":
        return range(0, m // 2) if chunk == 0 else range(m // 2, m)
    return range(m)


def test_every_schedule_a_plan_may_name_has_an_order():
    assert SCHEDULES == PLAN_SCHEDULES


@pytest.mark.parametrize("name,p,m,v", SHAPES)
def test_each_microbatch_runs_forward_then_backward_once_per_chunk(name, p, m, v):
    kinds = "FBW" if splits_backward(name) else "FB"
    for stage, actions in enumerate(schedule(name, p, m, v)):
        assert sorted(actions) == sorted((k, c, mb) for k in kinds for c in range(v)
                                         for mb in _microbatches(name, c, m))
        seen = set()
        for kind, c, mb in actions:
            if kind == "B":
                assert ("F", c, mb) in seen   # a backward needs its forward's activations
            if kind == "W":
                assert ("B", c, mb) in seen   # the weight gradient needs the output gradient
            seen.add((kind, c, mb))


def _replay(name, p, m, v):
    """Run the schedule on a pipeline: every action waits for its stage and for its input
    from the neighbouring virtual stage; unit-time F, B and W of a whole stage (a chunk takes
    1 / v). The step's length; an AssertionError names the positions where it deadlocks."""
    acts, end, pos, free = schedule(name, p, m, v), {}, [0] * p, [0.0] * p
    while any(pos[s] < len(acts[s]) for s in range(p)):
        moved = False
        for s in range(p):
            while pos[s] < len(acts[s]):
                kind, c, mb = acts[s][pos[s]]
                src = (previous_virtual_stage(s, c, p, name) if kind == "F"
                       else next_virtual_stage(s, c, p, v, name) if kind == "B" else None)
                if src is not None and (kind, *src, mb) not in end:
                    break
                start = max(free[s], end[(kind, *src, mb)] if src is not None else 0.0)
                free[s] = end[(kind, s, c, mb)] = start + 1 / v
                pos[s] += 1
                moved = True
        assert moved, f"{name} deadlocks at {pos}"
    return max(free)


@pytest.mark.parametrize("name,p,m,v", SHAPES)
def test_the_schedule_runs_on_a_pipeline_without_deadlock(name, p, m, v):
    assert _replay(name, p, m, v) > 0


@pytest.mark.parametrize("name,p,m,v", SHAPES)
def test_the_warmup_forwards_precede_the_first_forward_backward_pair(name, p, m, v):
    for stage, actions in enumerate(schedule(name, p, m, v)):
        first_b = next(i for i, a in enumerate(actions) if a[0] == "B")
        if name == "dualpipe":   # counted up to the first backward: p, p + 1 in the middle
            assert first_b == warmup_forwards(name, stage, p, m, v) == \
                p + (min(stage, p - 1 - stage) == p // 2 - 1)
        elif name == "zb-v":     # read off the greedy order
            assert first_b == warmup_forwards(name, stage, p, m, v)
        else:
            assert first_b == min(warmup_forwards(name, stage, p, m, v) + 1, m * v)


def test_published_warmup_counts():
    # PipeDream-Flush: p - s - 1; Megatron's interleaved: 2 (p - s - 1) + (v - 1) p
    assert [warmup_forwards("1f1b", s, 4, 16) for s in range(4)] == [3, 2, 1, 0]
    assert [warmup_forwards("1f1b-interleaved", s, 4, 16, 2) for s in range(4)] == \
        [10, 8, 6, 4]
    assert warmup_forwards("gpipe", 2, 4, 16) == 16


def test_in_flight_activations():
    # 1F1B: stage s holds p - s micro-batches (Narayanan et al. 2021); GPipe all of them;
    # interleaved first stage: p (1 + (p - 1) / (p v)) of a stage's activations
    # (Korthikanti et al. 2022, Sec. 4.2.3)
    assert [in_flight_microbatches("1f1b", s, 8, 32) for s in range(8)] == [8, 7, 6, 5, 4, 3,
                                                                            2, 1]
    assert in_flight_microbatches("gpipe", 3, 4, 16) == 16
    p, v = 8, 3
    assert in_flight_microbatches("1f1b-interleaved", 0, p, 32, v) == pytest.approx(
        p * (1 + (p - 1) / (p * v)))
    assert held_microbatches("1f1b", 0, 4, 16) == (4,)
    assert held_microbatches("1f1b", 3, 4, 16) == (1,)


@pytest.mark.parametrize("p,m", [(2, 8), (4, 8), (4, 16), (8, 32)])
def test_zero_bubble_in_flight_microbatches(p, m):
    """Qi et al. 2024, Sec. 2.1-2.2: ZB-H1 holds at most 1F1B's peak, p micro-batches, on
    every stage (its W passes start later by what a stage's warm-up is short of the first
    stage's); ZB-H2 holds 2p - 1 on every stage. A micro-batch is held until its W."""
    assert [in_flight_microbatches("zb-h1", s, p, m) for s in range(p)] == [p] * p
    assert [in_flight_microbatches("zb-h2", s, p, m) for s in range(p)] == [2 * p - 1] * p
    assert max(in_flight_microbatches("1f1b", s, p, m) for s in range(p)) == p
    assert held_microbatches("zb-h1", p - 1, p, m) == (p,)


def test_zb_h1_is_1f1b_with_the_backward_split():
    """Dropping the W passes leaves 1F1B's order; each W of stage s comes s backwards late."""
    p, m = 4, 8
    for s, (zb, plain) in enumerate(zip(schedule("zb-h1", p, m), schedule("1f1b", p, m))):
        assert tuple(a for a in zb if a[0] != "W") == plain
        backwards = [a for a in zb if a[0] == "B"]
        for mb in range(m - s):
            w = zb.index(("W", 0, mb))
            assert zb[:w].count(("B", 0, mb)) == 1
            assert sum(1 for a in zb[:w] if a[0] == "B") == min(mb + 1 + s, len(backwards))


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 20), (8, 16), (8, 20), (16, 40)])
def test_dualpipe_in_flight_and_parameters(p, m):
    """DeepSeek-V3 report, Table 2: DualPipe keeps PP + 1 micro-batches of activations (in
    units of one model stage's) on every device, and each device holds two model stages:
    s for the micro-batches entering at stage 0 and p - 1 - s for the others."""
    for s in range(p):
        # in_flight_microbatches counts whole stages, here two model stages
        assert 2 * in_flight_microbatches("dualpipe", s, p, m, 2) == p + 1
        assert sum(held_microbatches("dualpipe", s, p, m, 2)) == p + 1
    assert [model_stage("dualpipe", s, c, p) for s in (0, p - 1) for c in (0, 1)] == \
        [0, p - 1, p - 1, 0]


def test_dualpipe_pairs_a_forward_with_a_backward_of_the_other_direction():
    p, m = 8, 20
    for s, (order, pairs) in enumerate(zip(schedule("dualpipe", p, m, 2),
                                           paired_actions("dualpipe", p, m, 2))):
        assert pairs and len(pairs) % 2 == 0
        for i in sorted(pairs)[::2]:
            (k1, c1, _), (k2, c2, _) = order[i], order[i + 1]
            assert (k1, k2) == ("F", "B") and c1 != c2


@pytest.mark.parametrize("parallelism,global_batch,says", [
    ({"pp": 3, "schedule": "dualpipe"}, 24, "even pp"),
    ({"pp": 4, "schedule": "dualpipe"}, 6, "at least 2 x pp = 8"),
    ({"pp": 4, "schedule": "dualpipe", "virtual_stages": 3}, 8, "leave virtual_stages out"),
    ({"pp": 4, "schedule": "zb-h1", "virtual_stages": 2}, 8, "1f1b-interleaved"),
])
def test_impossible_schedules_are_refused_with_the_fix(parallelism, global_batch, says):
    t = TrainingConfig(global_batch=global_batch, parallelism=parallelism)
    with pytest.raises(Infeasible, match=says.replace("(", r"\(")):
        resolve_plan(t, get_model("llama3-8b"), parallelism["pp"])


def test_a_dualpipe_plan_holds_two_model_stages_a_device():
    t = TrainingConfig(global_batch=8, parallelism={"pp": 4, "schedule": "dualpipe"})
    plan = resolve_plan(t, get_model("llama3-8b"), 4)
    assert plan.virtual_stages == 2 and plan.stage_layers == (8, 8, 8, 8) * 2
    assert [plan.layers_on_stage(s) for s in range(4)] == [16] * 4


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 20), (8, 16), (8, 20), (16, 40)])
def test_dualpipe_in_flight_and_parameters(p, m):
    """DeepSeek-V3 report, Table 2: DualPipe keeps PP + 1 micro-batches of activations (in
    units of one model stage's) on every device, and each device holds two model stages:
    s for the micro-batches entering at stage 0 and p - 1 - s for the others."""
    for s in range(p):
        # in_flight_microbatches counts whole stages, here two model stages
        assert 2 * in_flight_microbatches("dualpipe", s, p, m, 2) == p + 1
        assert sum(held_microbatches("dualpipe", s, p, m, 2)) == p + 1
    assert [model_stage("dualpipe", s, c, p) for s in (0, p - 1) for c in (0, 1)] == \
        [0, p - 1, p - 1, 0]


def test_dualpipe_pairs_a_forward_with_a_backward_of_the_other_direction():
    p, m = 8, 20
    for s, (order, pairs) in enumerate(zip(schedule("dualpipe", p, m, 2),
                                           paired_actions("dualpipe", p, m, 2))):
        assert pairs and len(pairs) % 2 == 0
        for i in sorted(pairs)[::2]:
            (k1, c1, _), (k2, c2, _) = order[i], order[i + 1]
            assert (k1, k2) == ("F", "B") and c1 != c2


@pytest.mark.parametrize("parallelism,global_batch,says", [
    ({"pp": 3, "schedule": "dualpipe"}, 24, "even pp"),
    ({"pp": 4, "schedule": "dualpipe"}, 6, "at least 2 x pp = 8"),
    ({"pp": 4, "schedule": "dualpipe", "virtual_stages": 3}, 8, "leave virtual_stages out"),
    ({"pp": 4, "schedule": "zb-h1", "virtual_stages": 2}, 8, "1f1b-interleaved"),
])
def test_impossible_schedules_are_refused_with_the_fix(parallelism, global_batch, says):
    t = TrainingConfig(global_batch=global_batch, parallelism=parallelism)
    with pytest.raises(Infeasible, match=says.replace("(", r"\(")):
        resolve_plan(t, get_model("llama3-8b"), parallelism["pp"])


def test_a_dualpipe_plan_holds_two_model_stages_a_device():
    t = TrainingConfig(global_batch=8, parallelism={"pp": 4, "schedule": "dualpipe"})
    plan = resolve_plan(t, get_model("llama3-8b"), 4)
    assert plan.virtual_stages == 2 and plan.stage_layers == (8, 8, 8, 8) * 2
    assert [plan.layers_on_stage(s) for s in range(4)] == [16] * 4


def _replay(name, p, m, v):
    """Replay with unit-time F, B and W of a whole stage (a chunk takes 1 / v), each action
    as soon as its stage is free and its input has arrived: the step's length."""
    acts, end, pos, free = schedule(name, p, m, v), {}, [0] * p, [0.0] * p
    while any(pos[s] < len(acts[s]) for s in range(p)):
        for s in range(p):
            while pos[s] < len(acts[s]):
                kind, c, mb = acts[s][pos[s]]
                src = (previous_virtual_stage(s, c, p, name) if kind == "F"
                       else next_virtual_stage(s, c, p, v, name) if kind == "B" else None)
                if src is not None and (kind, *src, mb) not in end:
                    break
                start = max(free[s], end[(kind, *src, mb)] if src is not None else 0.0)
                free[s] = end[(kind, s, c, mb)] = start + 1 / v
                pos[s] += 1
    return max(free)


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 16), (8, 16), (8, 32)])
def test_zb_v_keeps_1f1b_memory_and_idles_only_for_the_fill(p, m):
    """Qi et al. 2024 (arXiv 2405.15362): ZB-V holds 1F1B's peak activations (p whole
    micro-batches: 2p chunk-micro-batches of half a stage each) on every stage, and with
    T_F = T_B = T_W its only idle time is the fill, (p - 1) chunk forwards = (p - 1) T_F / 2,
    where ZB-H1 idles (p - 1)(T_F + T_B - T_W) = p - 1 and 1F1B (p - 1)(T_F + T_B + T_W)."""
    assert [in_flight_microbatches("zb-v", s, p, m, 2) for s in range(p)] == [p] * p
    assert in_flight_microbatches("1f1b", 0, p, m) == p
    work = 3 * m   # F + B + W of every micro-batch, unit time each
    assert _replay("zb-v", p, m, 2) - work == pytest.approx((p - 1) / 2)
    assert _replay("zb-h1", p, m, 1) - work == pytest.approx(p - 1)
    assert [model_stage("zb-v", s, c, p) for s in (0, p - 1) for c in (0, 1)] == \
        [0, 2 * p - 1, p - 1, p]
