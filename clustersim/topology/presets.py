"""Topology presets: YAML files in the top-level ``topologies/`` folder, each naming a builder
and its parameters. Every preset accepts a device count and dotted overrides of any parameter.
(:func:`clustersim.network.build_cluster` makes the graph a routable Cluster.)

>>> G, params = build_graph("dgx-h100", devices=16, overrides={"scale_out.bandwidth": "25 GB/s"})
>>> len(G.graph["devices"]), params.scale_out.bandwidth
(16, 25000000000.0)
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field

from clustersim.config.quantities import Count
from clustersim.config.validation import StrictModel, nested_model, validate
from clustersim.config.yamlio import YamlDocument, load_yaml_file
from clustersim.errors import InputError, InputErrors, closest, unknown_name
from clustersim.topology.gpu_cluster import GpuClusterParams, build_gpu_cluster
from clustersim.topology.graph_yaml import GraphParams, build_graph_topology, check_graph
from clustersim.topology.tpu_pod import TpuPodParams, build_tpu_pod

__all__ = ["TopologyPreset", "BUILDERS", "topology_dirs", "topology_presets", "load_topology",
           "resolve_params", "apply_overrides", "build_graph"]


@dataclass(frozen=True)
class Builder:
    params: type[BaseModel]
    build: Callable


BUILDERS: dict[str, Builder] = {
    "gpu-cluster": Builder(GpuClusterParams, build_gpu_cluster),
    "tpu-pod": Builder(TpuPodParams, build_tpu_pod),
    "graph": Builder(GraphParams, build_graph_topology),
}


class TopologyPreset(StrictModel):
    name: str
    description: str
    builder: str
    devices: Count = Field(description="default device count")
    source: str = ""
    params: dict[str, Any] = Field(default_factory=dict)


def topology_dirs() -> list[Path]:
    """Where presets are looked up: the project's ``topologies/`` folder (next to the package
    in a source checkout), then the copy a wheel installs as ``clustersim/topologies``."""
    package = Path(__file__).resolve().parent.parent
    return [d for d in (package.parent / "topologies", package / "topologies") if d.is_dir()]


@functools.cache
def _preset_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in topology_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


@functools.cache
def _load_preset_file(path: str) -> tuple[TopologyPreset, YamlDocument]:
    doc = load_yaml_file(path)
    preset = validate(TopologyPreset, doc)
    if preset.builder not in BUILDERS:
        raise doc.error(("builder",), f"unknown builder {preset.builder!r}; "
                                      f"allowed: {', '.join(BUILDERS)}")
    # Check the parameters now, so a broken preset file points at its own line.
    params = validate(BUILDERS[preset.builder].params, doc, prefix=("params",))
    if preset.builder == "graph":
        _check_graph_file(preset, params, doc, Path(path).parent)
    return preset, doc


def _check_graph_file(preset: TopologyPreset, params: GraphParams, doc: YamlDocument,
                      folder: Path) -> None:
    """A graph's references and connectivity, located in its YAML; a ``file:`` is made
    absolute (relative to the YAML) and read when the graph is built."""
    if params.file:
        preset.params["file"] = str(folder / params.file)
        return
    check_graph(params, lambda loc: doc.where(("params",) + tuple(loc)))
    count = sum(n.kind in ("accelerator", "die") for n in params.nodes)
    if preset.devices != count:
        raise doc.error(("devices",), f"devices: {preset.devices}, but the graph lists {count} "
                                      f"accelerators; set `devices: {count}`")


def topology_presets() -> dict[str, TopologyPreset]:
    """Every preset by name."""
    return {name: _load_preset_file(str(path))[0] for name, path in _preset_files().items()}


def load_topology(name_or_path: str) -> TopologyPreset:
    """A preset by name, or a topology YAML file by path."""
    files = _preset_files()
    if name_or_path in files:
        return _load_preset_file(str(files[name_or_path]))[0]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise InputError(f"no such topology file: {path}")
        return _load_preset_file(str(path.resolve()))[0]
    raise unknown_name("topology preset", name_or_path, files)


def _field_model(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    if model is None or name not in model.model_fields:
        return None
    return nested_model(model.model_fields[name].annotation)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any],
                    model: type[BaseModel]) -> dict[str, Any]:
    """Set dotted keys in a copy of ``data``; below a dict-valued field the rest of the key
    stays one key (``device_overrides.memory.technology``).

    >>> apply_overrides({"scale_out": {"technology": "ib-ndr"}},
    ...                 {"scale_out.bandwidth": "25 GB/s"}, GpuClusterParams)
    {'scale_out': {'technology': 'ib-ndr', 'bandwidth': '25 GB/s'}}
    """
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        parts = str(key).split(".")
        target, current_model = out, model
        for i, part in enumerate(parts[:-1]):
            if current_model is not None and part in current_model.model_fields and \
                    _field_model(current_model, part) is None:
                # a plain dict field: the remainder of the key is one key inside it
                if not isinstance(target.get(part), dict):
                    target[part] = {}
                target[part][".".join(parts[i + 1:])] = value
                break
            allowed = list(current_model.model_fields) if current_model else []
            if current_model is not None and part not in allowed:
                near = closest(part, allowed)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise InputError(f"unknown topology parameter {key!r}{hint} "
                                 f"(allowed at this level: {', '.join(allowed)})")
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
            current_model = _field_model(current_model, part)
        else:
            target[parts[-1]] = value
    return out


def resolve_params(preset: TopologyPreset, overrides: dict[str, Any] | None = None
                   ) -> BaseModel:
    """The builder's parameter model: the preset's values with ``overrides`` applied."""
    builder = BUILDERS[preset.builder]
    overrides = overrides or {}
    data = apply_overrides(preset.params, overrides, builder.params)
    try:
        return validate(builder.params, data)
    except InputErrors as exc:
        raise InputErrors(InputError(f"topology {preset.name}: {e.message}"
                                     + _blame(e.message, overrides))
                          for e in exc.errors) from None


def _blame(message: str, overrides: dict[str, Any]) -> str:
    """`` (override 'key': 'value')`` for the override an error is about, quoted so a sweep
    can point at the line that set it."""
    for key, value in overrides.items():
        if message.startswith(f"{key}:") or f"{key!r}" in message or f" {key}:" in message:
            return f" (override {key!r}: {value!r})"
    return ""


# Memory a built cluster takes per device (graph, routing, link arrays): 14.8 KB measured on
# 16,384 DGX H100 GPUs, 9.6 KB on a 4,096-chip TPU v4 torus; a cluster may take half of RAM.
BYTES_PER_DEVICE = 15_000


def check_cluster_size(devices: int) -> None:
    """An InputError before the graph is built when ``devices`` would not fit this machine.

    >>> check_cluster_size(1_000_000_000)
    Traceback (most recent call last):
    ...
    clustersim.errors.InputError: 1,000,000,000 devices would take about 15,000 GB ...
    """
    try:
        memory_B = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):   # no sysconf (Windows): no check
        return
    need_B = devices * BYTES_PER_DEVICE
    if need_B > memory_B / 2:
        raise InputError(f"{devices:,} devices would take about {need_B / 1e9:,.0f} GB to "
                         f"build, more than half of this machine's {memory_B / 1e9:,.0f} GB; "
                         f"at most {int(memory_B / 2 / BYTES_PER_DEVICE):,} fit")


def build_graph(topology: str, devices: int | None = None,
                overrides: dict[str, Any] | None = None):
    """The networkx graph of a preset (or topology file) sized to ``devices``."""
    preset = load_topology(topology)
    params = resolve_params(preset, overrides)
    n = devices or preset.devices
    check_cluster_size(n)
    try:
        G = BUILDERS[preset.builder].build(params, n, name=preset.name)
    except ValueError as exc:
        raise InputError(f"topology {preset.name} with {n} devices: {exc}") from None
    G.graph["preset"] = preset.name
    G.graph["description"] = preset.description
    return G, params
