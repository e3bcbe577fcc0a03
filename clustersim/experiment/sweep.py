"""Expand an experiment's ``sweep`` into scenarios, every one validated before anything runs.

Three kinds of sweep, each mapping dotted keys into the experiment to values:

- ``grid``: the cartesian product of its lists (the last key varies fastest);
- ``zip``: parallel lists of equal length, taken row by row;
- ``cases``: an explicit list of scenarios, each a mapping of dotted keys to values (and an
  optional ``label`` naming the case: it fills the ``case`` column).

They combine as a product too: every case × every zip row × every grid point (grid innermost).
A key may appear in only one kind, and no swept key may lie inside another
(``model`` and ``model.layers``). A swept value replaces what the base file has at that key;
everything else comes from the base file. Keys reach anywhere under ``cluster``, ``model``,
``training`` and ``simulation``; under a free-form mapping such as ``cluster.overrides`` the
rest of the key stays one dotted key (``cluster.overrides.scale_out.bandwidth`` sets the
override ``scale_out.bandwidth``). Values may carry units ("50 GB/s"): they are read by the
same schema as the base file.

A base file that is wrong (schema errors, unknown swept keys, zip lists of unequal lengths)
raises :class:`~clustersim.errors.InputErrors` listing every problem. A scenario whose values
are wrong becomes an :class:`InvalidScenario` (a row with status ``error`` and the located
message) while the others run; only if no scenario is valid is that an InputErrors too.

>>> from clustersim.config.yamlio import load_yaml
>>> doc = load_yaml('''
... name: demo
... cluster: {topology: dgx-h100, devices: 64}
... model: llama3-8b
... training: {global_batch: 64, parallelism: {tp: 8}}
... sweep:
...   grid:
...     training.parallelism.tp: [2, 4, 0]
...     cluster.overrides.scale_out.bandwidth: [25 GB/s, 50 GB/s]
... ''', "demo.yaml")
>>> sweep = expand(doc)
>>> len(sweep.scenarios), len(sweep.invalid)
(4, 2)
>>> first = sweep.scenarios[0]
>>> first.name, first.config.training.parallelism.tp, first.config.cluster.overrides
('demo/0000 tp=2 bandwidth=25GB/s', 2, {'scale_out.bandwidth': '25 GB/s'})
>>> print(sweep.invalid[0].error)
demo.yaml:8:37: training.parallelism.tp: Input should be greater than 0 (got 0) \
[scenario demo/0004 tp=0 bandwidth=25GB/s]
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from clustersim.config.experiment import ExperimentConfig
from clustersim.config.validation import validate
from clustersim.config.yamlio import YamlDocument
from clustersim.errors import InputError, InputErrors, closest
from clustersim.experiment import scenario as _scenario_module
from clustersim.experiment.scenario import Scenario

__all__ = ["SWEEPABLE", "MAX_SCENARIOS", "InvalidScenario", "Expansion", "expand", "key_path"]

# A case may carry ``label: text``: it names the scenario and fills the ``case`` column.
# Scenarios one run expands (each holds a validated config in memory): a million is hours of
# flow runs and about a gigabyte; a larger sweep is split, or the cap raised on purpose.
MAX_SCENARIOS = 1_000_000
CASE_LABEL = "label"
CASE_COLUMN = "case"

SWEEPABLE = ("cluster", "model", "training", "simulation", "placement", "jobs")
_SUFFIX_CHARS = 48  # scenario names stay readable in a table


@dataclass(frozen=True)
class InvalidScenario:
    """A point of the sweep whose values do not make a valid experiment."""

    index: int
    name: str
    swept: dict[str, Any]
    error: str                      # located message(s), one per line
    data: dict[str, Any] = field(repr=False)  # the raw experiment it would have run


@dataclass(frozen=True)
class Expansion:
    """Every point of a sweep, in index order: valid scenarios and invalid ones apart."""

    base: ExperimentConfig
    swept_keys: tuple[str, ...]
    scenarios: tuple[Scenario, ...]
    invalid: tuple[InvalidScenario, ...]

    @property
    def size(self) -> int:
        """How many points the sweep has, valid or not."""
        return len(self.scenarios) + len(self.invalid)


@dataclass(frozen=True)
class _Override:
    key: str                # dotted, as written
    path: tuple[str, ...]   # into the raw data
    value: Any
    source: tuple           # where the value sits in the document


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _submodel(arg)
            if found:
                return found
    return None


def _list_item(annotation: Any) -> type[BaseModel] | None:
    """The model of a list-of-models field (``jobs``), whose entries a key names by index."""
    if typing.get_origin(annotation) is list:
        return _submodel(typing.get_args(annotation)[0])
    return None


def _is_mapping(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_mapping(a) for a in typing.get_args(annotation))
    return typing.get_origin(annotation) is dict or annotation is dict


def key_path(key: str) -> tuple[str, ...]:
    """The path into the experiment's data that a dotted sweep key names.

    Under a free-form mapping (``cluster.overrides``) the rest stays one dotted key.

    >>> key_path("cluster.overrides.scale_out.bandwidth")
    ('cluster', 'overrides', 'scale_out.bandwidth')
    >>> key_path("jobs.0.placement.stride")
    ('jobs', 0, 'placement', 'stride')
    >>> key_path("training.parallelism.tq")
    Traceback (most recent call last):
    ...
    clustersim.errors.InputError: unknown key 'tq' in training.parallelism; did you mean 'tp'?
    """
    parts = str(key).split(".")
    if parts[0] not in SWEEPABLE:
        raise InputError(f"cannot sweep {key!r}: swept keys start with one of "
                         f"{', '.join(SWEEPABLE)}")
    model: type[BaseModel] = ExperimentConfig
    path: list = []
    i = 0
    while i < len(parts):
        part = parts[i]
        fields = model.model_fields
        if part not in fields:
            near = closest(part, fields)
            hint = ("did you mean " + " or ".join(repr(n) for n in near) + "?") if near \
                else "allowed: " + ", ".join(fields)
            where = f" in {'.'.join(map(str, path))}" if path else ""
            raise InputError(f"unknown key {part!r}{where}; {hint}")
        path.append(part)
        annotation = fields[part].annotation
        rest = parts[i + 1:]
        item = _list_item(annotation)
        if item is not None and rest and rest[0].isdigit():   # jobs.0.placement: an entry
            path.append(int(rest[0]))
            model, i = item, i + 2
            continue
        sub = _submodel(annotation)
        i += 1
        if sub is not None:
            model = sub
            continue
        if not rest:
            break
        if _is_mapping(annotation):
            return (*path, ".".join(rest))
        raise InputError(f"{'.'.join(map(str, path))} is a single value; it has no key "
                         f"{rest[0]!r}")
    return tuple(path)


def _set(data: dict, path: tuple[str, ...], value: Any) -> None:
    """Set ``data[path] = value``, creating sections; a model given by name becomes a mapping."""
    node = data
    for i, part in enumerate(path[:-1]):
        if isinstance(part, int):   # an entry of a list (jobs.0)
            if not isinstance(node, list) or part >= len(node):
                raise InputError(f"cannot set {'.'.join(map(str, path))}: "
                                 f"{'.'.join(map(str, path[:i]))} has no entry {part}")
            node = node[part]
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str) and part == "model":
            child = node[part] = {"preset": child}  # `model: llama3-8b` is a preset name
        elif not isinstance(child, (dict, list)):
            raise InputError(f"cannot set {'.'.join(map(str, path))}: "
                             f"{'.'.join(map(str, path[:i + 1]))} is "
                             f"{child!r}, not a section")
        node = child
    node[path[-1]] = copy.deepcopy(value)


def _get(data: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in raw or dumped experiment data, None where there is none."""
    for part in path:
        if isinstance(data, str) and part == "preset":
            return data
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
            continue
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _short(value: Any) -> str:
    text = str(value) if not isinstance(value, (dict, list)) else (
        "[" + ",".join(_short(v) for v in value) + "]" if isinstance(value, list) else "{...}")
    return text.replace(" ", "")


