"""JSON that gives another program's values back exactly (library.json is shared).

vidtray reads the whole library into Python and writes it again, so a value it does not own must survive
that round trip: a foreign ``1e400`` must not come back as ``null``, ``1.50`` not as ``1.5``, ``-0`` not
as ``0``, ``NaN`` not as ``null``, ``12345678901234567890`` and a lone ``\\ud83c`` must come back at all.

* ``loads``: the stdlib parser; every number whose text a writer would not reproduce becomes a
  ``RawFloat``/``RawInt``: still a float/int for vidtray's code, carrying the text it was written as.
* ``dumps``: orjson (a 50,000-item library in ~0.1 s), indented by 2 as ``JSON.stringify(doc, null, 2)``
  writes it, raw numbers written as their text. What orjson refuses (integers beyond 64 bits, lone
  surrogates, nesting deeper than 254) is written by a small encoder of the same style, one value at a
  time, without recursion.
* ``salvage``: the top-level members and items that still decode in a damaged or too-deep document.

What "exact" means: every number keeps its spelling, every string its characters (a lone surrogate is
written as a lower-case ``\\udxxx`` escape); whitespace and the escapes inside strings follow one canonical
style (2-space indent, UTF-8, ``json.dumps(ensure_ascii=False)``'s escapes). A document already in that
style is written back byte for byte; another style keeps every value and changes only its layout.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson

T = TypeVar("T")

_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_SUBCLASS
#: A ``-0`` token (an integer the stdlib reads as 0). Rare, so the int hook runs only when one may be there.
_NEG_ZERO = re.compile(rb"-0[\s,\]}]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WS = re.compile(r"[ \t\n\r]*")
#: Strings (skipped whole) and brackets: enough to find where a value that cannot be decoded ends.
_SKIP = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class RawFloat(float):
    """A number from the file whose text no writer would give back (``1e400``, ``1.50``, ``NaN``, ``1E5``).

    Its value is what the stdlib reads (``1e400`` is inf); ``text`` is what the file said, written back as is.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, value: float, text: str) -> RawFloat:
        self = super().__new__(cls, value)
        self.text = text
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (float(self), self.text))

    def __copy__(self) -> RawFloat:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> RawFloat:
        return self

    def __repr__(self) -> str:
        return self.text


class RawInt(int):
    """An integer whose text the stdlib loses (``-0``); ``text`` is written back."""

    text: str

    def __new__(cls, value: int, text: str) -> RawInt:
        self = super().__new__(cls, value)
        self.text = text
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (int(self), self.text))

    def __copy__(self) -> RawInt:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> RawInt:
        return self

    def __repr__(self) -> str:
        return self.text


def _float(text: str) -> float:
    value = float(text)
    # A plain float is one both writers spell as its repr: orjson writes every float whose repr has no
    # exponent exactly as repr does (checked over 130,000 values); the others keep their own text.
    if repr(value) == text and "e" not in text:
        return value
    return RawFloat(value, text)


def _constant(name: str) -> float:
    return RawFloat(float(name.replace("Infinity", "inf")), name)


def _int(text: str) -> Any:
    if text == "-0":
        return RawInt(0, text)
    try:
        return int(text)
    except ValueError:
        # More digits than Python converts (sys.get_int_max_str_digits): as big as it gets, kept as text.
        return RawFloat(float("-inf") if text.startswith("-") else float("inf"), text)


def _hooks(data: bytes) -> dict[str, Any]:
    hooks: dict[str, Any] = {"parse_float": _float, "parse_constant": _constant}
    if _NEG_ZERO.search(data):
        hooks["parse_int"] = _int
    return hooks


def loads(data: bytes) -> Any:
    """Parse JSON text, keeping every number's spelling (see the module doc).

    ValueError if it is not JSON; RecursionError if it nests deeper than the stdlib parser goes from an
    empty stack (about 1,000 levels): the verdict does not depend on how deep the caller's stack is.
    """
    hooks = _hooks(data)
    try:
        with _uninterrupted():
            return json.loads(data, **hooks)
    except RecursionError:
        return _on_fresh_stack(lambda: json.loads(data, **hooks))
    except ValueError:
        if "parse_int" in hooks:
            raise
        # Maybe an integer with more digits than int() takes: the int hook keeps it as text.
        return json.loads(data, **hooks, parse_int=_int)


