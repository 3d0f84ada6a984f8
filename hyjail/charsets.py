"""The characters names and values are made of, checked without `re`.

Owns the sets the start path checks a jail's names, labels and option values against. `re`
(with `enum`, and a compile per pattern) cost every start milliseconds for a handful of
one-line checks that a set comparison makes exactly, and ASCII only (`\\d` would take any
Unicode digit). And `unvis`, vis(3)'s octal escapes decoded (an fstab's fields, mountinfo's
mount points).
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


def unvis(field: str) -> str:
    """vis(3)'s octal escapes (`\\040` a space, `\\134` a backslash) and `\\\\`, as FreeBSD's
    strunvis and Linux's getmntent decode an fstab's first two fields."""
    out, i = [], 0
    while i < len(field):
        char = field[i]
        if char != "\\":
            out.append(char)
            i += 1
        elif field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            code = int(field[i + 1:i + 4], 8)
            if code > 0o377:
                raise ValueError(field)
            out.append(chr(code))
            i += 4
        elif field[i + 1:i + 2] == "\\":
            out.append("\\")
            i += 2
        else:
            raise ValueError(field)
    return "".join(out)