def _scenario_name(experiment: str, index: int, overrides: list[_Override]) -> str:
    name = f"{experiment}/{index:04d}"
    label = next((o for o in overrides if o.key == CASE_COLUMN), None)
    if label is not None:  # a labelled case names itself instead of listing its keys
        overrides = [o for o in overrides if o.source[:3] != label.source[:3]]
    parts = ([str(label.value)] if label is not None else []) + [
        f"{o.key.rsplit('.', 1)[-1]}={_short(o.value)}" for o in overrides]
    suffix = " ".join(parts)
    if len(suffix) > _SUFFIX_CHARS:
        suffix = suffix[:_SUFFIX_CHARS - 3] + "..."
    return f"{name} {suffix}" if suffix else name


def _too_many(doc: YamlDocument, count: int, cap: int) -> InputError:
    return doc.error(("sweep",), f"the sweep declares {count:,} scenarios, more than the "
                                 f"{cap:,} one run takes; split it, or raise the cap with "
                                 f"--max-scenarios")


def _overlaps(doc: YamlDocument, paths: dict[str, tuple[str, ...]]) -> list[InputError]:
    """One error per pair of swept keys of which one lies inside the other."""
    return [doc.error(("sweep",), f"swept keys {a!r} and {b!r} overlap: {b!r} lies inside "
                                  f"{a!r}; sweep one of them")
            for a, b in itertools.permutations(paths, 2)
            if len(paths[a]) < len(paths[b]) and paths[b][:len(paths[a])] == paths[a]]


