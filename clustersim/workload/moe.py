"""Mixture-of-experts blocks as run today (DeepSeek-style and GShard/Mixtral-style): routed
and shared experts, leading dense layers and interleaving, capacity and token dropping,
node-limited routing, and a stated, seeded spread of load over the experts.

>>> MoESpec(experts=8, top_k=2).capacity_factor
1.0
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from clustersim.errors import InputError

__all__ = ["MoESpec", "ImbalanceSpec", "IMBALANCE_DISTRIBUTIONS", "moe_from_dict"]

IMBALANCE_DISTRIBUTIONS = ("none", "zipf", "lognormal")


@dataclass(frozen=True)
class ImbalanceSpec:
    """How unevenly the router spreads tokens over the experts, as a stated distribution.

    ``zipf``: the expert of popularity rank i gets a load proportional to i^-param, the ranks
    dealt to the experts in a random order drawn from ``seed``; ``lognormal``: each expert's
    load is exp(param x z), z standard normal from ``seed``; ``none``: every expert alike.
    Loads are normalised to a mean of 1 and capped at experts/top_k (a token visits an
    expert at most once, so no expert can see more than all the tokens).

    >>> loads = ImbalanceSpec("zipf", 1.0, seed=7).expert_loads(8, 2)
    >>> round(sum(loads) / 8, 6), max(loads) <= 8 / 2
    (1.0, True)
    """

    distribution: str = "none"
    param: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.distribution not in IMBALANCE_DISTRIBUTIONS:
            raise InputError(f"moe.imbalance.distribution must be one of "
                             f"{', '.join(IMBALANCE_DISTRIBUTIONS)}, got {self.distribution!r}")
        if not self.param >= 0 or self.seed < 0:
            raise InputError(f"moe.imbalance needs param >= 0 and seed >= 0, got "
                             f"{self.param}, {self.seed}")

    def expert_loads(self, experts: int, top_k: int) -> tuple[float, ...]:
        """Tokens each expert receives over a perfectly balanced router's (mean 1)."""
        return _expert_loads(self.distribution, float(self.param), self.seed, experts, top_k)


@functools.lru_cache(maxsize=256)
def _expert_loads(distribution: str, param: float, seed: int, experts: int, top_k: int
                  ) -> tuple[float, ...]:
    rng = np.random.default_rng(seed)
    if distribution == "zipf":
        loads = rng.permutation(np.arange(1, experts + 1, dtype=np.float64) ** -param)
    elif distribution == "lognormal":
        loads = np.exp(param * rng.standard_normal(experts))
    else:
        loads = np.ones(experts)
    cap = experts / top_k
    for _ in range(100):   # water-filling: clip at the cap, hand the excess to the others
        loads = loads / loads.mean()
        if loads.max() <= cap * (1 + 1e-12):
            break
        loads = np.minimum(loads, cap)
    return tuple(float(x) for x in loads)


@dataclass(frozen=True)
class MoESpec:
    """Mixture-of-experts MLP: ``experts`` routed experts per layer, each token routed to
    ``top_k``, plus ``shared_experts`` every token visits (DeepSeekMoE, Dai et al. 2024).

    ``expert_ffn_hidden``: width of one expert (0: the model's ffn_hidden; fine-grained
    experts are narrower). The first ``dense_layers`` layers keep a dense MLP of ffn_hidden,
    and after them layer i is MoE when ``i % every == 0`` (DeepSeek's ``first_k_dense_replace``
    and ``moe_layer_freq``, HF modeling_deepseek.py). ``capacity_factor``: without
    ``token_drop`` it scales the expert work over a balanced dropless router (1.0: each
    expert processes exactly its share; 1.25: GShard-style padding); with ``token_drop`` it
    caps the tokens an expert takes (the rest are dropped, Megatron-Core
    ``moe_expert_capacity_factor``). ``max_nodes_per_token``: node-limited routing (DeepSeek-V3
    M=4; 0: unlimited). ``imbalance``: the load spread over the experts (:class:`ImbalanceSpec`).

    >>> MoESpec(experts=8, top_k=2).capacity_factor, MoESpec(experts=8).routed_factor(4)
    (1.0, 1.0)
    """

    experts: int
    top_k: int = 2
    capacity_factor: float = 1.0
    shared_experts: int = 0
    expert_ffn_hidden: int = 0
    dense_layers: int = 0
    every: int = 1
    token_drop: bool = False
    max_nodes_per_token: int = 0
    imbalance: ImbalanceSpec | None = None

    def __post_init__(self):
        if self.experts < 1 or self.top_k < 1 or not self.capacity_factor > 0:
            raise InputError(f"moe needs experts >= 1, top_k >= 1 and capacity_factor > 0, "
                             f"got {self.experts}, {self.top_k}, {self.capacity_factor}")
        if min(self.shared_experts, self.expert_ffn_hidden, self.dense_layers,
               self.max_nodes_per_token) < 0 or self.every < 1:
            raise InputError("moe needs shared_experts, expert_ffn_hidden, dense_layers and "
                             f"max_nodes_per_token >= 0 and every >= 1, got {self}")

    def routed_factor(self, ep: int = 1) -> float:
        """Tokens the busiest expert-parallel rank processes, over its share under a balanced
        dropless router (experts dealt to the ``ep`` ranks in contiguous blocks, as
        Megatron-Core does). The slowest rank sets the pace of the layer.

        >>> zipf = MoESpec(64, 8, imbalance=ImbalanceSpec("zipf", 1.2, seed=0))
        >>> round(zipf.routed_factor(1), 9), zipf.routed_factor(8) > 1.0
        (1.0, True)
        >>> from dataclasses import replace
        >>> replace(zipf, token_drop=True, capacity_factor=1.0).routed_factor(8) <= 1.0
        True
        """
        if self.imbalance is None and not self.token_drop:
            return self.capacity_factor
        loads = np.array(self.expert_loads())
        if self.token_drop:
            loads = np.minimum(loads, self.capacity_factor)
        per_rank = loads[: self.experts // ep * ep].reshape(ep, -1).mean(axis=1)
        busiest = float(per_rank.max())
        return busiest if self.token_drop else busiest * self.capacity_factor

    def expert_loads(self) -> tuple[float, ...]:
        """Each routed expert's tokens over the balanced share (all 1.0 without imbalance)."""
        spec = self.imbalance or ImbalanceSpec()
        return spec.expert_loads(self.experts, self.top_k)

    @property
    def dropped_fraction(self) -> float:
        """Share of the routed tokens dropped at the capacity limit (0 without token_drop).

        >>> MoESpec(8, 2, 1.0, token_drop=True, imbalance=ImbalanceSpec("none")).dropped_fraction
        0.0
        """
        if not self.token_drop:
            return 0.0
        return float(1.0 - np.minimum(self.expert_loads(), self.capacity_factor).mean())


def moe_from_dict(entry: dict[str, Any]) -> MoESpec:
    """An MoESpec from its YAML mapping (``imbalance`` a nested mapping).

    >>> moe_from_dict({"experts": 8, "imbalance": {"distribution": "zipf", "param": 1}}).imbalance
    ImbalanceSpec(distribution='zipf', param=1, seed=0)
    """
    data = {k: v for k, v in entry.items() if v is not None}
    if data.get("imbalance") is not None:
        data["imbalance"] = ImbalanceSpec(**data["imbalance"])
    return MoESpec(**data)
