"""``clustersim collective --explain``: every candidate's time per size, and the winner is the
fastest of them."""

from __future__ import annotations

import numpy as np

from clustersim.cli.collective_cmd import explain_table
from clustersim.network import build_cluster


def test_explain_names_the_fastest_candidate():
    c = build_cluster("dgx-h100", 16)
    table = explain_table(c, c.devices, "all_reduce", [1024.0, 2.0**30])
    cols = [k for k in table.columns if k.endswith("_us")]
    assert {"ring/simple_us", "tree/ll_us"} <= set(cols)
    for _, row in table.iterrows():
        times = np.array([row[k] for k in cols])
        assert row["chosen"] == cols[int(times.argmin())][:-3]
        assert "faster than" in row["why"]


def test_explain_on_the_command_line(capsys):
    from clustersim.cli import main

    assert main(["collective", "--topology", "dgx-a100", "--devices", "8", "--op",
                 "all_gather", "--sizes", "1MiB", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "why" in out and "ring/simple_us" in out


def test_explain_nccl_says_when_nccl_leaves_time_on_the_table():
    c = build_cluster("dgx-a100", 16, {"scale_out.nics_per_node": 4})
    table = explain_table(c, c.devices, "all_reduce", [2.0**30], "nccl")
    row = table.iloc[0]
    assert row["chosen"] == "ring/simple"
    assert "NCCL's tuner believes" in row["why"]
