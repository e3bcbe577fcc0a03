"""Routes gathered in arrays equal the pair-by-pair routes; symmetry classes of families."""

import random

import numpy as np
import pytest

from clustersim.network import build_cluster
from clustersim.network.symmetry import family_class


def _as_dict(links, weights):
    out = {}
    for link, w in zip(links.tolist(), weights.tolist()):
        out[link] = out.get(link, 0.0) + w
    return out


@pytest.mark.parametrize("preset,devices", [("dgx-h100", 16), ("dgx-h100", 4096),
                                            ("dgx-a100", 256), ("gb200-nvl72", 144),
                                            ("tpu-v4-pod", 64), ("rail-only-h100", 64)])
def test_routes_equal_route_per_pair(preset, devices):
    c = build_cluster(preset, devices)
    rnd = random.Random(7)
    pairs = [(rnd.choice(c.devices), rnd.choice(c.devices)) for _ in range(400)]
    pairs = [(a, b) for a, b in pairs if a != b]
    ptr, links, weights, latency = c.routes([a for a, _ in pairs], [b for _, b in pairs])
    assert ptr[-1] == len(links) == len(weights)
    for k, (a, b) in enumerate(pairs):
        one_links, one_weights, one_latency = c.route(a, b)
        got = _as_dict(links[ptr[k]:ptr[k + 1]], weights[ptr[k]:ptr[k + 1]])
        want = _as_dict(one_links, one_weights)
        assert got.keys() == want.keys()
        assert all(abs(got[x] - want[x]) < 1e-12 for x in want)
        assert latency[k] == pytest.approx(one_latency, rel=1e-12)


def test_routes_with_a_self_pair_fall_back():
    c = build_cluster("dgx-h100", 16)
    ptr, links, _, latency = c.routes([c.devices[0], c.devices[3]], [c.devices[0], c.devices[9]])
    assert ptr[1] == 0 and latency[0] == 0.0 and ptr[2] > 0


def test_family_class_translations_and_breaks():
    c = build_cluster("dgx-h100", 4096)
    d = c.devices
    stage0 = [d[i:1024:8] for i in range(8)]
    stage1 = [d[1024 + i:2048:8] for i in range(8)]
    assert family_class(c, stage0) == family_class(c, stage1)
    # a different rail order is a different class (the rail is kept)
    assert family_class(c, stage0) != family_class(c, stage1[::-1])
    # a group split across two leaves differently is a different class
    shifted = [d[512 + i:1536:8] for i in range(8)]
    assert family_class(c, shifted) != family_class(c, stage0)


def test_no_class_without_a_known_symmetry():
    c = build_cluster("tpu-v4-pod", 64)
    assert family_class(c, [c.devices[:4]]) is None


def test_family_class_is_an_exact_price_key():
    """Families of one class get the same profile as when priced on their own."""
    from clustersim.collectives.cost import _build_profile, profile
    from clustersim.collectives.calibration import default_calibration

    c = build_cluster("dgx-h100", 4096)
    d = c.devices
    stage1 = [list(d[1024 + i:2048:8]) for i in range(8)]
    profile(c, [d[i:1024:8] for i in range(8)], "all_reduce", "ring/simple")
    shared = profile(c, stage1, "all_reduce", "ring/simple")
    own = _build_profile(c, stage1, "all_reduce", "ring/simple", default_calibration())
    for name in ("steps", "alpha_s", "coef", "rate_Bps", "reduce_coef", "reduce_Bps"):
        assert np.allclose(getattr(shared, name), getattr(own, name), rtol=1e-12)


def test_link_classes_are_exact_for_max_min():
    """Flows over the pods' link classes get the rates they get on the links themselves,
    and per-link statistics come back unchanged."""
    from clustersim.network.maxmin import max_min_rates

    c = build_cluster("dgx-h100", 4096)
    table = c.route_table
    assert table.ok and table.class_members
    rnd = np.random.default_rng(3)
    ia = rnd.integers(0, 4096, 3000)
    ib = rnd.integers(0, 4096, 3000)
    cap = c.links.capacity_Bps
    rates = []
    for classes in (False, True):
        ptr, links, weights, latency = c.device_routes(ia, ib, classes)
        capacity = table.class_capacity(cap) if classes else cap
        rates.append(max_min_rates(ptr, links, weights, capacity))
        if classes:
            assert ptr[-1] < physical_entries and latency == pytest.approx(physical_latency)
        else:
            physical_entries, physical_latency = ptr[-1], latency
            load = np.bincount(links, weights=weights * np.repeat(rates[0], np.diff(ptr)),
                               minlength=len(cap))
    assert np.allclose(rates[0], rates[1], rtol=1e-9)
    ptr, links, weights, _ = c.device_routes(ia, ib, True)
    extended = np.bincount(links, weights=weights * np.repeat(rates[1], np.diff(ptr)),
                           minlength=len(table.class_capacity(cap)))
    assert np.allclose(table.physical(extended, spread=True), load, rtol=1e-9, atol=1e-3)
