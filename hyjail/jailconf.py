"""jail.conf(5): parse the file, then resolve one jail's parameters.

Owns the syntax: `name = value;`, lists (`a, b`), `+=`, bare booleans (`persist;`), `$var`
definitions, `${name}` / `$name` expansion in double-quoted and bare values (never in single
quotes), jail blocks `name { ... }`, the `*` wildcard block, top-level defaults, and `#`, `//`
and `/* */` comments. A syntax error names the file and line (exit 2, as a usage error).
What the parameters mean is `hyjail.jailparams`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hyjail.errors import UsageError

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+) | (?P<newline>\n)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<dq>"(?:[^"\\]|\\.)*") | (?P<sq>'[^']*')
  | (?P<append>\+=) | (?P<punct>[{};=,])
  | (?P<word>(?:\$\{[^}\n]*\}|[^\s{};=,"'#])+)
""", re.VERBOSE | re.DOTALL)
# ${name} (any name, dotted ones too), $name (no dots), or \$ for a literal dollar sign.
_REFERENCE = re.compile(r"\$\{([^}]+)\}|\$([A-Za-z_][A-Za-z0-9_]*)|\\(\$)")


@dataclass(frozen=True)
class Value:
    text: str
    expand: bool  # single-quoted text is taken literally


@dataclass(frozen=True)
class Param:
    name: str
    values: tuple[Value, ...]  # empty: a bare boolean
    append: bool
    line: int


Config = dict[str, list[Param]]  # "" holds the top-level defaults


def _tokens(text: str, filename: str) -> list[tuple[str, str, int]]:
    tokens, line, pos = [], 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise UsageError(f"{filename}:{line}: unexpected {text[pos]!r}")
        kind, value = match.lastgroup, match.group()
        if kind in ("dq", "sq", "punct", "append", "word"):
            tokens.append((kind, value, line))
        line += value.count("\n")
        pos = match.end()
    return tokens


def parse(text: str, filename: str = "jail.conf") -> Config:
    tokens = _tokens(text, filename)
    config: Config = {"": []}
    block: str | None = None
    i = 0

    def error(message: str, at: int) -> UsageError:
        line = tokens[min(at, len(tokens) - 1)][2] if tokens else 1
        return UsageError(f"{filename}:{line}: {message}")

    while i < len(tokens):
        kind, value, line = tokens[i]
        if kind == "punct" and value == "}":
            if block is None:
                raise error("'}' without a block", i)
            block, i = None, i + 1
            continue
        if kind not in ("word", "dq", "sq"):
            raise error(f"unexpected {value!r}", i)
        name = value.strip("\"'")
        following = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if following == "{":
            if block is not None:
                raise error("jail blocks do not nest", i)
            block = name
            config.setdefault(name, [])
            i += 2
            continue
        i += 1
        values: list[Value] = []
        append = False
        if following in ("=", "+="):
            append, i = following == "+=", i + 1
            while True:
                if i >= len(tokens) or tokens[i][0] not in ("word", "dq", "sq"):
                    raise error(f"missing value for {name}", i)
                kind, text, _ = tokens[i]
                values.append(Value(text[1:-1] if kind in ("dq", "sq") else text, kind != "sq"))
                i += 1
                if i < len(tokens) and tokens[i][1] == ",":
                    i += 1
                    continue
                break
        if i >= len(tokens) or tokens[i][1] != ";":
            raise error(f"missing ';' after {name}", i - 1)
        i += 1
        config[block if block is not None else ""].append(Param(name, tuple(values), append, line))
    if block is not None:
        raise error(f"block {block} is not closed", len(tokens))
    return config


def jail_names(config: Config) -> list[str]:
    return [name for name in config if name not in ("", "*")]


def resolve(config: Config, jail: str) -> dict[str, list[str] | bool]:
    """One jail's parameters: top-level defaults, then `*`, then its own block, with `+=`
    appending and `$var`/`${param}` references expanded. Variables ($name) are not returned."""
    if jail not in config:
        raise UsageError(f"{jail}: no such jail in the configuration")
    raw: dict[str, list[Value] | bool] = {"name": [Value(jail, False)]}
    for param in [*config[""], *config.get("*", []), *config[jail]]:
        if not param.values:
            raw[param.name] = True
        elif param.append and isinstance(raw.get(param.name), list):
            raw[param.name] = [*raw[param.name], *param.values]
        else:
            raw[param.name] = list(param.values)

    resolved: dict[str, list[str] | bool] = {}

    def lookup(name: str, seen: tuple[str, ...]) -> str:
        key = name if name in raw else f"${name}"
        if key not in raw:
            raise UsageError(f"{jail}: ${{{name}}} names no parameter or variable")
        if key in seen:
            raise UsageError(f"{jail}: ${{{name}}} refers to itself")
        value = raw[key]
        return "" if isinstance(value, bool) else ",".join(expand(v, (*seen, key)) for v in value)

    def expand(value: Value, seen: tuple[str, ...]) -> str:
        if not value.expand:
            return value.text
        return _REFERENCE.sub(lambda m: m.group(3) or lookup(m.group(1) or m.group(2), seen),
                              value.text)

    for name, value in raw.items():
        if name.startswith("$"):
            continue
        resolved[name] = value if isinstance(value, bool) else [expand(v, (name,)) for v in value]
    return resolved
