"""Typed records to and from JSON: one checker for every dataclass that crosses a boundary (the worker
protocol's messages, the queue's jobs).

:func:`from_json` builds a dataclass from a JSON object, checking each field against its annotation;
:func:`to_json` turns one back into plain JSON values. The annotations understood are the ones JSON can
carry: ``str``, ``int``, ``float`` (an int is fine), ``bool`` (never 0 or 1), ``None``, ``Literal`` of
strings, unions of these, ``tuple[X, ...]`` (a JSON list), ``dict[...]`` and TypedDicts (a JSON object;
its inside is the reader's business) and nested records. Standard library only.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

#: A JSON object of no fixed shape (a request, a memory plan) as it is read or written.
JsonObject = dict[str, Any]

T = TypeVar("T")


class _Mismatch(Exception):
    pass


def from_json(cls: type[T], doc: JsonObject) -> T:
    """A ``cls`` from ``doc``: every field checked against its annotation. ValueError names the first
    field that is missing or of the wrong type. Keys ``cls`` does not have are ignored."""
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in doc:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{f.name} is missing")
            continue
        try:
            values[f.name] = _convert(doc[f.name], hints[f.name])
        except _Mismatch:
            raise ValueError(f"{f.name} has the wrong type ({type(doc[f.name]).__name__}: "
                             f"{doc[f.name]!r:.60})") from None
    return cls(**values)


def to_json(record: object) -> JsonObject:
    """A record's fields as plain JSON values (nested records as objects, tuples as lists)."""
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)}  # type: ignore[arg-type]


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    return hints


def _convert(value: object, hint: Any) -> object:
    """``value`` as type ``hint``, else _Mismatch."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        for arm in get_args(hint):
            try:
                return _convert(value, arm)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if isinstance(value, str) and value in get_args(hint):
            return value
        raise _Mismatch
    if origin is tuple:
        item = get_args(hint)[0]
        if isinstance(value, list | tuple):
            return tuple(_convert(v, item) for v in value)
        raise _Mismatch
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _Mismatch
        try:
            return from_json(hint, value)  # type: ignore[arg-type]
        except ValueError:
            raise _Mismatch from None
    return _convert_plain(value, origin or hint)


def _convert_plain(value: object, kind: Any) -> object:
    if kind is type(None):
        ok = value is None
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        ok = False
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in (str, bool):
        ok = isinstance(value, kind)
    else:  # dict[...] and TypedDicts: a JSON object
        ok = isinstance(value, dict)
    if not ok:
        raise _Mismatch
    return value
