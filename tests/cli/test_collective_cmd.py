"""``clustersim collective`` through the real entry point."""

from __future__ import annotations

import pandas as pd
import pytest

from clustersim.cli.main import main


def test_prints_an_nccl_tests_table(capsys, tmp_path):
    out_csv = tmp_path / "ar.csv"
    code = main(["collective", "--topology", "dgx-h100", "--devices", "8", "--op", "all_reduce",
                 "--sizes", "1KiB:8GiB", "--csv", str(out_csv)])
    assert code == 0
    text = capsys.readouterr().out
    assert "busbw_GBps" in text and "algorithm" in text
    table = pd.read_csv(out_csv)
    assert list(table.columns) == ["size_bytes", "time_us", "algbw_GBps", "busbw_GBps",
                                   "algorithm"]
    assert table["size_bytes"].tolist() == [2**k for k in range(10, 34)]
    # busbw as nccl-tests defines it: algbw x 2(p-1)/p
    assert (table["busbw_GBps"] / table["algbw_GBps"]).round(9).eq(1.75).all()
    assert table["busbw_GBps"].iloc[-1] > 400


def test_comma_sizes_forced_algorithm_and_overrides(capsys):
    code = main(["collective", "--topology", "dgx-a100", "--devices", "16", "--op",
                 "all_gather", "--sizes", "1MiB,64MiB", "--algorithm", "ring",
                 "--set", "scale_out.nics_per_node=4"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and "ring/" in lines[-1]


@pytest.mark.parametrize("argv,message", [
    (["--op", "all_redce", "--sizes", "1KiB"], "did you mean 'all_reduce'"),
    (["--op", "all_reduce", "--sizes", "1KiB", "--algorithm", "nvls"], "valid for all_reduce"),
    (["--op", "all_reduce", "--sizes", "1KiB", "--ranks", "9"], "1 to 8 devices"),
    (["--op", "all_reduce", "--sizes", "1Kix:2GiB"], "cannot read"),
    (["--op", "all_reduce", "--sizes", "8GiB:1KiB"], "below the first"),
])
def test_bad_requests_exit_2_with_one_line(capsys, argv, message):
    code = main(["collective", "--topology", "dgx-a100", "--devices", "8", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1


def test_the_table_prints_and_writes_as_pandas_would(tmp_path):
    from clustersim.cli.collective_cmd import COLUMNS, _write_csv, format_rows
    from clustersim.network import build_cluster
    from clustersim.cli.collective_cmd import collective_rows, parse_sizes

    cluster = build_cluster("dgx-h100", 16, {})
    rows = collective_rows(cluster, cluster.devices, "all_reduce", parse_sizes("1:8GiB"))
    rows.append((0, 0.0, float("inf"), float("inf"), "none"))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    assert format_rows(rows, COLUMNS) == frame.to_string(
        index=False, float_format=lambda x: f"{x:.2f}")
    _write_csv(tmp_path / "a.csv", rows, COLUMNS)
    frame.to_csv(tmp_path / "b.csv", index=False)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
