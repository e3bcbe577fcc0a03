"""What a hardware catalog entry is: the pydantic records of link technologies, devices (with
their memory, scale-up ports and host link) and switches, each checked on its own (a source
named, estimates naming real fields, idle power below TDP, memory buses half duplex).

Short user-facing YAML keys map to base-unit attributes (``bandwidth: 25 GB/s`` ->
``bw_Bps``); a device can be re-specified by dotted YAML keys
(:meth:`DeviceSpec.with_overrides`). A record is a plain value: it never looks anything up.
Reading the YAML files, checking the references between catalogs (does the link a device
names exist?), figures that combine a device with its links, and the presets are
:mod:`~clustersim.hardware.catalog`'s job.

>>> link = LinkTech.model_validate({"name": "x", "description": "a test link",
...     "category": "scale-out", "bandwidth": "25 GB/s", "unit": "one port",
...     "latency": "1 us", "energy_per_bit": "5 pJ/bit", "source": "made up for this example"})
>>> link.bw_Bps, link.latency_s, link.duplex
(25000000000.0, 1e-06, 'full')
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from clustersim.config.quantities import (Bandwidth, Count, EnergyPerBit, FlopRate,
                                          NonNegativePower, NonNegativeTime, Power, Size)
from clustersim.config.validation import StrictModel, validate
from clustersim.errors import InputError, closest
from clustersim.units import format_quantity

__all__ = [
    "DTYPES", "LINK_CATEGORIES", "CatalogModel",
    "MemorySpec", "ScaleUpSpec", "HostLinkSpec", "DeviceSpec", "LinkTech", "SwitchSpec",
]

DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
Dtype = Literal[DTYPES]
LINK_CATEGORIES = ("scale-up", "chip-to-chip", "host", "coherent", "die-to-die", "memory",
                   "scale-out", "torus")
LinkCategory = Literal[LINK_CATEGORIES]


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
    category: LinkCategory
    bw_Bps: Bandwidth = Field(alias="bandwidth", description="per direction, one link unit")
    unit: str = Field(description="what one link unit is, e.g. 'x16 port', 'one HBM3 stack'")
    lanes: Count | None = Field(None, description="lanes in one unit (PCIe/CXL/UCIe)")
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
    stacks: Count = Field(description="stacks, devices or packages")
    capacity_B: Size = Field(alias="capacity")
    bw_Bps: Bandwidth = Field(alias="bandwidth", description="peak, all stacks together")

    @property
    def per_stack_bw_Bps(self) -> float:
        """Peak bandwidth of one stack as this device runs it."""
        return self.bw_Bps / self.stacks


class ScaleUpSpec(CatalogModel):
    """The device's scale-up ports: ``links`` units of one link technology."""

    technology: str
    links: Count


class HostLinkSpec(CatalogModel):
    """The link to the host CPU; ``lanes`` for lane-based links (PCIe), else one unit."""

    technology: str
    lanes: Count | None = None


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
    power_limit_W: Power | None = Field(
        None, alias="power_limit", description="a board power limit below tdp (nvidia-smi "
        "-pl, or a lower-power variant of the same die): its math units run at the clock "
        "the limit allows (clustersim.hardware.compute.power_limited_clock)")
    sram_B: Size | None = Field(None, alias="sram", description="largest on-chip SRAM level")
    same_die_as: str | None = Field(None, description="a catalog device on the same silicon "
                                    "whose math units it runs at a cut rate: it spends that "
                                    "device's energy per FLOP (its TDP is a rating it does "
                                    "not reach on its capped FLOPs)")
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
        limit = self.power_limit_W
        if limit is not None and not self.idle_W < limit <= self.tdp_W:
            raise ValueError(f"power_limit ({format_quantity(limit, 'power')}) must lie "
                             f"between idle_power ({format_quantity(self.idle_W, 'power')}) "
                             f"and tdp ({format_quantity(self.tdp_W, 'power')}); a device "
                             f"rated above its tdp is a new design: raise tdp instead")
        return self

    def flops_for(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; an InputError names the dtypes this device has.

        >>> from clustersim.hardware import get_device
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

    def with_overrides(self, overrides: dict[str, Any]) -> DeviceSpec:
        """A copy with dotted YAML keys replaced, validated again like a catalog entry (its
        own fields only: whether the link technologies it names exist is the catalog's
        question, :func:`~clustersim.hardware.catalog.override_device`).

        >>> from clustersim.hardware import get_device
        >>> h100 = get_device("h100-sxm-80gb")
        >>> cheap = h100.with_overrides({"memory.technology": "lpddr5x",
        ...                              "memory.bandwidth": "500 GB/s"})
        >>> cheap.memory.technology, cheap.memory.bw_Bps, cheap.tdp_W == h100.tdp_W
        ('lpddr5x', 500000000000.0, True)
        """
        data = self.model_dump(by_alias=True)
        for key, value in overrides.items():
            _set_dotted(data, str(key), value, DeviceSpec)
        return validate(DeviceSpec, data)


class SwitchSpec(_Sourced):
    """A switch chip (or optical switch): radix, port technology, latency and power."""

    name: str
    description: str
    ports: Count = Field(description="ports of one port_technology unit each")
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