_switch_mu = threading.Lock()
_switch_holders = 0
_switch_saved = 0.005


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """No thread switch while parsing, as with the stdlib's C parser alone.

    The number hook is Python code, so CPython would hand the GIL to other threads every 5 ms of a
    parse; their allocations then land between the document's objects and keep its memory from going
    back to the system once it is freed (``vidtray watch`` with 50,000 items: +40 MB resident).
    """
    global _switch_holders, _switch_saved
    with _switch_mu:
        if _switch_holders == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(max(_switch_saved, 10.0))
        _switch_holders += 1
    try:
        yield
    finally:
        with _switch_mu:
            _switch_holders -= 1
            if _switch_holders == 0:
                sys.setswitchinterval(_switch_saved)


def _on_fresh_stack(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread, whose Python stack starts empty, and return (or raise) what it did."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            out["error"] = exc

    thread = threading.Thread(target=run, name="vidtray-json", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    value: T = out["value"]
    return value


# -- writing ------------------------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, RawFloat | RawInt):
        return orjson.Fragment(value.text.encode("utf-8"))
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(doc: Any) -> bytes:
    """``doc`` as UTF-8 JSON indented by 2, with a final newline; raw numbers as they were written."""
    try:
        return orjson.dumps(doc, default=_default, option=_OPTIONS) + b"\n"
    except orjson.JSONEncodeError:
        return b"".join(_encode(doc)) + b"\n"


def preview(value: Any, limit: int = 60) -> str:
    """The start of ``value``'s JSON text on one line, for a log message."""
    try:
        text = orjson.dumps(value, default=_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS).decode("utf-8")
    except orjson.JSONEncodeError:  # too deep, a lone surrogate, a huge integer: the exact writer
        text = " ".join(b"".join(_encode(value)).decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[:limit] + "…"


def _fast(value: Any, level: int) -> bytes | None:
    try:
        out = orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return None
    return out.replace(b"\n", b"\n" + b"  " * level) if level else out


def _string(text: str) -> bytes:
    out = json.dumps(text, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", out).encode("utf-8")


def _encode(doc: Any) -> list[bytes]:
    """The same text orjson writes, for documents it refuses. Values orjson can write are handed to it
    whole; only the containers on the way to a refused value are walked, with a stack instead of recursion."""
    out: list[bytes] = []
    work: list[Any] = [(doc, 0)]
    while work:
        task = work.pop()
        if isinstance(task, bytes):
            out.append(task)
            continue
        value, level = task
        fast = _fast(value, level)
        if fast is not None:
            out.append(fast)
        elif isinstance(value, str):
            out.append(_string(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            out.append(str(value).encode("ascii"))  # beyond 64 bits: Python's digits are the JSON text
        elif isinstance(value, dict | list):
            inner = b"\n" + b"  " * (level + 1)
            parts: list[Any] = [b"{" if isinstance(value, dict) else b"["]
            pairs = value.items() if isinstance(value, dict) else ((None, v) for v in value)
            for n, (key, child) in enumerate(pairs):
                if key is not None and not isinstance(key, str):
                    raise TypeError(f"a JSON object key must be a string, not {type(key).__name__}")
                parts.append((b"," if n else b"") + inner + (b"" if key is None else _string(key) + b": "))
                parts.append((child, level + 1))
            parts.append(b"\n" + b"  " * level + (b"}" if isinstance(value, dict) else b"]"))
            work.extend(reversed(parts))
        else:
            raise TypeError(f"{type(value).__name__} is not JSON")
    return out


def clone(value: T) -> T:
    """A deep copy of parsed JSON (dicts, lists, immutable leaves) at any depth the parser accepts."""
    root: list[Any] = [None]
    work: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while work:
        src, dest, key = work.pop()
        if isinstance(src, dict):
            copy: Any = {}
            for k, v in src.items():
                copy[k] = v
                if isinstance(v, dict | list):
                    work.append((v, copy, k))
        elif isinstance(src, list):
            copy = list(src)
            for n, v in enumerate(src):
                if isinstance(v, dict | list):
                    work.append((v, copy, n))
        else:
            copy = src
        dest[key] = copy
    copied: T = root[0]
    return copied


# -- salvage ------------------------------------------------------------------------------------------------


def salvage(data: bytes) -> Any:
    """What still decodes in a document that does not parse as a whole, or None.

    For an object: each top-level member in turn, and each element of its ``items`` list in turn; an
    item that nests too deep keeps its other members. A value that nests too deep is dropped and the
    rest read on; anything else that does not decode (the file ends early, bytes that are not JSON) ends
    the salvage there. A top-level list is read element by element the same way. Runs on a fresh stack,
    so values as deep as ``loads`` accepts are kept.
    """
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    return _on_fresh_stack(lambda: _salvage(text))


_SKIPPED = object()


def _skip_ws(text: str, pos: int) -> int:
    """The first position at or after ``pos`` that is not JSON whitespace."""
    m = _WS.match(text, pos)
    return m.end() if m is not None else pos  # never None: the pattern matches the empty string


def _salvage(text: str) -> Any:
    decoder = json.JSONDecoder(parse_float=_float, parse_constant=_constant, parse_int=_int)
    pos = _skip_ws(text, 0)
    if text.startswith("[", pos):
        return _elements(decoder, text, pos)[0]
    if text.startswith("{", pos):
        return _members(decoder, text, pos, top=True)[0] or None
    return None


def _members(decoder: json.JSONDecoder, text: str, pos: int, *, top: bool = False,
             ) -> tuple[dict[str, Any], int | None]:
    """The members that decode of the object at ``pos``: (members, end), end None if it breaks off.
    At the top, ``items`` is read element by element."""
    out: dict[str, Any] = {}
    pos = _skip_ws(text, pos + 1)
    if text.startswith("}", pos):
        return out, pos + 1
    while True:
        if not text.startswith('"', pos):
            return out, None
        try:
            key, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return out, None
        pos = _skip_ws(text, pos)
        if not text.startswith(":", pos):
            return out, None
        pos = _skip_ws(text, pos + 1)
        end: int | None
        if top and key == "items" and text.startswith("[", pos):
            out[key], end, complete = _elements(decoder, text, pos)
            if not complete:
                return out, None
        else:
            value, end = _value(decoder, text, pos)
            if end is None:
                return out, None
            if value is not _SKIPPED:
                out[key] = value
        pos = _skip_ws(text, end)
        if text.startswith("}", pos):
            return out, pos + 1
        if not text.startswith(",", pos):
            return out, None
        pos = _skip_ws(text, pos + 1)


def _value(decoder: json.JSONDecoder, text: str, pos: int, *, partial: bool = False) -> tuple[Any, int | None]:
    """(value, end) of the value at ``pos``; (_SKIPPED, end) if it nests too deep (with ``partial``, an
    object keeps its members that do not); (None, None) if the text is broken there."""
    try:
        return decoder.raw_decode(text, pos)
    except RecursionError:
        if partial and text.startswith("{", pos):
            members, end = _members(decoder, text, pos)
            if end is not None:
                return members, end
        end = _skip(text, pos)
        return (_SKIPPED, end) if end is not None else (None, None)
    except ValueError:
        return None, None


def _elements(decoder: json.JSONDecoder, text: str, pos: int) -> tuple[list[Any], int, bool]:
    """The elements that decode of the list at ``pos``: (elements, end, reached the closing bracket?)."""
    out: list[Any] = []
    pos = _skip_ws(text, pos + 1)
    if text.startswith("]", pos):
        return out, pos + 1, True
    while True:
        value, end = _value(decoder, text, pos, partial=True)
        if end is None:
            return out, pos, False
        if value is not _SKIPPED:
            out.append(value)
        pos = _skip_ws(text, end)
        if text.startswith("]", pos):
            return out, pos + 1, True
        if not text.startswith(",", pos):
            return out, pos, False
        pos = _skip_ws(text, pos + 1)


def _skip(text: str, pos: int) -> int | None:
    """The end of the (balanced) list or object at ``pos``, or None if the text ends first."""
    depth = 0
    for m in _SKIP.finditer(text, pos):
        token = m.group()
        if token[0] == '"':
            continue
        depth += 1 if token in "[{" else -1
        if depth == 0:
            return m.end()
    return None
