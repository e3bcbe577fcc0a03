"""``clustersim topology show NAME [--devices N] [--set KEY=VALUE] [--png FILE]``.

Prints the devices, the nodes by kind, links by technology, injection bandwidth per device,
bisection bandwidth and diameter of a preset (or topology file) built at the requested size.
"""

from __future__ import annotations

import time

from clustersim.cli.overrides import add_set_argument, parse_sets
from clustersim.errors import InputError
from clustersim.units import format_quantity

HELP = "describe a topology preset: devices, links, injection and bisection bandwidth"

__all__ = ["HELP", "add_arguments", "run", "describe"]


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="build a topology and print what it offers")
    show.add_argument("name", help="a preset (see `clustersim presets`) or a topology YAML file")
    show.add_argument("--devices", type=int, default=None, help="number of devices (ranks)")
    add_set_argument(show)
    show.add_argument("--png", default=None, metavar="FILE", help="draw the graph to FILE")


def _bw(x: float) -> str:
    return format_quantity(x, "bandwidth")


def describe(cluster) -> str:
    """The text `topology show` prints."""
    # imported on use (numba, networkx): `clustersim --help` loads every subcommand module
    from clustersim.network.metrics import (bisection_bandwidth, diameter, injection_bandwidth,
                                             links_by_technology, nodes_by_kind)

    G = cluster.graph
    device = cluster.device
    lines = [f"{cluster.name}: {len(cluster.devices)} x {device.name} ({device.description})",
             f"  {G.graph.get('description', '')}", ""]
    kinds = nodes_by_kind(cluster)
    lines.append("nodes: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    lines.append("")
    lines.append(f"{'links by technology':<22}{'links':>9}{'per link':>14}{'total':>14}"
                 "   (bandwidth per direction)")
    for row in links_by_technology(cluster):
        lines.append(f"  {row['technology']:<20}{row['links']:>9}{_bw(row['bw_per_link_Bps']):>14}"
                     f"{_bw(row['total_bw_Bps']):>14}")
    lines.append("")
    lines.append("injection bandwidth per device (per direction):")
    for row in injection_bandwidth(cluster):
        via = f" via {row['via']}" if row["via"] != "-" else ""
        lines.append(f"  {row['level']:<10}{row['technology']:<16}{_bw(row['bw_Bps']):>12}{via}")
    lines.append("")
    lines.append(f"bisection bandwidth: {_bw(bisection_bandwidth(cluster))} per direction "
                 f"(half-shift permutation, max-min fair)")
    lines.append(f"diameter: {diameter(cluster)} links")
    return "\n".join(lines)


def run(args) -> int:
    # imported on use (networkx): `clustersim --help` loads every subcommand module
    from clustersim.network import build_cluster

    if args.devices is not None and args.devices < 1:
        raise InputError(f"--devices must be a positive integer, got {args.devices}")
    start = time.perf_counter()
    cluster = build_cluster(args.name, args.devices, parse_sets(args.set))
    built = time.perf_counter() - start
    print(describe(cluster))
    print(f"built in {built:.2f} s")
    if args.png:
        from clustersim.topology.draw import draw_topology  # pulls in matplotlib: only for --png
        draw_topology(cluster, args.png)
        print(f"wrote {args.png}")
    return 0
