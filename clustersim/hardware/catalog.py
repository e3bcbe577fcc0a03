"""Hardware catalogs: compute devices, link technologies and switches, every figure sourced.

The data live in ``hardware/data/{devices,links,switches}.yaml``: short user-facing keys with
units as strings (``bandwidth: 25 GB/s``), a ``source:`` on every entry, and ``estimated:``
naming the fields that are documented estimates rather than published figures (the
derivation is in ``notes:`` and in ``docs/hardware-sources.md``). In Python every quantity is
in base units and says so in its name (``bw_Bps``, ``latency_s``, ``tdp_W``). Figures are raw
spec-sheet values: efficiency and calibration factors are fitted elsewhere.

>>> h100 = get_device("h100-sxm-80gb")
>>> format_quantity(h100.flops_for("bf16"), "flop_rate"), h100.memory.technology
('989 TFLOP/s', 'hbm3')
>>> format_quantity(h100.scale_up_bw_Bps(), "bandwidth")  # 18 NVLink4 links, one direction
'450 GB/s'
>>> get_switch("nvswitch3").in_network_reduction
'nvls'
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, PrivateAttr, model_validator

from clustersim.config.quantities import (Bandwidth, EnergyPerBit, FlopRate, NonNegativePower,
                                          NonNegativeTime, Power, Size)
from clustersim.config.validation import StrictModel, validate
from clustersim.config.yamlio import load_yaml_file
from clustersim.errors import InputError, InputErrors, closest, unknown_name
from clustersim.units import format_quantity

__all__ = [
    "DTYPES", "LINK_CATEGORIES", "DATA_DIR",
    "MemorySpec", "ScaleUpSpec", "HostLinkSpec", "DeviceSpec", "LinkTech", "SwitchSpec",
    "get_device", "get_link", "get_switch", "device_presets", "link_presets", "switch_presets",
    "load_link_catalog", "load_device_catalog", "load_switch_catalog",
]

DATA_DIR = Path(__file__).parent / "data"
DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
Dtype = Literal["fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4"]
LINK_CATEGORIES = ("scale-up", "chip-to-chip", "host", "coherent", "die-to-die", "memory",
                   "scale-out", "torus")
# Which link categories each device attachment may name (a typo'd technology is caught early).
_ALLOWED_CATEGORIES = {
    "memory": ("memory",),
    "scale_up": ("scale-up", "torus", "die-to-die", "chip-to-chip"),
    "host_link": ("host", "coherent", "chip-to-chip"),
    "nic": ("scale-out",),
}


class CatalogModel(StrictModel):
    """A catalog record: frozen, unknown keys rejected, fields settable by YAML key or name."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _field_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key a record of ``model`` can name, by YAML key and by Python name."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        for key in {name, info.alias or name}:
            keys.add(prefix + key)
            nested = _nested_model(info.annotation)
            if nested is not None:
                keys |= _field_keys(nested, prefix + key + ".")
            if name == "peak_flops":
                keys |= {f"{prefix}{key}.{d}" for d in DTYPES}
    return keys


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for arg in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


class _Sourced(CatalogModel):
    """Checks shared by every catalog entry; each declares ``source``, ``estimated`` and
    ``notes`` last, so keys are listed in the order a YAML entry is written."""

    @model_validator(mode="after")
    def _provenance(self):
        if not self.source.strip():
            raise ValueError("source must name where the figures come from")
        known = _field_keys(type(self))
        unknown = [k for k in self.estimated if k not in known]
        if unknown:
            near = closest(unknown[0], sorted(known))
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"estimated names {unknown[0]!r}, which is not a field{hint}")
        return self


class LinkTech(_Sourced):
    """One link technology, described per link unit and per direction."""

    name: str
    description: str
    category: Literal["scale-up", "chip-to-chip", "host", "coherent", "die-to-die", "memory",
                      "scale-out", "torus"]
    bw_Bps: Bandwidth = Field(alias="bandwidth", description="per direction, one link unit")
    unit: str = Field(description="what one link unit is, e.g. 'x16 port', 'one HBM3 stack'")
    lanes: PositiveInt | None = Field(None, description="lanes in one unit (PCIe/CXL/UCIe)")
    latency_s: NonNegativeTime = Field(alias="latency", description="one traversal, no switch")
    energy_J_per_bit: EnergyPerBit = Field(alias="energy_per_bit",
                                           description="one bit across the link, both ends")
    duplex: Literal["full", "half"] = "full"
    source: str = Field(description="where the figures come from")
    estimated: list[str] = Field(default_factory=list, description="fields that are estimates")
    notes: str = Field("", description="derivations of estimates, conflicts between sources")

    @model_validator(mode="after")
    def _memory_is_half_duplex(self):
        if self.category == "memory" and self.duplex != "half":
            raise ValueError(f"{self.name}: a memory bus shares its bandwidth between reads "
                             "and writes; write `duplex: half`")
        return self


