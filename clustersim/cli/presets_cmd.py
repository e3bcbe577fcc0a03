"""``clustersim presets``: every device, link, switch, topology and model preset, one line each."""

from __future__ import annotations

HELP = "list every device, link, switch, topology and model preset"

__all__ = ["HELP", "add_arguments", "run", "preset_sections"]


def add_arguments(parser) -> None:
    parser.add_argument("--kind", choices=["devices", "links", "switches", "topologies", "models"],
                        default=None, help="list one kind only")


def preset_sections() -> dict[str, dict[str, str]]:
    """``{section: {name: one-line description}}``."""
    # imported on use (pydantic, networkx): `clustersim --help` loads every subcommand module
    from clustersim.hardware import device_presets, link_presets, switch_presets
    from clustersim.topology import topology_presets
    from clustersim.workload import model_presets

    return {
        "devices": {n: d.description for n, d in device_presets().items()},
        "links": {n: l.description for n, l in link_presets().items()},
        "switches": {n: s.description for n, s in switch_presets().items()},
        "topologies": {n: t.description for n, t in topology_presets().items()},
        "models": {n: m.description for n, m in model_presets().items()},
    }


def run(args) -> int:
    for section, entries in preset_sections().items():
        if args.kind and section != args.kind:
            continue
        print(f"{section}:")
        width = max((len(n) for n in entries), default=0)
        for name, text in entries.items():
            print(f"  {name:<{width}}  {text}")
        print()
    return 0
