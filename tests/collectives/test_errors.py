"""Bad requests raise InputError with a reason and the valid choices."""

from __future__ import annotations

import pytest

from clustersim.collectives import collective_time_s, expand
from clustersim.errors import InputError
from clustersim.network import build_cluster


@pytest.fixture(scope="module")
def a100():
    return build_cluster("dgx-a100", 8)


def test_unknown_op(a100):
    with pytest.raises(InputError, match="did you mean 'all_reduce'"):
        expand(a100, a100.devices, "allreduce", 1e6, "ring")


def test_nvls_without_a_reducing_switch_names_valid_ones(a100):
    with pytest.raises(InputError, match="nvls.*valid for all_reduce.*ring"):
        collective_time_s(a100, a100.devices, "all_reduce", 1e6, "nvls")


def test_rhd_refuses_non_power_of_two_reduce_scatter(a100):
    with pytest.raises(InputError, match="power-of-two"):
        expand(a100, a100.devices[:6], "reduce_scatter", 1e6, "rhd")


def test_multidim_needs_a_torus(a100):
    with pytest.raises(InputError, match="sub-grid of one torus"):
        expand(a100, a100.devices, "all_reduce", 1e6, "multidim")


def test_unknown_algorithm_and_protocol(a100):
    with pytest.raises(InputError, match="unknown collective algorithm"):
        expand(a100, a100.devices, "all_reduce", 1e6, "rings")
    with pytest.raises(InputError, match="unknown protocol"):
        expand(a100, a100.devices, "all_reduce", 1e6, "ring/ll64")


def test_foreign_or_repeated_members(a100):
    with pytest.raises(InputError, match="not a device"):
        expand(a100, ["n9/g0"], "all_reduce", 1e6, "ring")
    with pytest.raises(InputError, match="twice"):
        expand(a100, [a100.devices[0]] * 2, "all_reduce", 1e6, "ring")


def test_bad_all_to_all_matrix(a100):
    import numpy as np
    with pytest.raises(InputError, match="8 x 8"):
        expand(a100, a100.devices, "all_to_all", 1e6, "direct", matrix=np.ones((3, 3)))
