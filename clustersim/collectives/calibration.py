"""Per-technology protocol calibration: bandwidth efficiency and per-hop protocol latency,
fitted to the nccl-tests sweeps bundled in ``clustersim/validate/data/collectives.csv``. This
module reads the fitted values; :mod:`clustersim.calibrate.collectives` refits them.

Physical model (``calibration.yaml``), after NCCL's own tuner (``src/graph/tuning.cc``: a base
latency per algorithm and protocol, a per-hop latency per transport, a bandwidth factor per
protocol):

- ``efficiency``: the fraction of a link's raw rate the bulk protocol (NCCL "Simple") moves
  as payload (headers, flow control, the copy engine's limits). Every link's effective
  capacity is ``capacity * efficiency`` (:func:`clustersim.collectives.cost.effective_capacity_Bps`).
- ``hop_simple``, ``hop_ll128``, ``hop_ll``: the protocol's software cost of one algorithm step
  over a transport of this technology (flag/fence synchronisation and chunk hand-off; NCCL's
  ``hwLat`` for NVLink, PCI and NET). A step's latency is this plus the *physical* latency of
  the path the transfer takes: every link's and every switch's latency from the hardware
  catalog (``links.yaml``, ``switches.yaml``), the PCIe hop to the NIC included. A route over
  several technologies pays the largest protocol cost of its links (a GPU-NIC-fabric-NIC-GPU
  hop is a NET step, as in NCCL) and the sum of its physical latencies.
- ``ll_efficiency`` and ``ll128_efficiency``: payload per wire byte of the low-latency
  protocols relative to Simple: an LL line is 4 data bytes + a 4-byte flag (at most 0.5), an
  LL128 line 120 data bytes of 128 (at most 0.9375; NCCL's tuner uses 0.92). Their transfers
  carry ``payload / efficiency`` wire bytes.
- ``launch``: once per collective, per protocol: kernel launch and the protocol's set-up
  (NCCL's ``baseLat``), independent of scale; plus ``host_launch``, the host-side overhead of
  the system a sweep ran on (nccl-tests times each call from the host: driver, stream and
  argument set-up), fitted per scale-up technology (a stand-in for the GPU generation and its
  software) and taken as the largest over a cluster's technologies
  (:func:`host_launch_s`). It is counted only where a calibration says so
  (``count_host_launch``; :func:`as_timed_by_host`): the validation against nccl-tests and
  the fit, not a training step, whose host enqueues kernels ahead of the GPU.
- ``in_network.<kind>``: the fraction of the raw port rate at which a switch reduces (NVLS,
  SHARP) and the latency of one in-switch reduction (NCCL's NVLS ``hwLat``); in-switch
  transfers carry ``payload * efficiency(link) / efficiency(kind)`` wire bytes.

Technologies without fitted values fall back to their category's documented default
(``categories:``), flagged ``estimated``.

>>> cal = default_calibration()
>>> t = cal.tech("nvlink3")
>>> 0.6 < t.efficiency < 0.9, t.fitted_on[0].startswith("AZ-A100")
(True, True)
>>> cal.tech("ib-ndr").efficiency
0.94
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from clustersim.collectives.routes import transfer_routes
from clustersim.errors import InputError
from clustersim.hardware.catalog import get_link
from clustersim.units import parse

__all__ = ["TechCalibration", "Calibration", "CALIBRATION_FILE", "PROTOCOLS", "BOUNDS",
           "load_calibration", "default_calibration", "tech_table", "wire_factors",
           "protocol_columns", "check_bounds", "host_launch_s", "as_timed_by_host"]

CALIBRATION_FILE = Path(__file__).with_name("calibration.yaml")

# NCCL's protocols, bulk first (the order `auto` lists them in)
PROTOCOLS = ("simple", "ll128", "ll")

# Physical ranges every value must stay in (what `check_bounds` and the fit enforce):
# efficiencies are fractions of a rate; LL carries at most 4 of 8 bytes, LL128 120 of 128
# (NCCL tuning.cc); per-hop costs are positive and below 50 us (NCCL's largest NET figure is
# 14 us); a launch is at least a kernel launch (~2 us) and below 50 us.
BOUNDS = {"efficiency": (0.25, 1.0), "ll_efficiency": (0.25, 0.5),
          "ll128_efficiency": (0.5, 120 / 128), "hop_s": (0.05e-6, 50e-6),
          "launch_s": (2e-6, 50e-6), "host_launch_s": (0.0, 40e-6), "in_network_efficiency": (0.25, 1.0),
          "in_network_latency_s": (0.5e-6, 50e-6)}


@dataclass(frozen=True)
class TechCalibration:
    efficiency: float          # Simple payload per raw byte
    hop_simple_s: float        # per-step protocol cost over this transport, per protocol
    hop_ll128_s: float
    hop_ll_s: float
    ll_efficiency: float       # LL payload per Simple byte
    ll128_efficiency: float    # LL128 payload per Simple byte
    host_launch_s: float = 0.0  # host-side launch overhead of systems built on this link
    fitted_on: tuple = ()
    estimated: bool = False

    def hop_s(self, protocol: str) -> float:
        return {"simple": self.hop_simple_s, "ll128": self.hop_ll128_s,
                "ll": self.hop_ll_s}[protocol]


@dataclass(frozen=True, eq=False)
class Calibration:
    """Fitted and default values; compared by identity (caches key on it)."""

    techs: dict = field(default_factory=dict)
    categories: dict = field(default_factory=dict)
    in_network: dict = field(default_factory=dict)           # kind -> efficiency
    in_network_latency_s: dict = field(default_factory=dict)  # kind -> seconds
    launch_s: dict = field(default_factory=dict)              # protocol -> seconds
    memory_efficiency: float = 0.9
    # count the host-side launch (nccl-tests times isolated calls from the host); off in
    # training, where the host enqueues kernels ahead of the GPU and only the device-side
    # launch (NCCL's base latency) is on the critical path
    count_host_launch: bool = False

    def tech(self, name: str) -> TechCalibration:
        found = self.techs.get(name)
        if found is not None:
            return found
        category = get_link(name).category
        if category not in self.categories:
            raise InputError(f"no collective calibration for link technology {name!r} "
                             f"(category {category}); add it to {CALIBRATION_FILE.name}")
        return self.categories[category]

    def launch(self, protocol: str) -> float:
        return self.launch_s[protocol]

    def with_tech(self, name: str, **values) -> Calibration:
        """A copy with some values of one technology replaced (for fits and what-ifs)."""
        techs = dict(self.techs)
        techs[name] = replace(self.tech(name), **values)
        return replace(self, techs=techs)

    def with_in_network(self, kind: str, efficiency: float,
                        latency_s: float | None = None) -> Calibration:
        lat = dict(self.in_network_latency_s)
        if latency_s is not None:
            lat[kind] = latency_s
        return replace(self, in_network={**self.in_network, kind: efficiency},
                       in_network_latency_s=lat)

    def with_launch(self, **values) -> Calibration:
        return replace(self, launch_s={**self.launch_s, **values})


def _time(d: dict, key: str) -> float:
    return parse(str(d[key]), "time")


def _entry(d: dict) -> TechCalibration:
    return TechCalibration(float(d["efficiency"]), _time(d, "hop_simple"), _time(d, "hop_ll128"),
                           _time(d, "hop_ll"), float(d["ll_efficiency"]),
                           float(d["ll128_efficiency"]),
                           _time(d, "host_launch") if "host_launch" in d else 0.0,
                           tuple(d.get("fitted_on", ())),
                           bool(d.get("estimated", False)))


def load_calibration(path: str | Path = CALIBRATION_FILE) -> Calibration:
    """Read a calibration YAML (the bundled one by default)."""
    data = yaml.safe_load(Path(path).read_text())
    net = data["in_network"]
    return Calibration({k: _entry(v) for k, v in data["technologies"].items()},
                       {k: _entry(v) for k, v in data["categories"].items()},
                       {k: float(v["efficiency"]) for k, v in net.items()},
                       {k: _time(v, "latency") for k, v in net.items()},
                       {k: _time(data["launch"], k) for k in PROTOCOLS},
                       float(data["memory"]["efficiency"]))


@functools.cache
def default_calibration() -> Calibration:
    """The bundled calibration (read once)."""
    return load_calibration()


def check_bounds(cal: Calibration) -> list[str]:
    """What is outside its physical range (empty when all is well): every value against
    :data:`BOUNDS`, and NVLink's per-hop cost at most PCIe's and InfiniBand's per protocol.

    >>> check_bounds(default_calibration())
    []
    """
    out = []

    def need(name, value, bound):
        lo, hi = BOUNDS[bound]
        if not lo <= value <= hi:
            out.append(f"{name} = {value:.4g} outside [{lo:.4g}, {hi:.4g}]")

    entries = {**{f"category {k}": v for k, v in cal.categories.items()}, **cal.techs}
    for name, t in entries.items():
        need(f"{name}.efficiency", t.efficiency, "efficiency")
        need(f"{name}.ll_efficiency", t.ll_efficiency, "ll_efficiency")
        need(f"{name}.ll128_efficiency", t.ll128_efficiency, "ll128_efficiency")
        need(f"{name}.host_launch", t.host_launch_s, "host_launch_s")
        for proto in PROTOCOLS:
            need(f"{name}.hop_{proto}", t.hop_s(proto), "hop_s")
    for proto in PROTOCOLS:
        need(f"launch.{proto}", cal.launch(proto), "launch_s")
    for kind, eff in cal.in_network.items():
        need(f"in_network.{kind}.efficiency", eff, "in_network_efficiency")
        need(f"in_network.{kind}.latency", cal.in_network_latency_s[kind],
             "in_network_latency_s")
    nvlinks = [k for k in cal.techs if k.startswith("nvlink")] + ["category scale-up"]
    slower = {"category host": cal.categories.get("host"),
              "category scale-out": cal.categories.get("scale-out")}
    for nv in nvlinks:
        t = entries.get(nv)
        for other, o in slower.items():
            for proto in PROTOCOLS:
                if t is not None and o is not None and t.hop_s(proto) > o.hop_s(proto):
                    out.append(f"{nv}.hop_{proto} {t.hop_s(proto) * 1e6:.3g} us exceeds "
                               f"{other}'s {o.hop_s(proto) * 1e6:.3g} us")
    return out


def host_launch_s(cluster, cal: Calibration) -> float:
    """The host-side launch overhead of ``cluster`` when ``cal.count_host_launch``: the
    largest ``host_launch`` over its link technologies (0 where none is fitted), else 0."""
    if not cal.count_host_launch:
        return 0.0
    return max((cal.tech(name).host_launch_s for name in cluster.links.techs), default=0.0)


def as_timed_by_host(cal: Calibration) -> Calibration:
    """``cal`` with the host-side launch counted, as nccl-tests' timing counts it (one copy
    per calibration, so the caches keyed on it stay warm)."""
    if cal.count_host_launch:
        return cal
    hit = _TIMED.get(id(cal))
    if hit is None or hit[0] is not cal:
        hit = _TIMED[id(cal)] = (cal, replace(cal, count_host_launch=True))
    return hit[1]


_TIMED: dict = {}


_TABLES: dict = {}
_COLUMNS = {"simple": (1, None), "ll128": (2, 4), "ll": (3, 5)}


def protocol_columns(protocol: str) -> tuple:
    """``(hop latency column, efficiency column or None)`` of ``protocol`` in
    :func:`tech_table`."""
    return _COLUMNS[protocol]


def tech_table(cluster, cal: Calibration) -> np.ndarray:
    """``[n_techs, 6]`` array over ``cluster.links.techs``: efficiency, hop_simple_s,
    hop_ll128_s, hop_ll_s, ll128_efficiency, ll_efficiency."""
    key = (id(cluster), id(cal))
    hit = _TABLES.get(key)
    if hit is not None and hit[0] is cluster and hit[1] is cal:
        return hit[2]
    rows = []
    for name in cluster.links.techs:
        t = cal.tech(name)
        rows.append((t.efficiency, t.hop_simple_s, t.hop_ll128_s, t.hop_ll_s,
                     t.ll128_efficiency, t.ll_efficiency))
    table = np.array(rows, dtype=np.float64).reshape(-1, 6)
    if len(_TABLES) > 256:
        _TABLES.clear()
    _TABLES[key] = (cluster, cal, table)
    return table


def wire_factors(cluster, members, phase, name: str, protocol: str,
                 cal: Calibration) -> np.ndarray:
    """Wire bytes per payload byte of each transfer of ``phase`` (see module docstring)."""
    n = len(phase.src)
    if protocol == "simple" and name not in ("nvls", "sharp"):
        return np.ones(n)
    if n == 0:
        return np.ones(0)
    table = tech_table(cluster, cal)
    ptr, link, _, _ = transfer_routes(cluster, members, phase.src, phase.dst)
    out = np.ones(n)
    routed = np.diff(ptr) > 0
    if not routed.any():
        return out
    techs = cluster.links.tech_id[link]
    col = 0 if name in ("nvls", "sharp") else protocol_columns(protocol)[1]
    # the smallest efficiency along each routed transfer's path, all at once
    worst = np.minimum.reduceat(table[techs, col], ptr[:-1][routed])
    out[routed] = worst / cal.in_network[name] if name in ("nvls", "sharp") else 1.0 / worst
    return out
