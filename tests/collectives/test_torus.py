"""Torus collectives over every dimension at once, against first principles: a chip of a
3-D torus has 6 ICI links (2 per dimension); one dimension's bidirectional ring uses 2 of
them, so an all-reduce that keeps all dimensions busy has up to 3x the bus bandwidth, and
can never beat the chip's 6 links at their raw rate.
"""

from __future__ import annotations

import pytest

from clustersim.collectives import collective_time_s
from clustersim.collectives.group_structure import group_info
from clustersim.hardware.catalog import get_link
from clustersim.network import build_cluster

GiB = 2.0**30


def busbw(cluster, group, algorithm="auto"):
    p = len(group)
    return 2 * (p - 1) / p * GiB / collective_time_s(cluster, group, "all_reduce", GiB,
                                                     algorithm)


@pytest.mark.parametrize("chips", [64, 512])
def test_full_torus_all_reduce_uses_every_dimension(chips):
    c = build_cluster("tpu-v4-pod", chips)
    torus = group_info(c, c.devices).torus
    line = [m for m in c.devices if torus.coords[m][1] == 0 and torus.coords[m][2] == 0]
    one_dim = busbw(c, line)
    full = busbw(c, c.devices)
    assert full >= 2.5 * one_dim
    # never above 3 dimensions x 2 directions x the raw ICI link rate
    assert full <= 6 * get_link("ici-v4").bw_Bps


def test_one_dimension_ring_is_two_links():
    # a bidirectional ring all-reduce moves 2(p-1)/p S over 2 links per chip
    c = build_cluster("tpu-v4-pod", 64)
    torus = group_info(c, c.devices).torus
    line = [m for m in c.devices if torus.coords[m][1] == 0 and torus.coords[m][2] == 0]
    assert busbw(c, line) <= 2 * get_link("ici-v4").bw_Bps
    assert busbw(c, line) >= 0.8 * 2 * get_link("ici-v4").bw_Bps