class MemorySpec(CatalogModel):
    """A device's memory: ``stacks`` stacks/packages of one technology."""

    technology: str = Field(description="a memory link technology, e.g. hbm3")
    stacks: PositiveInt = Field(description="stacks, devices or packages")
    capacity_B: Size = Field(alias="capacity")
    bw_Bps: Bandwidth = Field(alias="bandwidth", description="peak, all stacks together")

    @property
    def per_stack_bw_Bps(self) -> float:
        """Peak bandwidth of one stack as this device runs it."""
        return self.bw_Bps / self.stacks


class ScaleUpSpec(CatalogModel):
    """The device's scale-up ports: ``links`` units of one link technology."""

    technology: str
    links: PositiveInt


class HostLinkSpec(CatalogModel):
    """The link to the host CPU; ``lanes`` for lane-based links (PCIe), else one unit."""

    technology: str
    lanes: PositiveInt | None = None


class DeviceSpec(_Sourced):
    """A compute endpoint that runs one rank: a GPU, a TPU chip, or one die of a package."""

    name: str
    description: str = Field(description="one line, shown by `clustersim presets`")
    vendor: str
    year: int = Field(ge=2000, le=2100)
    peak_flops: dict[Dtype, FlopRate] = Field(min_length=1, description="dense, per dtype")
    memory: MemorySpec
    scale_up: ScaleUpSpec | None = None
    host_link: HostLinkSpec | None = None
    nic: str | None = Field(None, description="default scale-out NIC link technology")
    tdp_W: Power = Field(alias="tdp")
    idle_W: NonNegativePower = Field(alias="idle_power")
    sram_B: Size | None = Field(None, alias="sram", description="largest on-chip SRAM level")
    source: str = Field(description="where the figures come from")
    estimated: list[str] = Field(default_factory=list, description="fields that are estimates")
    notes: str = Field("", description="derivations of estimates, conflicts between sources")

    # Specs key the caches of per-op timing; pydantic cannot hash the dict fields, so a spec
    # hashes by its JSON, computed once.
    _hash: int | None = PrivateAttr(default=None)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self.model_dump_json())
        return self._hash

    @model_validator(mode="after")
    def _idle_below_tdp(self):
        if self.idle_W >= self.tdp_W:
            raise ValueError(f"idle_power ({format_quantity(self.idle_W, 'power')}) must be "
                             f"below tdp ({format_quantity(self.tdp_W, 'power')})")
        return self

    def flops_for(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; an InputError names the dtypes this device has.

        >>> get_device("a100-sxm-80gb").flops_for("bf16")
        312000000000000.0
        >>> get_device("tpu-v4").flops_for("fp8")
        Traceback (most recent call last):
        ...
        clustersim.errors.InputError: device 'tpu-v4' has no ... 'fp8'; available: bf16, int8
        """
        if dtype not in self.peak_flops:
            raise InputError(f"device {self.name!r} has no peak FLOP/s for {dtype!r}; "
                             f"available: {', '.join(self.peak_flops)}")
        return self.peak_flops[dtype]

    def scale_up_bw_Bps(self) -> float:
        """Scale-up bandwidth per direction: links x one link's bandwidth (0 if none).

        >>> get_device("a100-sxm-80gb").scale_up_bw_Bps() / 1e9
        300.0
        """
        if self.scale_up is None:
            return 0.0
        return self.scale_up.links * get_link(self.scale_up.technology).bw_Bps

    def host_link_bw_Bps(self) -> float:
        """Host-link bandwidth per direction (0 if none); lanes scale a lane-based unit.

        >>> round(get_device("h100-sxm-80gb").host_link_bw_Bps() / 1e9, 1)
        63.0
        """
        if self.host_link is None:
            return 0.0
        link = get_link(self.host_link.technology)
        if self.host_link.lanes is None:
            return link.bw_Bps
        return link.bw_Bps * self.host_link.lanes / (link.lanes or 1)

    def with_overrides(self, overrides: dict[str, Any]) -> DeviceSpec:
        """A copy with dotted YAML keys replaced, validated again like a catalog entry.

        >>> h100 = get_device("h100-sxm-80gb")
        >>> cheap = h100.with_overrides({"memory.technology": "lpddr5x",
        ...                              "memory.bandwidth": "500 GB/s"})
        >>> cheap.memory.technology, cheap.memory.bw_Bps, cheap.tdp_W == h100.tdp_W
        ('lpddr5x', 500000000000.0, True)
        """
        data = self.model_dump(by_alias=True)
        for key, value in overrides.items():
            _set_dotted(data, str(key), value, DeviceSpec)
        device = validate(DeviceSpec, data)
        _raise_reference_errors(device, link_presets())
        return device


class SwitchSpec(_Sourced):
    """A switch chip (or optical switch): radix, port technology, latency and power."""

    name: str
    description: str
    ports: PositiveInt = Field(description="ports of one port_technology unit each")
    port_technology: str = Field(description="a link technology name")
    latency_s: NonNegativeTime = Field(alias="latency", description="port to port")
    in_network_reduction: Literal["nvls", "sharp"] | None = None
    power_W: NonNegativePower = Field(alias="power", description="whole switch chip")
    source: str = Field(description="where the figures come from")
    estimated: list[str] = Field(default_factory=list, description="fields that are estimates")
    notes: str = Field("", description="derivations of estimates, conflicts between sources")


# ---------------------------------------------------------------------------------- overrides

def _yaml_keys(model: type[BaseModel]) -> dict[str, str]:
    """YAML key for every accepted key (the YAML key itself and the Python name)."""
    keys = {}
    for name, info in model.model_fields.items():
        keys[info.alias or name] = info.alias or name
        keys[name] = info.alias or name
    return keys


def _set_dotted(data: dict, key: str, value: Any, model: type[BaseModel]) -> None:
    """Set ``data[a][b]... = value`` for ``key = "a.b..."``, checking each part against model."""
    parts = key.split(".")
    node, current = data, model
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if current is None:  # inside peak_flops: only dtypes are keys, and they are values
            if part not in DTYPES:
                raise _unknown_key(key, depth, DTYPES)
            if not last:
                raise InputError(f"override {key!r}: {part!r} is a value, not a group of keys")
            node[part] = value
            return
        keys = _yaml_keys(current)
        if part not in keys:
            allowed = [info.alias or name for name, info in current.model_fields.items()]
            raise _unknown_key(key, depth, allowed)
        part = keys[part]
        if last:
            node[part] = value
            return
        name = next(n for n, i in current.model_fields.items() if (i.alias or n) == part)
        nested = _nested_model(current.model_fields[name].annotation)
        if nested is None and name != "peak_flops":
            raise InputError(f"override {key!r}: {part!r} is a value, not a group of keys")
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node, current = node[part], nested


def _unknown_key(key: str, depth: int, allowed) -> InputError:
    parts = key.split(".")
    near = closest(parts[depth], allowed)
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    where = f" in {'.'.join(parts[:depth])}" if depth else ""
    return InputError(f"unknown override key {key!r}{hint} (allowed{where}: "
                      f"{', '.join(allowed)})")


# ------------------------------------------------------------------------------------ loading

def _load_entries(path: Path, model: type[_Sourced]) -> tuple[dict, Any]:
    doc = load_yaml_file(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), f"{path.name} must map preset names to entries")
    entries, errors = {}, []
    for name, entry in list(doc.data.items()):
        if not isinstance(entry, dict):
            errors.append(doc.error((name,), f"preset {name!r} must be a mapping of keys"))
            continue
        if entry.get("name", name) != name:
            errors.append(doc.error((name, "name"), f"name {entry['name']!r} differs from its "
                                    f"key {name!r}; drop `name:` or make them equal"))
            continue
        doc.data[name] = {**entry, "name": str(name)}
        try:
            entries[str(name)] = validate(model, doc, prefix=(name,))
        except InputErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise InputErrors(errors)
    return entries, doc


def _reference_problems(device: DeviceSpec, links: dict[str, LinkTech]) -> list[tuple]:
    """``(location, message)`` for every link technology the device names wrongly."""
    named = [("memory", ("memory", "technology"), device.memory.technology)]
    if device.scale_up:
        named.append(("scale_up", ("scale_up", "technology"), device.scale_up.technology))
    if device.host_link:
        named.append(("host_link", ("host_link", "technology"), device.host_link.technology))
    if device.nic:
        named.append(("nic", ("nic",), device.nic))
    problems = []
    for role, loc, tech in named:
        allowed = sorted(n for n, l in links.items() if l.category in _ALLOWED_CATEGORIES[role])
        if tech not in allowed:
            err = unknown_name(f"{role.replace('_', '-')} link technology", tech, allowed)
            problems.append((loc, f"{'.'.join(loc)}: {err.message}"))
    return problems


def _raise_reference_errors(device: DeviceSpec, links: dict[str, LinkTech]) -> None:
    problems = _reference_problems(device, links)
    if problems:
        raise InputErrors(InputError(message) for _, message in problems)


def load_link_catalog(path: str | Path = DATA_DIR / "links.yaml") -> dict[str, LinkTech]:
    """Read and validate a link catalog; every error points at ``file:line:col``.

    >>> links = load_link_catalog()
    >>> links["ib-ndr"].bw_Bps, links["hbm3"].duplex
    (50000000000.0, 'half')
    """
    return _load_entries(Path(path), LinkTech)[0]


def load_device_catalog(path: str | Path = DATA_DIR / "devices.yaml",
                        links: dict[str, LinkTech] | None = None) -> dict[str, DeviceSpec]:
    """Read and validate a device catalog, checking every link it names exists in ``links``.

    >>> sorted(load_device_catalog())[:3]
    ['a100-sxm-40gb', 'a100-sxm-80gb', 'b200']
    """
    links = link_presets() if links is None else links
    devices, doc = _load_entries(Path(path), DeviceSpec)
    errors = [InputError(message, *doc.where((name,) + loc))
              for name, device in devices.items()
              for loc, message in _reference_problems(device, links)]
    if errors:
        raise InputErrors(errors)
    return devices


def load_switch_catalog(path: str | Path = DATA_DIR / "switches.yaml",
                        links: dict[str, LinkTech] | None = None) -> dict[str, SwitchSpec]:
    """Read and validate a switch catalog, checking each port technology exists in ``links``.

    >>> load_switch_catalog()["quantum2-ndr"].ports
    64
    """
    links = link_presets() if links is None else links
    switches, doc = _load_entries(Path(path), SwitchSpec)
    errors = [InputError(unknown_name("port link technology", s.port_technology, links).message,
                         *doc.where((name, "port_technology")))
              for name, s in switches.items() if s.port_technology not in links]
    if errors:
        raise InputErrors(errors)
    return switches


@functools.cache
def _links() -> dict[str, LinkTech]:
    return load_link_catalog()


@functools.cache
def _devices() -> dict[str, DeviceSpec]:
    return load_device_catalog()


@functools.cache
def _switches() -> dict[str, SwitchSpec]:
    return load_switch_catalog()


def link_presets() -> dict[str, LinkTech]:
    """Every link technology preset by name (the YAML is read once per process).

    >>> link_presets()["nvlink4"].unit
    'one NVLink4 link: 2 lanes x 100 Gb/s PAM4'
    """
    return dict(_links())


def device_presets() -> dict[str, DeviceSpec]:
    """Every device preset by name (the YAML is read once per process).

    >>> "h100-sxm-80gb" in device_presets()
    True
    """
    return dict(_devices())


def switch_presets() -> dict[str, SwitchSpec]:
    """Every switch preset by name (the YAML is read once per process).

    >>> switch_presets()["ocs"].ports
    136
    """
    return dict(_switches())


def get_link(name: str) -> LinkTech:
    """The link technology ``name``; an unknown name suggests the closest ones.

    >>> get_link("nvlink4").bw_Bps
    25000000000.0
    """
    links = _links()
    if name not in links:
        raise unknown_name("link technology", name, links)
    return links[name]


def get_device(name: str) -> DeviceSpec:
    """The device preset ``name``; an unknown name suggests the closest ones.

    >>> get_device("h100-sxm-80gb").memory.stacks
    5
    >>> get_device("h100")
    Traceback (most recent call last):
    ...
    clustersim.errors.InputError: unknown device preset 'h100'; did you mean ...
    """
    devices = _devices()
    if name not in devices:
        raise unknown_name("device preset", name, devices)
    return devices[name]


def get_switch(name: str) -> SwitchSpec:
    """The switch preset ``name``; an unknown name suggests the closest ones.

    >>> get_switch("quantum-x800").ports
    144
    """
    switches = _switches()
    if name not in switches:
        raise unknown_name("switch preset", name, switches)
    return switches[name]
