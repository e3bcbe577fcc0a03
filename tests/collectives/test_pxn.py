"""PXN against its definition: every byte between nodes travels between ranks of the same
local index (one rail), forwarded inside the source node; the bytes between nodes are direct's;
on a rail-optimized tree whose spine is oversubscribed it beats direct sends, on a full one it
ties."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.collectives import expand
from clustersim.collectives.select import candidate_times
from clustersim.errors import InputError
from clustersim.network import build_cluster

S = 1.6e7   # each rank's all_to_all buffer: S / 16 to every rank


def _between_nodes(ph, local=8):
    cross = ph.src // local != ph.dst // local
    return cross, float(ph.bytes[cross].sum())


def test_pxn_keeps_every_byte_between_nodes_on_one_rail():
    c = build_cluster("dgx-h100", 16)
    [pxn] = expand(c, c.devices, "all_to_all", S, "pxn")
    [direct] = expand(c, c.devices, "all_to_all", S, "direct")
    cross, pxn_bytes = _between_nodes(pxn)
    assert np.all(pxn.src[cross] % 8 == pxn.dst[cross] % 8)      # same local index
    assert pxn_bytes == pytest.approx(_between_nodes(direct)[1])  # 2 x 8 x 8 x S / 16
    assert pxn_bytes == pytest.approx(2 * 8 * 8 * S / 16)
    inside = ~cross   # what each rank forwards: 7 of its 8 remote peers are off its rail
    assert pxn.bytes[inside].sum() == pytest.approx(16 * (7 + 7) * S / 16)


def test_pxn_beats_direct_only_where_the_spine_is_the_bottleneck():
    sizes = np.array([1e9])
    times = {}
    for ratio in (1, 4):
        c = build_cluster("dgx-h100", 64, overrides={
            "scale_out.oversubscription": ratio, "scale_out.radix": 8,
            "scale_out.levels": 3, "scale_out.rail_optimized": True})
        names, t = candidate_times(c, c.devices, "all_to_all", sizes)
        times[ratio] = dict(zip(names, t[:, 0]))
    assert times[1]["pxn/simple"] == pytest.approx(times[1]["direct/simple"], rel=0.01)
    assert times[4]["pxn/simple"] < 0.7 * times[4]["direct/simple"]


def test_pxn_needs_a_group_over_nodes():
    c = build_cluster("dgx-h100", 16)
    with pytest.raises(InputError, match="pxn needs a group over several nodes"):
        expand(c, c.devices[:8], "all_to_all", S, "pxn")
    with pytest.raises(InputError, match="all_to_all only"):
        expand(c, c.devices, "all_reduce", S, "pxn")
