"""`clustersim topology show`: what it prints, and its errors through the command line:
one line naming the file and line, exit code 2, no traceback."""

from __future__ import annotations

import re

import pytest

from clustersim.cli.main import main


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_clean_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_show_prints_devices_links_injection_bisection_and_diameter(capsys):
    code, out, _ = run(["topology", "show", "dgx-h100", "--devices", "16"], capsys)
    assert code == 0
    assert "16 x h100-sxm-80gb" in out
    assert re.search(r"nvlink4\s+288\s+25 GB/s", out)          # 16 GPUs x 18 links
    assert re.search(r"scaleup\s+nvlink4\s+450 GB/s", out)     # 18 x 25 GB/s per direction
    assert "bisection bandwidth:" in out and "diameter:" in out


def test_unknown_preset_suggests_the_closest(capsys):
    code, _, err = run(["topology", "show", "dgx-h10"], capsys)
    assert code == 2
    line = one_clean_line(err)
    assert "unknown topology preset 'dgx-h10'" in line and "dgx-h100" in line


def test_bad_unit_in_set_names_the_kind_expected(capsys):
    code, _, err = run(["topology", "show", "dgx-h100", "--set", "scale_out.bandwidth=9 GHz"],
                       capsys)
    assert code == 2
    line = one_clean_line(err)
    assert "frequency" in line and "bandwidth" in line and "scale_out.bandwidth" in line


def test_unknown_parameter_in_set_suggests_the_right_one(capsys):
    code, _, err = run(["topology", "show", "dgx-h100", "--set", "scale_out.bandwith=50 GB/s"],
                       capsys)
    assert code == 2
    line = one_clean_line(err)
    assert "bandwith" in line and "did you mean 'bandwidth'" in line


@pytest.mark.parametrize("text,line_no,words", [
    ("name: t\ndescription: d\nbuilder: gpu-cluster\ndevices: 8\nparams:\n  device: [h100\n",
     6, "malformed YAML"),
    ("name: t\ndescription: d\nbuilder: gpu-cluster\ndevices: 8\nparams:\n  devise: h100\n",
     6, "unknown key 'devise'"),
    ("name: t\ndescription: d\nbuilder: gpu-cluster\ndevices: 8\nparams:\n"
     "  scale_out: {bandwidth: 50 GHz}\n", 6, "frequency"),
])
def test_a_broken_topology_file_points_at_its_line(tmp_path, capsys, text, line_no, words):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    code, _, err = run(["topology", "show", str(path)], capsys)
    assert code == 2
    line = one_clean_line(err)
    assert re.search(rf"mine\.yaml:{line_no}:\d+", line), line
    assert words in line


def test_devices_that_do_not_fit_the_preset_are_bad_input(capsys):
    code, _, err = run(["topology", "show", "dgx-h100", "--devices", "12"], capsys)
    assert code == 2
    assert "12 devices" in one_clean_line(err)
