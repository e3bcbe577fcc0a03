"""Draw a topology graph to PNG: nodes coloured by kind, edges by technology.

Big graphs are drawn around the first device only (at most ``max_nodes`` nodes, nearest first),
since a picture of 10,000 nodes shows nothing.
"""

from __future__ import annotations

from collections import deque

import networkx as nx

__all__ = ["draw_topology"]

_KIND_COLOURS = {"accelerator": "#4C72B0", "die": "#4C72B0", "memory": "#DD8452",
                 "switch": "#55A868", "nic": "#8172B3", "host": "#937860",
                 "cxl_memory": "#DA8BC3", "optical_switch": "#C44E52"}


def _neighbourhood(G: nx.DiGraph, start, max_nodes: int) -> list:
    seen, queue = {start}, deque([start])
    while queue and len(seen) < max_nodes:
        for n in G.successors(queue.popleft()):
            if n not in seen:
                seen.add(n)
                queue.append(n)
                if len(seen) >= max_nodes:
                    break
    return list(seen)


def _layout(H: nx.Graph) -> dict:
    """Kamada-Kawai for small graphs (it needs scipy, an optional dependency), else a seeded
    spring layout (numpy only below 500 nodes)."""
    if len(H) <= 120:
        try:
            return nx.kamada_kawai_layout(H)
        except ImportError:
            pass
    return nx.spring_layout(H, seed=0)


def draw_topology(cluster, path: str, max_nodes: int = 300) -> None:
    """Write a PNG picture of (the neighbourhood of the first device of) the cluster."""
    # matplotlib on use (~0.7 s to import): only `topology show --png` draws
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    G = cluster.graph
    nodes = list(G) if len(G) <= max_nodes else _neighbourhood(G, cluster.devices[0], max_nodes)
    H = G.subgraph(nodes).to_undirected(as_view=False)
    pos = _layout(H)
    techs = sorted({d["tech"] for _, _, d in H.edges(data=True)})
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(10, 8))
    for i, tech in enumerate(techs):
        edges = [(u, v) for u, v, d in H.edges(data=True) if d["tech"] == tech]
        nx.draw_networkx_edges(H, pos, edgelist=edges, edge_color=[cmap(i % 10)], ax=ax,
                               width=1.2, label=tech)
    for kind, colour in _KIND_COLOURS.items():
        members = [n for n in H if G.nodes[n]["kind"] == kind]
        if members:
            nx.draw_networkx_nodes(H, pos, nodelist=members, node_color=colour, node_size=40,
                                   ax=ax, label=kind)
    shown = "" if len(nodes) == len(G) else f" (nearest {len(nodes)} of {len(G)} nodes)"
    ax.set_title(f"{cluster.name}: {len(cluster.devices)} devices{shown}")
    ax.legend(loc="upper right", fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
