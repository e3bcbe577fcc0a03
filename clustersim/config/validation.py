"""Validate loaded YAML against pydantic models and report errors as ``file:line:col: ...``.

Every pydantic error becomes one :class:`~clustersim.errors.InputError` that names the dotted
key, what was wrong and what is allowed (the closest key names for a typo).

>>> from pydantic import BaseModel, ConfigDict
>>> class Plan(BaseModel):
...     model_config = ConfigDict(extra="forbid")
...     tp: int = 1
>>> from clustersim.config.yamlio import load_yaml
>>> try:
...     validate(Plan, load_yaml("tq: 2\\n", "p.yaml"))
... except InputErrors as e:
...     print(e)
p.yaml:1:1: unknown key 'tq'; did you mean 'tp'? (allowed: tp)
"""

from __future__ import annotations

import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from clustersim.config.yamlio import YamlDocument
from clustersim.errors import InputError, InputErrors, closest

__all__ = ["StrictModel", "validate", "dotted", "allowed_keys", "nested_model"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def dotted(loc: tuple) -> str:
    """``('training', 'parallelism', 'tp')`` -> ``'training.parallelism.tp'``."""
    return ".".join(str(p) for p in loc if not isinstance(p, int)) or "<top level>"


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field annotation holds (``Params | None`` -> ``Params``), if any.

    >>> nested_model(StrictModel | None) is StrictModel, nested_model(int)
    (True, None)
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = nested_model(arg)
            if found:
                return found
    if typing.get_origin(annotation) is typing.Annotated:
        return nested_model(typing.get_args(annotation)[0])
    return None


def _fields_by_key(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key a user writes (the alias when there is one)."""
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys allowed in the mapping at ``loc`` inside ``model`` (None if not a model)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        fields = _fields_by_key(current)
        info = fields.get(part) or current.model_fields.get(part)
        if info is None:
            continue  # a union tag pydantic put in the path
        current = nested_model(info.annotation)
    return list(_fields_by_key(current)) if current is not None else None


def _message(model: type[BaseModel], err: dict) -> str:
    loc, kind, msg = tuple(err["loc"]), err["type"], err["msg"]
    where = dotted(loc)
    if kind == "extra_forbidden":
        key = loc[-1]
        allowed = allowed_keys(model, loc[:-1]) or []
        near = closest(str(key), allowed)
        hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        parent = f" in {dotted(loc[:-1])}" if loc[:-1] else ""
        return f"unknown key {key!r}{parent}{hint} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return f"missing required key {where!r}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, "):]
    got = err.get("input")
    if kind in ("value_error", "assertion_error"):
        return f"{where}: {msg}"
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return f"{where}: {msg} (got {shown})"


def _without_implied_missing(model: type[BaseModel], errors: list[dict]) -> list[dict]:
    """Drop "missing key k" when an unknown key beside it looks like a misspelt k: the
    unknown-key error already says "did you mean k?", and one problem is one line."""
    suggested = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = tuple(err["loc"])
            for name in closest(str(loc[-1]), allowed_keys(model, loc[:-1]) or [], n=1):
                suggested.add(loc[:-1] + (name,))
    return [e for e in errors if not (e["type"] == "missing" and tuple(e["loc"]) in suggested)]


def validate(model: type[M], doc: YamlDocument | Any, prefix: tuple = (),
             file: str | None = None) -> M:
    """Build ``model`` from a YamlDocument (or plain data); raise InputErrors with positions.

    ``prefix`` is where the data sits inside the document, so nested parts can be validated
    alone and still point at the right line.
    """
    data = doc.data if isinstance(doc, YamlDocument) else doc
    for part in prefix:
        data = data[part]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in _without_implied_missing(model, exc.errors(include_url=False)):
            loc = prefix + tuple(err["loc"])
            message = _message(model, {**err, "loc": tuple(err["loc"])})
            if prefix and not message.startswith(dotted(loc)) and message.startswith(
                    dotted(tuple(err["loc"]))):
                message = dotted(prefix) + "." + message
            if isinstance(doc, YamlDocument):
                errors.append(InputError(message, *doc.where(loc)))
            else:
                errors.append(InputError(message, file))
        raise InputErrors(errors) from None
