"""Load YAML safely, remembering where every value came from.

PyYAML follows YAML 1.1, whose implicit types surprise people: ``1e9`` is a string, ``off`` and
``no`` are booleans, ``1:30`` is the sexagesimal integer 90. We compose the node tree with the
safe loader and resolve plain scalars ourselves by the YAML 1.2 core schema instead, so ``1e9``
is a float, ``off`` and ``1:30`` are strings, and only ``true``/``false`` are booleans (pydantic
still accepts ``off`` for a boolean field). Every mapping value keeps its ``(line, col)``, so a
validation error can point at the file position.

>>> doc = load_yaml("a:\\n  b: 1e9\\n  c: off\\n  d: 1:30\\n", "x.yaml")
>>> doc.data
{'a': {'b': 1000000000.0, 'c': 'off', 'd': '1:30'}}
>>> doc.where(("a", "c"))
('x.yaml', 3, 3)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clustersim.errors import InputError

__all__ = ["YamlDocument", "load_yaml", "load_yaml_file"]

Location = tuple  # a path of keys / indices into the document

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
         "FALSE": False}
_INT = re.compile(r"^[-+]?(?:[0-9][0-9_]*|0x[0-9a-fA-F]+|0o[0-7]+)$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$")
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)  # PyYAML built without libyaml has none
_SPECIAL_FLOAT = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"),
                  ".nan": float("nan"), ".Inf": float("inf"), ".NaN": float("nan")}


@dataclass
class YamlDocument:
    """Plain data plus the position of every value, keyed by its path in the data."""

    data: Any
    file: str
    positions: dict[Location, tuple[int, int]] = field(default_factory=dict)

    def where(self, loc: Location) -> tuple[str, int | None, int | None]:
        """``(file, line, col)`` of the deepest known prefix of ``loc`` (1-based)."""
        loc = tuple(loc)
        while loc:
            if loc in self.positions:
                return (self.file, *self.positions[loc])
            loc = loc[:-1]
        return (self.file, *self.positions.get((), (None, None)))

    def error(self, loc: Location, message: str) -> InputError:
        """An InputError located at ``loc``."""
        return InputError(message, *self.where(loc))


def _scalar(node: yaml.ScalarNode) -> Any:
    value = node.value
    if node.style or node.tag not in ("tag:yaml.org,2002:str",
                                                  "tag:yaml.org,2002:int",
                                                  "tag:yaml.org,2002:float",
                                                  "tag:yaml.org,2002:bool",
                                                  "tag:yaml.org,2002:null",
                                                  "tag:yaml.org,2002:timestamp",
                                                  "tag:yaml.org,2002:value"):
        return value  # quoted, or explicitly tagged: keep the text as written
    if _NULL.match(value):
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT.match(value):
        return int(value.replace("_", ""), 0) if not re.match(r"^[-+]?0[0-9]", value) \
            else int(value.replace("_", ""), 10)
    if _FLOAT.match(value):
        return float(value.replace("_", ""))
    if value in _SPECIAL_FLOAT:
        return _SPECIAL_FLOAT[value]
    return value


# Values a document may expand to: aliases share nodes, so a few lines of anchors that repeat
# anchors ("billion laughs") expand exponentially; an experiment file holds a few hundred.
MAX_VALUES = 1_000_000


def _construct(node: yaml.Node, loc: Location, doc: YamlDocument, budget: list) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise InputError(f"the document expands to more than {MAX_VALUES:,} values (aliases "
                         f"that repeat aliases?); write the values out or split the file",
                         doc.file, node.start_mark.line + 1, node.start_mark.column + 1)
    doc.positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, loc + (i,), doc, budget)
                for i, child in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged = _construct(value_node, loc, doc, budget)
                for part in merged if isinstance(merged, list) else [merged]:
                    for k, v in part.items():
                        out.setdefault(k, v)
                continue
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or isinstance(key, (list, dict)):
                raise InputError("mapping keys must be plain names", doc.file,
                                 key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                raise InputError(f"key {key!r} appears twice in the same mapping", doc.file,
                                 key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _construct(value_node, loc + (key,), doc, budget)
            # a key's own position is a better place to point than its value's
            doc.positions[loc + (key,)] = (key_node.start_mark.line + 1,
                                           key_node.start_mark.column + 1)
        return out
    raise InputError(f"unsupported YAML node {node.tag}", doc.file)


def _compose(text: str) -> yaml.Node | None:
    """The node tree, by libyaml when PyYAML has it (the ~1,500 catalog lines every run reads:
    0.015 s against 0.2 s); a document it refuses is parsed again by the pure-Python parser,
    whose error messages are the ones we word ours from."""
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass  # the Python parser below raises the error we report
    return yaml.compose(text, Loader=yaml.SafeLoader)


def load_yaml(text: str, file: str = "<string>") -> YamlDocument:
    """Parse YAML text into a :class:`YamlDocument`; syntax errors become InputError."""
    doc = YamlDocument(None, file)
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
        if exc.context_mark and ("stream end" in str(exc.problem)
                                 or "flow" in str(exc.context)):
            # an unclosed bracket or quote: point where it opened, not where parsing gave up
            mark = exc.context_mark
            opened = str(exc.context).replace("while parsing ", "").replace("while scanning ", "")
            where = exc.problem_mark.line + 1 if exc.problem_mark else None
            problem = (f"{opened} opened here is never closed ({problem}"
                       + (f" on line {where})" if where else ")"))
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise InputError(f"malformed YAML: {problem}; check indentation, colons and quotes",
                         file, line, col) from None
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML: {exc}", file) from None
    doc.data = {} if node is None else _construct(node, (), doc, [MAX_VALUES])
    return doc


def load_yaml_file(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; a missing file is an InputError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise InputError(f"cannot read {path}: {exc.__class__.__name__}") from None
    return load_yaml(text, str(path))
