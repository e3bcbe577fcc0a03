"""Hardware catalogs: compute devices, link technologies and switches, every figure sourced.

The data live in ``hardware/data/{devices,links,switches}.yaml``: short user-facing keys with
units as strings (``bandwidth: 25 GB/s``), a ``source:`` on every entry, and ``estimated:``
naming the fields that are documented estimates rather than published figures (the
derivation is in ``notes:`` and in ``docs/hardware-sources.md``). In Python every quantity is
in base units and says so in its name (``bw_Bps``, ``latency_s``, ``tdp_W``). Figures are raw
spec-sheet values: efficiency and calibration factors are fitted elsewhere.

The records are defined in :mod:`~clustersim.hardware.specs`; this module reads and checks
the YAML files (errors at ``file:line:col``, links every device and switch names), and keeps
the presets, read once per process.

>>> from clustersim.units import format_quantity
>>> h100 = get_device("h100-sxm-80gb")
>>> format_quantity(h100.flops_for("bf16"), "flop_rate"), h100.memory.technology
('989 TFLOP/s', 'hbm3')
>>> format_quantity(scale_up_bw_Bps(h100), "bandwidth")  # 18 NVLink4 links, one direction
'450 GB/s'
>>> get_switch("nvswitch3").in_network_reduction
'nvls'
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from clustersim.config.validation import validate
from clustersim.config.yamlio import load_yaml_file
from clustersim.errors import InputError, InputErrors, lookup, unknown_name
from clustersim.hardware.specs import CatalogModel, DeviceSpec, LinkTech, SwitchSpec

__all__ = [
    "DATA_DIR", "get_device", "get_link", "get_switch", "device_presets", "link_presets",
    "switch_presets", "load_link_catalog", "load_device_catalog", "load_switch_catalog",
    "check_device_links", "override_device", "scale_up_bw_Bps", "host_link_bw_Bps",
]

DATA_DIR = Path(__file__).parent / "data"
# Which link categories each device attachment may name (a typo'd technology is caught early).
_ALLOWED_CATEGORIES = {
    "memory": ("memory",),
    "scale_up": ("scale-up", "torus", "die-to-die", "chip-to-chip"),
    "host_link": ("host", "coherent", "chip-to-chip"),
    "nic": ("scale-out",),
}


# ------------------------------------------------------------------------------------ loading

def _load_entries(path: Path, model: type[CatalogModel]) -> tuple[dict, Any]:
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


def check_device_links(device: DeviceSpec, links: dict[str, LinkTech] | None = None) -> None:
    """Raise InputErrors for every link technology ``device`` names that ``links`` (default:
    the link presets) lacks or that cannot serve its role (memory, scale-up, host link, NIC).

    >>> h100 = get_device("h100-sxm-80gb")
    >>> check_device_links(h100)   # every catalog device passes
    >>> check_device_links(h100, {})
    Traceback (most recent call last):
    ...
    clustersim.errors.InputErrors: ...
    """
    links = link_presets() if links is None else links
    problems = _reference_problems(device, links)
    if problems:
        raise InputErrors(InputError(message) for _, message in problems)


def override_device(device: DeviceSpec, overrides: dict[str, Any],
                    links: dict[str, LinkTech] | None = None) -> DeviceSpec:
    """``device`` with dotted YAML keys replaced (:meth:`DeviceSpec.with_overrides`), and every
    link technology the new device names checked against ``links`` (default: the presets).

    >>> override_device(get_device("h100-sxm-80gb"), {"memory.technology": "hbm3e"}).name
    'h100-sxm-80gb'
    >>> override_device(get_device("h100-sxm-80gb"), {"memory.technology": "nvlink4"})
    Traceback (most recent call last):
    ...
    clustersim.errors.InputErrors: memory.technology: unknown memory link technology 'nvlink4'...
    """
    new = device.with_overrides(overrides)
    check_device_links(new, links)
    return new


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
    return lookup(_links(), name, "link technology")


def get_device(name: str) -> DeviceSpec:
    """The device preset ``name``; an unknown name suggests the closest ones.

    >>> get_device("h100-sxm-80gb").memory.stacks
    5
    >>> get_device("h100")
    Traceback (most recent call last):
    ...
    clustersim.errors.InputError: unknown device preset 'h100'; did you mean ...
    """
    return lookup(_devices(), name, "device preset")


def get_switch(name: str) -> SwitchSpec:
    """The switch preset ``name``; an unknown name suggests the closest ones.

    >>> get_switch("quantum-x800").ports
    144
    """
    return lookup(_switches(), name, "switch preset")


# ------------------------------------------------------------------ a device with its links

def scale_up_bw_Bps(device: DeviceSpec) -> float:
    """Scale-up bandwidth per direction: links x one link's bandwidth (0 if none).

    >>> scale_up_bw_Bps(get_device("a100-sxm-80gb")) / 1e9
    300.0
    """
    if device.scale_up is None:
        return 0.0
    return device.scale_up.links * get_link(device.scale_up.technology).bw_Bps


def host_link_bw_Bps(device: DeviceSpec) -> float:
    """Host-link bandwidth per direction (0 if none); lanes scale a lane-based unit.

    >>> round(host_link_bw_Bps(get_device("h100-sxm-80gb")) / 1e9, 1)
    63.0
    """
    if device.host_link is None:
        return 0.0
    link = get_link(device.host_link.technology)
    if device.host_link.lanes is None:
        return link.bw_Bps
    return link.bw_Bps * device.host_link.lanes / (link.lanes or 1)
