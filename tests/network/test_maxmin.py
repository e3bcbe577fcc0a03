"""Max-min fair sharing checked against its definition, and the kernel against its twin."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.network.maxmin import max_min_rates, max_min_rates_py


@st.composite
def flow_sets(draw):
    m = draw(st.integers(1, 6))
    n = draw(st.integers(1, 8))
    capacity = np.array(draw(st.lists(st.floats(1.0, 100.0), min_size=m, max_size=m)))
    ptr, links, weights = [0], [], []
    for _ in range(n):
        route = draw(st.lists(st.integers(0, m - 1), min_size=0, max_size=m, unique=True))
        for l in route:
            links.append(l)
            weights.append(draw(st.sampled_from([1.0, 0.5, 0.25])))
        ptr.append(len(links))
    return (np.array(ptr), np.array(links, dtype=np.int64), np.array(weights, dtype=float),
            capacity)


def test_two_flows_through_one_bottleneck_each_get_half():
    rates = max_min_rates(np.array([0, 2, 3]), np.array([0, 1, 1]), np.ones(3),
                          np.array([100.0, 10.0]))
    assert rates.tolist() == [5.0, 5.0]


def test_a_flow_left_alone_takes_its_slowest_link():
    rates = max_min_rates(np.array([0, 3]), np.array([0, 1, 2]), np.ones(3),
                          np.array([40.0, 7.0, 90.0]))
    assert rates.tolist() == [7.0]


@settings(max_examples=200, deadline=None)
@given(flow_sets())
def test_kernel_equals_python_twin(case):
    ptr, links, weights, capacity = case
    fast = max_min_rates(ptr, links, weights, capacity)
    slow = np.array(max_min_rates_py(ptr.tolist(), links.tolist(), weights.tolist(),
                                     capacity.tolist()))
    assert np.allclose(fast, slow, rtol=1e-9)


@settings(max_examples=200, deadline=None)
@given(flow_sets())
def test_rates_are_feasible_and_max_min_fair(case):
    """Feasible: no link carries more than its capacity. Fair: every flow crosses a
    saturated link on which no other flow has a higher rate (its bottleneck)."""
    ptr, links, weights, capacity = case
    rates = max_min_rates(ptr, links, weights, capacity)
    load = np.zeros_like(capacity)
    for f in range(len(ptr) - 1):
        for k in range(ptr[f], ptr[f + 1]):
            load[links[k]] += weights[k] * rates[f]
    assert np.all(load <= capacity * (1 + 1e-9))
    for f in range(len(ptr) - 1):
        route = range(ptr[f], ptr[f + 1])
        if not len(route):
            assert rates[f] == np.inf
            continue
        # a flow never exceeds what its slowest link could give it alone
        assert rates[f] <= min(capacity[links[k]] / weights[k] for k in route) * (1 + 1e-9)
        bottlenecked = False
        for k in route:
            l = links[k]
            saturated = load[l] >= capacity[l] * (1 - 1e-7)
            others = [rates[g] for g in range(len(ptr) - 1) if g != f
                      and l in links[ptr[g]:ptr[g + 1]]]
            if saturated and all(rates[f] >= r * (1 - 1e-7) for r in others):
                bottlenecked = True
        assert bottlenecked


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        max_min_rates(np.array([0, 1]), np.array([3]), np.ones(1), np.ones(2))
    with pytest.raises(ValueError):
        max_min_rates(np.array([0, 1]), np.array([0]), np.ones(1), np.zeros(1))
