"""Write refitted values into the catalog's YAML files without touching anything else in
them: comments, order and every other value stay as written (ruamel.yaml round trip).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
>>> _ = path.write_text("h100:  # a family\\n  training_efficiency: 0.80   # fitted\\n")
>>> write_values(path, {("h100", "training_efficiency"): 0.8104})
>>> print(path.read_text(), end="")
h100:  # a family
  training_efficiency: 0.8104 # fitted
"""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

__all__ = ["write_values", "rounded"]


def rounded(value: float, digits: int = 4):
    """``value`` to ``digits`` significant figures (what the files carry), an int when whole.

    >>> rounded(0.810369), rounded(1131.685)
    (0.8104, 1132)
    """
    value = float(f"{value:.{digits}g}")
    return int(value) if value.is_integer() else value


def _flow(value):
    """Lists stay on one line, as the files write them."""
    if isinstance(value, list):
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()
        return seq
    return value


def write_values(path: str | Path, updates: dict[tuple, object]) -> None:
    """Set each ``(key, key, ...) -> value`` of ``updates`` in the YAML file at ``path``."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096   # keep long flow lists (fitted_on) on one line as they are written
    path = Path(path)
    with path.open() as f:
        doc = yaml.load(f)
    for keys, value in updates.items():
        node = doc
        for key in keys[:-1]:
            node = node[key]
        if keys[-1] not in node:
            raise KeyError(f"{path.name}: {'.'.join(map(str, keys))} is not in the file; "
                           "add it (with its source) before a fit may write it")
        node[keys[-1]] = _flow(value)
    with path.open("w") as f:
        yaml.dump(doc, f)
