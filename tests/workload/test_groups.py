"""The collective groups both fidelities share: partitions of the mesh and the blocks of
hybrid sharding (that every call runs on one of them: tests/fidelity)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.workload.groups import (BLOCKS, MESH_AXES_OF, axis_of, block_size,
                                        collective_families, hybrid_sharded, sharded_block)
from clustersim.workload.mesh import Mesh, blocks, mesh_for_plan
from clustersim.workload.plan import ParallelPlan
from clustersim.workload.chunks import Comm

AXES = ("tp", "cp", "ep", "dp", "pp")


@st.composite
def meshes(draw):
    sizes = {a: draw(st.integers(1, 3)) for a in AXES}
    return Mesh(sizes, draw(st.permutations(AXES)))


@settings(max_examples=60, deadline=None)
@given(meshes(), st.sampled_from(sorted(MESH_AXES_OF)))
def test_families_partition_the_ranks_as_the_mesh_groups_them(mesh, axis):
    found = collective_families(mesh, axis)
    assert found == mesh.groups(MESH_AXES_OF[axis])
    assert sorted(r for g in found for r in g) == list(range(mesh.size))
    for g in found:   # members differ only along the axis' mesh axes
        others = [a for a in mesh.order if a not in MESH_AXES_OF[axis]]
        assert len({tuple(mesh.coords(r)[a] for a in others) for r in g}) == 1


@settings(max_examples=40, deadline=None)
@given(meshes(), st.sampled_from(["dp", "edp"]), st.integers(1, 6))
def test_blocks_tile_each_group_and_across_takes_one_member_of_each_block(mesh, axis, size):
    groups = collective_families(mesh, axis)
    if len(groups[0]) % size:
        with pytest.raises(ValueError, match="does not split into blocks"):
            collective_families(mesh, axis, "inner", size)
        return
    inner = collective_families(mesh, axis, "inner", size)
    across = collective_families(mesh, axis, "across", size)
    assert inner == [b for g in groups for b in blocks(g, size)[0]]
    assert sorted(r for g in inner for r in g) == sorted(r for g in across for r in g)
    assert all(len(b) == size for b in inner)
    assert all(len(g) == len(groups[0]) // size for g in across)


def test_tied_pairs_each_first_stage_rank_with_its_last_stage_peer():
    mesh = Mesh({"tp": 2, "cp": 1, "ep": 1, "dp": 2, "pp": 3}, ("dp", "pp", "tp", "cp", "ep"))
    for first, last in collective_families(mesh, "tied"):
        a, b = mesh.coords(first), mesh.coords(last)
        assert (a["pp"], b["pp"]) == (0, 2)
        assert {k: v for k, v in a.items() if k != "pp"} == {k: v for k, v in b.items()
                                                             if k != "pp"}


def test_bad_axis_and_block_are_named():
    mesh = Mesh({"tp": 2, "cp": 1, "ep": 1, "dp": 2, "pp": 1})
    with pytest.raises(ValueError, match="unknown collective axis 'xp'"):
        collective_families(mesh, "xp")
    with pytest.raises(ValueError, match="unknown block 'outer'.*all, inner, across"):
        collective_families(mesh, "dp", "outer", 2)
    assert BLOCKS == ("all", "inner", "across")


def test_axis_of_and_hybrid_sharding():
    assert axis_of(Comm("expert_grad_reduce_scatter", "reduce_scatter", "dp", 1.0)) == "edp"
    assert axis_of(Comm("tied_embedding", "all_reduce", "pp", 1.0)) == "tied"
    plan = ParallelPlan(tp=2, dp=8, cp=2, ep=2, zero=3, shard_group=2)
    assert hybrid_sharded(plan) and sharded_block(plan) == "inner"
    # a block is shard_group data-parallel ranks with the cp ranks beside them
    assert block_size(plan, "dp") == 4 and block_size(plan, "edp") == 4
    assert not hybrid_sharded(ParallelPlan(dp=8, zero=0, shard_group=2))
    assert sharded_block(ParallelPlan(dp=8, zero=1)) == "all"


def test_mirror_pairs_each_rank_with_its_peer_on_the_mirrored_stage():
    """DualPipe's copies: rank r of stage s < pp/2 with the rank at the same position of
    stage pp-1-s; every rank in exactly one pair."""
    mesh = Mesh({"tp": 2, "cp": 1, "ep": 1, "dp": 2, "pp": 6})
    stride = mesh.stride["pp"]
    groups = collective_families(mesh, "mirror")
    assert sorted(r for g in groups for r in g) == list(range(24))
    for a, b in groups:
        sa, sb = a // stride, b // stride
        assert sa + sb == 5 and sa < sb and a % stride == b % stride
