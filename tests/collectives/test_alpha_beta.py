"""Algorithms priced on the real graph equal the textbook alpha-beta(-gamma) formulas computed
here, on a uniform switch (one 8-GPU NVSwitch node) with efficiency 1, a known per-hop alpha
and a known launch latency paid once per collective."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clustersim.collectives import collective_time_s, default_calibration
from clustersim.collectives.kernels import ALGO_CODES, OP_CODES, alpha_beta_kernel
from clustersim.network import build_cluster

ALPHA = 2e-6
LAUNCH = 5e-6


@pytest.fixture(scope="module")
def setup():
    c = build_cluster("dgx-h100", 8)
    cal = default_calibration().with_tech("nvlink4", efficiency=1.0, hop_simple_s=ALPHA,
                                          hop_ll_s=ALPHA / 2, ll_efficiency=0.5,
                                          host_launch_s=0.0)
    cal = cal.with_launch(simple=LAUNCH, ll=LAUNCH, ll128=LAUNCH)
    _, _, route_latency = c.route(c.devices[0], c.devices[1])
    B = 18 * 25e9  # 18 NVLink4 links per GPU, one direction
    gamma = 3 / (c.memory_bw_Bps(c.devices[0]) * cal.memory_efficiency)
    return c, cal, ALPHA + route_latency, 1 / B, gamma


S = 2.0**28


def textbook(op, algo, p, a, b, g):
    f = (p - 1) / p
    lg = math.log2(p)
    return {
        ("all_reduce", "ring"): 2 * (p - 1) * a + 2 * f * S * b,
        ("reduce_scatter", "ring"): (p - 1) * a + f * S * max(b, g),
        ("all_gather", "ring"): (p - 1) * a + f * S * b,
        ("broadcast", "ring"): (p - 1) * a + S * b,
        ("all_reduce", "rhd"): 2 * lg * a + 2 * f * S * b,
        ("all_gather", "rhd"): lg * a + f * S * b,
        ("all_reduce", "tree"): 2 * lg * a + 2 * S * b,
        ("all_reduce", "direct"): a + (p - 1) * S * b,
        ("all_to_all", "direct"): a + f * S * b,
        ("send_recv", "direct"): a + S * b,
    }[(op, algo)]


CASES = [("all_reduce", "ring"), ("reduce_scatter", "ring"), ("all_gather", "ring"),
         ("broadcast", "ring"), ("all_reduce", "rhd"), ("all_gather", "rhd"),
         ("all_reduce", "tree"), ("all_reduce", "direct"), ("all_to_all", "direct"),
         ("send_recv", "direct")]


@pytest.mark.parametrize("op,algo", CASES)
@pytest.mark.parametrize("p", [4, 8])
def test_model_equals_textbook(setup, op, algo, p):
    c, cal, a, b, g = setup
    t = collective_time_s(c, c.devices[:p], op, S, f"{algo}/simple", calibration=cal)
    assert t == pytest.approx(LAUNCH + textbook(op, algo, p, a, b, g), rel=1e-9)


@pytest.mark.parametrize("op,algo", CASES)
def test_closed_form_kernel_equals_textbook(setup, op, algo):
    _, _, a, b, g = setup
    t = alpha_beta_kernel(np.array([OP_CODES[op]]), np.array([ALGO_CODES[algo]]),
                          np.array([8]), np.array([S]), np.array([a]), np.array([b]),
                          np.array([g]))
    assert t[0] == pytest.approx(textbook(op, algo, 8, a, b, g), rel=1e-12)


def test_rhd_folds_non_power_of_two(setup):
    # p = 6: fold 2 extra ranks (S each way, reduce on the way in), then rhd on 4.
    c, cal, a, b, g = setup
    expected = LAUNCH + 2 * 2 * a + 2 * 3 / 4 * S * b + 2 * a + 2 * S * b
    t = collective_time_s(c, c.devices[:6], "all_reduce", S, "rhd/simple", calibration=cal)
    assert t == pytest.approx(expected, rel=1e-9)


def test_ll_protocol_trades_latency_for_bandwidth(setup):
    c, cal, a, b, g = setup
    route = a - ALPHA
    t = collective_time_s(c, c.devices, "all_gather", S, "ring/ll", calibration=cal)
    assert t == pytest.approx(LAUNCH + 7 * (ALPHA / 2 + route) + 7 / 8 * S * b / 0.5,
                              rel=1e-9)