def _parse_sweep(doc: YamlDocument, sweep: dict, max_scenarios: int = MAX_SCENARIOS
                 ) -> tuple[list, list[str], list[InputError]]:
    """The sweep as a list of factors (each a list of override lists), and its keys; more
    than ``max_scenarios`` points is an error before any is built."""
    errors: list[InputError] = []
    paths: dict[str, tuple[str, ...]] = {}
    kind_of_key: dict[str, str] = {}

    def resolve(key: str, kind: str, loc: tuple) -> tuple[str, ...] | None:
        if key in kind_of_key and kind_of_key[key] != kind:
            errors.append(doc.error(loc, f"{key!r} is swept in both sweep.{kind_of_key[key]} "
                                         f"and sweep.{kind}; sweep each key in one place"))
            return None
        kind_of_key.setdefault(key, kind)
        if key not in paths:
            try:
                paths[key] = key_path(key)
            except InputError as exc:
                errors.append(doc.error(loc, f"sweep.{kind}: {exc.message}"))
                return None
        return paths[key]

    grid = sweep.get("grid") or {}
    grid_factors = []
    for key, values in grid.items():
        loc = ("sweep", "grid", key)
        path = resolve(key, "grid", loc)
        if not values:
            errors.append(doc.error(loc, f"sweep.grid.{key}: give at least one value"))
        if path is not None:
            grid_factors.append([[_Override(key, path, v, loc + (i,))]
                                 for i, v in enumerate(values)])

    zipped = sweep.get("zip") or {}
    zip_rows: list[list[_Override]] = []
    if zipped:
        lengths = {key: len(values) for key, values in zipped.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            errors.append(doc.error(("sweep", "zip"), "sweep.zip lists must have equal "
                                                      f"lengths; got {listed}"))
        columns = []
        for key, values in zipped.items():
            loc = ("sweep", "zip", key)
            path = resolve(key, "zip", loc)
            if path is not None:
                columns.append([_Override(key, path, v, loc + (i,))
                                for i, v in enumerate(values)])
        zip_rows = [list(row) for row in zip(*columns)]

    cases = sweep.get("cases") or []
    case_rows: list[list[_Override]] = []
    labelled = False
    for j, case in enumerate(cases):
        row = []
        for key, value in case.items():
            loc = ("sweep", "cases", j, key)
            if key == CASE_LABEL:  # names the case; changes nothing in the experiment
                row.append(_Override(CASE_COLUMN, (), value, loc))
                labelled = True
                continue
            path = resolve(key, "cases", loc)
            if path is not None:
                row.append(_Override(key, path, value, loc))
        case_rows.append(row)

    errors += _overlaps(doc, paths)
    keys = [k for kind in ("grid", "zip", "cases") for k in paths if kind_of_key[k] == kind]
    if labelled:
        keys.insert(0, CASE_COLUMN)
    count = math.prod(len(f) for f in grid_factors) * len(zip_rows or [[]]) * len(
        case_rows or [[]])
    if count > max_scenarios:   # counted before anything is expanded
        return [], keys, errors + [_too_many(doc, count, max_scenarios)]
    factors = [case_rows or [[]], zip_rows or [[]],
               [list(itertools.chain.from_iterable(p)) for p in
                itertools.product(*grid_factors)]]
    return factors, keys, errors


def _scenario_document(doc: YamlDocument, data: dict,
                       overrides: list[_Override]) -> YamlDocument:
    """The scenario's data with positions pointing at the sweep values that changed it."""
    positions = dict(doc.positions)
    for o in overrides:
        for loc in [p for p in positions if p[:len(o.path)] == o.path]:
            del positions[loc]
        for loc, where in doc.positions.items():  # inside a mapping given as the value
            if loc[:len(o.source)] == o.source:
                positions[o.path + loc[len(o.source):]] = where
        # an error on a section that holds a swept value is most likely caused by it
        for depth in range(1, len(o.path)):
            positions[o.path[:depth]] = doc.positions.get(o.source, (None, None))
    return YamlDocument(data, doc.file, positions)


def _quotes(message: str, value: Any) -> bool:
    """Whether an error message names ``value`` (a name in quotes, a number as a word)."""
    if isinstance(value, str):
        return repr(value) in message or f'"{value}"' in message
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", message) is not None
    return False


def _leaves(data: Any, loc: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, loc + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _leaves(value, loc + (i,))
    else:
        yield loc, data


def _located_check_error(exc: InputError, doc: YamlDocument,
                         overrides: list[_Override]) -> InputError:
    """check_scenario names no position: point at the value the message quotes, swept first."""
    if exc.line is not None:
        return exc
    at = getattr(exc, "at", ())
    if at:   # the key it names: at the sweep value that set it, else in the base file
        for o in overrides:
            if o.path and (o.path[:len(at)] == at or at[:len(o.path)] == o.path):
                return exc.located(*doc.where(o.source))
        return exc.located(*doc.where(at))
    for o in overrides:
        if _quotes(exc.message, o.value):
            return exc.located(*doc.where(o.source))
    for loc, value in _leaves({k: v for k, v in doc.data.items() if k != "sweep"}):
        if isinstance(value, str) and _quotes(exc.message, value):
            return exc.located(*doc.where(loc))
    return exc.located(doc.file)


def _validated(doc: YamlDocument, data: dict, overrides: list[_Override]
               ) -> tuple[ExperimentConfig | None, list[InputError]]:
    """Apply the overrides to ``data`` (in place) and validate it; errors point at the sweep."""
    for o in overrides:
        if not o.path:
            continue  # a case label
        try:
            _set(data, o.path, o.value)
        except InputError as exc:
            return None, [exc.located(*doc.where(o.source))]
    try:
        return validate(ExperimentConfig, _scenario_document(doc, data, overrides)), []
    except InputErrors as exc:
        return None, exc.errors


def expand(doc: YamlDocument, max_scenarios: int = MAX_SCENARIOS) -> Expansion:
    """Every scenario of the experiment in ``doc``, validated; see the module docstring."""
    base = validate(ExperimentConfig, doc)
    raw_sweep = doc.data.get("sweep") or {}
    factors, keys, errors = _parse_sweep(doc, raw_sweep, max_scenarios)
    if errors:
        raise InputErrors(errors)

    base_data = {k: v for k, v in doc.data.items() if k != "sweep"}
    check = _scenario_module.check_scenario  # looked up now, so tests can replace it
    checking = True
    scenarios: list[Scenario] = []
    invalid: list[InvalidScenario] = []
    seen: dict[tuple, list[str]] = {}  # each distinct problem -> the scenarios that have it
    for index, combo in enumerate(itertools.product(*factors)):
        overrides = [o for part in reversed(combo) for o in part]  # grid, zip, case
        by_key = {o.key: o.value for o in overrides}
        swept = {k: by_key[k] if k in by_key else
                 "" if k == CASE_COLUMN else _get(base_data, key_path(k)) for k in keys}
        name = _scenario_name(base.name, index, overrides)
        data = copy.deepcopy(base_data)
        config, problems = _validated(doc, data, overrides)
        if config is not None and checking:
            try:
                check(config)
            except NotImplementedError:
                checking = False  # no resolver yet: schema checks only
            except InputErrors as exc:
                problems = [_located_check_error(e, doc, overrides) for e in exc.errors]
            except InputError as exc:
                problems = [_located_check_error(exc, doc, overrides)]
        if problems:
            for problem in problems:
                seen.setdefault((problem.message, problem.file, problem.line, problem.col),
                                []).append(name)
            message = "\n".join(f"{p} [scenario {name}]" for p in problems)
            invalid.append(InvalidScenario(index, name, swept, message, data))
        else:
            for key in keys:  # a key this point does not set: the value it actually runs with
                if key not in by_key and key != CASE_COLUMN:
                    swept[key] = _get(config.model_dump(mode="json"), key_path(key))
            scenarios.append(Scenario(index=index, name=name, config=config, swept=swept))
    if not scenarios:  # nothing to run: the file is wrong; say each problem once
        raise InputErrors(
            InputError(f"{message} [{len(names)} scenarios]" if len(names) > 1 else
                       f"{message} [scenario {names[0]}]", file, line, col)
            for (message, file, line, col), names in seen.items())
    return Expansion(base, tuple(keys), tuple(scenarios), tuple(invalid))
