"""FreeBSD's getopt(3), for the drop-ins' command lines (`jail`, `jexec`, `jls`).

Owns `parse` and its one error, worded as getopt(3) prints it ("illegal option -- x", "option
requires an argument -- x"). The standard library's `getopt` would do the parsing, but it
imports gettext, and with it re and locale: about 5 ms of every jexec and `jail -c`.

getopt(3) does not permute: options end at the first word that is not one, at `-` alone, or
after `--`. A word `-abc` is the flags a, b and c; a flag that takes an argument (`x:` in
the option string) takes the rest of its word, or else the next word. It knows no long
options: in `--x` the option character is `-`.
"""

from __future__ import annotations


class OptionError(Exception):
    """What getopt(3) would print, `reason -- character`."""

    def __init__(self, reason: str, character: str):
        super().__init__(f"{reason} -- {character}")
        self.reason, self.character = reason, character


def parse(argv: list[str], optstring: str) -> tuple[list[tuple[str, str]], list[str]]:
    """([(flag, value)], the words after the options), flags as "-x" and value "" for a flag
    without an argument; OptionError for the first it cannot take."""
    options: list[tuple[str, str]] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-") or word == "-":
            break
        index += 1
        position = 1
        while position < len(word):
            character = word[position]
            position += 1
            found = optstring.find(character) if character != ":" else -1
            if found < 0:
                raise OptionError("illegal option", character)
            if optstring[found + 1:found + 2] != ":":
                options.append((f"-{character}", ""))
                continue
            if position < len(word):
                value = word[position:]
            elif index < len(argv):
                value = argv[index]
                index += 1
            else:
                raise OptionError("option requires an argument", character)
            options.append((f"-{character}", value))
            break
    return options, argv[index:]
