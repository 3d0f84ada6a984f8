"""The characters names and values are made of, checked without `re`.

Owns the sets the start path checks a jail's names, labels and option values against. `re`
(with `enum`, and a compile per pattern) cost every start milliseconds for a handful of
one-line checks that a set comparison makes exactly, and ASCII only (`\\d` would take any
Unicode digit).
"""

from __future__ import annotations

DIGITS = frozenset("0123456789")
LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
ALNUM = LETTERS | DIGITS


def made_of(text: str, allowed: frozenset[str], least: int = 1, most: int | None = None
            ) -> bool:
    """Whether text is `least` to `most` characters, each of them in `allowed`."""
    return least <= len(text) <= (len(text) if most is None else most) and \
        allowed.issuperset(text)
