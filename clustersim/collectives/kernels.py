"""Numba kernels that price many collectives at once, each with a plain-Python twin.

:func:`price_points_kernel` evaluates points ``(profile, size)`` over phase profiles stored as
CSR arrays (``ptr[k]:ptr[k+1]`` are profile k's phases): per phase
``steps * alpha + max(coef * size / rate, rcoef * size / rbw)``, summed.

:func:`alpha_beta_kernel` is the textbook alpha-beta-gamma closed form of the ring, tree,
rhd and direct algorithms for every op on a uniform full-duplex switch (per-rank bandwidth
``1/beta``, reduction ``gamma`` s/byte overlapped with transfer per phase as in
:mod:`.cost`). ``nan`` marks an (op, algorithm) pair that does not exist.

>>> import numpy as np
>>> t = alpha_beta_kernel(np.array([0]), np.array([0]), np.array([8]), np.array([8e6]),
...                       np.array([1e-6]), np.array([1e-9]), np.array([0.0]))
>>> round(float(t[0]) * 1e6, 3)   # 14 alpha + 1.75 S beta
14014.0
"""

from __future__ import annotations

import math

import numpy as np

from clustersim._numba import njit

__all__ = ["OP_CODES", "ALGO_CODES", "price_points_kernel", "price_points_kernel_py",
           "alpha_beta_kernel", "alpha_beta_kernel_py"]

OP_CODES = {"all_reduce": 0, "all_gather": 1, "reduce_scatter": 2, "all_to_all": 3,
            "broadcast": 4, "reduce": 5, "send_recv": 6}
ALGO_CODES = {"ring": 0, "tree": 1, "rhd": 2, "direct": 3}


@njit
def price_points_kernel(ptr, steps, alpha, coef, rate, rcoef, rbw, point_profile, point_size):
    n = point_profile.shape[0]
    out = np.empty(n)
    for i in range(n):
        k = point_profile[i]
        s = point_size[i]
        t = 0.0
        for j in range(ptr[k], ptr[k + 1]):
            x = coef[j] * s / rate[j]
            r = rcoef[j] * s / rbw[j]
            t += steps[j] * alpha[j] + (x if x > r else r)
        out[i] = t
    return out


def price_points_kernel_py(ptr, steps, alpha, coef, rate, rcoef, rbw, point_profile,
                           point_size) -> list[float]:
    """Plain-Python twin of :func:`price_points_kernel`."""
    out = []
    for k, s in zip(point_profile, point_size):
        t = 0.0
        for j in range(ptr[k], ptr[k + 1]):
            t += steps[j] * alpha[j] + max(coef[j] * s / rate[j], rcoef[j] * s / rbw[j])
        out.append(t)
    return out


@njit
def _ab_one(op, algo, p, S, a, b, g):
    if p <= 1:
        return 0.0
    f = (p - 1) / p
    bg = b if b > g else g
    pw = 1
    while pw * 2 <= p:
        pw *= 2
    lg = math.log2(pw)
    if algo == 0:  # ring
        if op == 0:
            return 2 * (p - 1) * a + max(2 * f * S * b, f * S * g)
        if op == 1:
            return (p - 1) * a + f * S * b
        if op == 2:
            return (p - 1) * a + f * S * bg
        if op == 4:
            return (p - 1) * a + S * b
        if op == 5:
            return (p - 1) * a + S * bg
        return np.nan
    if algo == 1:  # double binary tree, all_reduce only
        if op != 0:
            return np.nan
        depth = math.ceil(math.log2(p))
        if p == 2:
            return 2 * a + max(S * b, 0.5 * S * g)
        return 2 * depth * a + max(2 * S * b, S * g)
    if algo == 2:  # recursive halving-doubling
        if op == 0:
            m = pw
            fm = (m - 1) / m
            t = 2 * lg * a + fm * S * bg + fm * S * b
            if m != p:
                t += 2 * a + S * bg + S * b
            return t
        if pw != p or op > 2:
            return np.nan
        if op == 1:
            return lg * a + f * S * b
        return lg * a + f * S * bg
    # direct
    if op == 0:
        return a + (p - 1) * S * bg
    if op == 1 or op == 3:
        return a + f * S * b
    if op == 2:
        return a + f * S * bg
    if op == 4:
        return a + (p - 1) * S * b
    if op == 5:
        return a + (p - 1) * S * bg
    return a + S * b


@njit
def alpha_beta_kernel(op, algo, p, size, alpha, beta, gamma):
    n = op.shape[0]
    out = np.empty(n)
    for i in range(n):
        out[i] = _ab_one(op[i], algo[i], p[i], size[i], alpha[i], beta[i], gamma[i])
    return out


def _ab_one_py(op, algo, p, S, a, b, g) -> float:
    if p <= 1:
        return 0.0
    f, bg = (p - 1) / p, max(b, g)
    pw = 1 << (int(p).bit_length() - 1)
    lg = math.log2(pw)
    if algo == 0:
        table = {0: 2 * (p - 1) * a + max(2 * f * S * b, f * S * g),
                 1: (p - 1) * a + f * S * b, 2: (p - 1) * a + f * S * bg,
                 4: (p - 1) * a + S * b, 5: (p - 1) * a + S * bg}
        return table.get(op, math.nan)
    if algo == 1:
        if op != 0:
            return math.nan
        if p == 2:
            return 2 * a + max(S * b, 0.5 * S * g)
        return 2 * math.ceil(math.log2(p)) * a + max(2 * S * b, S * g)
    if algo == 2:
        if op == 0:
            fm = (pw - 1) / pw
            extra = 0.0 if pw == p else 2 * a + S * bg + S * b
            return 2 * lg * a + fm * S * bg + fm * S * b + extra
        if pw != p or op > 2:
            return math.nan
        return lg * a + f * S * (b if op == 1 else bg)
    table = {0: a + (p - 1) * S * bg, 1: a + f * S * b, 3: a + f * S * b, 2: a + f * S * bg,
             4: a + (p - 1) * S * b, 5: a + (p - 1) * S * bg}
    return table.get(op, a + S * b)


def alpha_beta_kernel_py(op, algo, p, size, alpha, beta, gamma) -> list[float]:
    """Plain-Python twin of :func:`alpha_beta_kernel`."""
    return [_ab_one_py(*args) for args in zip(op, algo, p, size, alpha, beta, gamma)]
