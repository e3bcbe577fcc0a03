"""libyaml (the fast path) and PyYAML's pure-Python parser read every YAML file of the
repository to the same data and the same positions, and a broken file is reported in the
Python parser's words whichever ran first."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clustersim.config import yamlio
from clustersim.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(p for p in ROOT.rglob("*.yaml") if ".git" not in p.parts)


def _read(text: str, loader, monkeypatch) -> yamlio.YamlDocument:
    monkeypatch.setattr(yamlio, "_FAST_LOADER", loader)
    return yamlio.load_yaml(text, "x.yaml")


@pytest.mark.skipif(yamlio._FAST_LOADER is None, reason="PyYAML without libyaml")
def test_both_parsers_give_the_same_documents(monkeypatch):
    assert len(FILES) > 20
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        fast, slow = _read(text, yaml.CSafeLoader, monkeypatch), _read(text, None, monkeypatch)
        assert fast.data == slow.data, path
        assert fast.positions == slow.positions, path


@pytest.mark.parametrize("text", ["a: [1, 2\nb: 3\n", "a:\n  b: 1\n c: 2\n", "a: 'open\n"])
def test_a_broken_file_reads_the_same_error_from_either_path(text, monkeypatch):
    messages = []
    for loader in (getattr(yaml, "CSafeLoader", None), None):
        monkeypatch.setattr(yamlio, "_FAST_LOADER", loader)
        with pytest.raises(InputError) as caught:
            yamlio.load_yaml(text, "x.yaml")
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
