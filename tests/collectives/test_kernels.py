"""The numba kernels equal their plain-Python twins on random inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.collectives.kernels import (alpha_beta_kernel, alpha_beta_kernel_py,
                                            price_points_kernel, price_points_kernel_py)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), profiles=st.integers(1, 6), points=st.integers(1, 40))
def test_price_kernel_equals_twin(seed, profiles, points):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5, profiles)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(ptr[-1])
    args = (ptr, rng.integers(0, 30, n).astype(np.int64), rng.uniform(0, 1e-5, n),
            rng.uniform(0, 3, n), rng.uniform(1e9, 1e12, n), rng.uniform(0, 3, n),
            rng.uniform(1e11, 1e13, n), rng.integers(0, profiles, points).astype(np.int64),
            rng.uniform(0, 1e10, points))
    assert np.allclose(price_points_kernel(*args), price_points_kernel_py(*args),
                       rtol=1e-12, atol=0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), points=st.integers(1, 50))
def test_alpha_beta_kernel_equals_twin(seed, points):
    rng = np.random.default_rng(seed)
    args = (rng.integers(0, 7, points).astype(np.int64),
            rng.integers(0, 4, points).astype(np.int64),
            rng.integers(1, 300, points).astype(np.int64), rng.uniform(0, 1e10, points),
            rng.uniform(0, 1e-4, points), rng.uniform(1e-13, 1e-9, points),
            rng.uniform(0, 1e-9, points))
    fast, slow = alpha_beta_kernel(*args), np.array(alpha_beta_kernel_py(*args))
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    ok = ~np.isnan(fast)
    assert np.allclose(fast[ok], slow[ok], rtol=1e-12, atol=0)
