"""`clustersim presets` lists every kind of preset the contracts name, one line each."""

from __future__ import annotations

from clustersim.cli.main import main

REQUIRED = {
    "devices": ["a100-sxm-80gb", "h100-sxm-80gb", "h200", "b200", "tpu-v4", "tpu-v5p", "mi300x"],
    "topologies": ["dgx-a100", "dgx-h100", "gb200-nvl72", "tpu-v4-pod", "tpu-v5p-pod"],
    "models": ["gpt3-175b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3-405b", "palm-540b",
               "mixtral-8x7b"],
}


def test_presets_lists_every_required_name_with_a_description(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    sections = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            sections[current] = {}
        elif line.strip() and current:
            name, _, text = line.strip().partition("  ")
            sections[current][name] = text.strip()
    assert set(sections) >= {"devices", "links", "switches", "topologies", "models"}
    for kind, names in REQUIRED.items():
        for name in names:
            assert sections[kind].get(name), (kind, name)


def test_one_kind_only(capsys):
    assert main(["presets", "--kind", "models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("models:") and "devices:" not in out
