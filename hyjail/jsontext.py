"""JSON text for what a jail's start reads and writes (the registry's records, the probe's
cache), without importing the `json` package.

Owns `dumps` and `loads`: the same text and the same values as the standard library's
`json.dumps` (ASCII, `sort_keys` as asked) and `json.loads`, made by the same C accelerator
that package runs (`_json`). What it saves is the package's import: it imports `re` and
compiles its patterns, about 2.5 ms of every start. Where this interpreter's `_json` lacks
what is used here, both fall back to the package itself (same results, slower start).
Malformed text raises ValueError, as `json.loads` does (its JSONDecodeError is one).
"""

from __future__ import annotations

_WHITESPACE = " \t\n\r"  # all that JSON allows around a value


class _Options:
    """What the C scanner reads its options from (`json.JSONDecoder`'s defaults)."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity: what json.loads makes of them


class _NumbersOnly(_Options):
    """The same, refusing NaN and the infinities, which JSON itself does not have."""

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"{name} is not a JSON number")


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _accelerated() -> tuple | None:
    """The two scanners (constants read, refused) and the two encoders (unsorted, sorted),
    or None without `_json`'s."""
    try:
        import _json
        scans = (_json.make_scanner(_Options()), _json.make_scanner(_NumbersOnly()))
        encoders = tuple(
            # check_circular (a fresh markers dict per call, below), default, ASCII strings,
            # no indent, json's separators, sort_keys, skipkeys off, NaN allowed.
            (lambda markers, sort=sort: _json.make_encoder(
                markers, _not_serializable, _json.encode_basestring_ascii, None, ": ", ", ",
                sort, False, True))
            for sort in (False, True))
        encoders[0]({})  # signatures differ across versions: find out now, not at a dump
        return *scans, *encoders
    except (ImportError, AttributeError, TypeError):
        return None


_FAST = _accelerated()


def dumps(value: object, sort_keys: bool = False) -> str:
    """json.dumps(value, sort_keys=sort_keys)."""
    if _FAST is None:
        import json
        return json.dumps(value, sort_keys=sort_keys)
    return "".join(_FAST[3 if sort_keys else 2]({})(value, 0))


def loads(text: str | bytes, constants: bool = True) -> object:
    """json.loads(text); constants False: NaN, Infinity and -Infinity refused (ValueError)."""
    if _FAST is None:
        import json
        if constants:
            return json.loads(text)
        return json.loads(text, parse_constant=_NumbersOnly.parse_constant)
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")  # what json.loads reads of a record or a cache
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _FAST[0 if constants else 1](text, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value
