"""Topology build speed: the 4,096-chip TPU v4 pod (target < 1 s) and a 16,384-GPU DGX H100
fat-tree (target < 3 s), graph and Cluster (LinkTable + Router) timed separately and together.

Each case runs in fresh interpreters (best of 3) after the imports (so the first call also reads and
validates the preset YAML, as a user's first call does), then again under tracemalloc for the
peak of Python allocations. No numba kernel is involved in building.

Run: ``python benchmarks/bench_topology.py``
"""

from __future__ import annotations

from _harness import (Timer, case_main, fmt_mb, fmt_s, machine_note,
                      run_best, run_case, verdict)

CASES = {  # name: (preset, devices, target seconds for graph + Cluster)
    "tpu-v4-pod": ("tpu-v4-pod", 4096, 1.0),
    "dgx-h100": ("dgx-h100", 16384, 3.0),
}


def build(name: str) -> dict:
    from clustersim.topology import build_graph
    from clustersim.network.cluster import Cluster

    preset, devices, _ = CASES[name]
    with Timer() as graph_t:
        G, params = build_graph(preset, devices)
    with Timer() as cluster_t:
        cluster = Cluster.from_graph(G, params=params.model_dump())
    return {"graph_s": graph_t.s, "cluster_s": cluster_t.s, "devices": len(cluster.devices),
            "nodes": G.number_of_nodes(), "edges": G.number_of_edges(),
            "links": len(cluster.links)}


def main() -> None:
    script = __file__
    print(machine_note())
    print(f"{'figure':58s} {'measured':>12s}  target")
    for name, (preset, devices, target) in CASES.items():
        r = run_best(script, name, key=lambda r: r["graph_s"] + r["cluster_s"])
        if "error" in r:
            print(f"{preset} x{devices}: {r['error']}")
            continue
        traced = run_case(script, name, traced=True)
        total = r["graph_s"] + r["cluster_s"]
        print(f"{preset} x{devices:,}, best of {r['runs']} processes")
        print(f"{'  graph (build_graph)':58s} {fmt_s(r['graph_s']):>12s}")
        print(f"{'  Cluster.from_graph (LinkTable, Router)':58s} {fmt_s(r['cluster_s']):>12s}")
        print(f"{'  together':58s} {fmt_s(total):>12s}  < {target:g} s "
              f"{verdict(total, target)}")
        print(f"{'  peak RSS of the process':58s} {fmt_mb(r['maxrss_B']):>12s}")
        if "tracemalloc_peak_B" in traced:
            print(f"{'  peak Python allocations (tracemalloc)':58s} "
                  f"{fmt_mb(traced['tracemalloc_peak_B']):>12s}")
        print(f"{'  size':58s} {r['nodes']:,} nodes, {r['edges']:,} directed edges, "
              f"{r['links']:,} link resources")


if __name__ == "__main__":
    if not case_main({name: (lambda name=name: build(name)) for name in CASES}):
        main()
