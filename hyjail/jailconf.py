"""jail.conf(5): read the file as FreeBSD's jail(8) does, then resolve one jail's parameters.

Owns the syntax, as FreeBSD 14's usr.sbin/jail/jaillex.l and jailparse.y accept it:

- statements `name;` (a bare boolean), `name = value;`, `name += value;` and `name value;`
  (no `=`); a value is a list `a, b, c`; empty statements (`;`) anywhere;
- `$var` definitions, which look like parameters but are only used for substitution;
- a string is one or more pieces with nothing between them: bare words, 'single-quoted' and
  "double-quoted" text (`"a"'b'c` is `abc`); `$name` and `${any name}` are expanded in bare and
  double-quoted pieces, never in single-quoted ones; a backslash escape (\\n \\t \\a \\b \\f \\r
  \\v, \\ooo octal, \\xhh hex, \\ + newline to continue a line, \\ + anything else for itself)
  works in all three;
- jail blocks `name { ... }`, nested ones named `parent.child`; a block whose name is a number is
  the jail with that jid (its `name` is the number too unless the file sets one); wildcard blocks
  `*` and `"foo.*"` (a `*` component matches one name component, a final one the rest; a name
  is one token, so bare `foo.*` is a syntax error, as in FreeBSD: quote it or nest `* {}` in
  `foo {}`), and the top-level parameters, which FreeBSD keeps as one more `*` block where the
  first one appears;
- `.include "file";` and `.include "dir/*.conf";`: relative to the including file's directory,
  globbed (no match is fine; a plain name must exist), parsed where the statement stands;
- `#`, `//` and `/* */` comments; spaces, tabs and newlines between tokens, nothing else (a CR
  is an error, as in FreeBSD).

Every syntax error is one UsageError "FILE:LINE: what" (exit 2). Resolving follows config.c:
parameters from matching blocks in file order (later ones win, `+=` appends, `persist` and
`nopersist` are one option), then variable substitution.

The default configuration (`load_default`) is what FreeBSD reads without -f: /etc/jail.conf
only (jailp.h's CONF_FILE; /etc/jail.conf.d/*.conf is read only when jail.conf `.include`s it,
as jail.conf(5)'s example does). Given a jail name it makes rc.d/jail's per-jail choice instead:
/etc/jail.NAME.conf, else /etc/jail.conf.d/NAME.conf, else /etc/jail.conf, the first readable.

API: `parse(text, filename)` / `load(path)` -> Config; `load_default(jail=None, etc="/etc")`
and `default_config_path(...)`; `jail_names(config, pattern=None)`; `resolve(config, jail)` ->
{param: [strings] | True}; `is_wildcard`, `wildcard_matches`, `jid_of`, `same_option`.

What the parameters mean is `hyjail.jailparams` / `hyjail.lifecycle`; this module never starts a
jail.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from hyjail.errors import HyjailError, UsageError

CONF_FILE = "jail.conf"  # under /etc: jail(8)'s default without -f
MAX_INCLUDE_DEPTH = 32  # config.c's limit, kept alongside our own loop check

# jaillex.l's character classes. A bare word is a run of these; `$ * + / \` are one-character
# words of their own (so `+=` and comments can still be told apart), joined to neighbours.
_WORD = re.compile(r"[A-Za-z0-9_!%&()\-.:<>?@\[\]^`|~]+")
_SIMPLE_VAR = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_JID = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")  # what strtol(3) takes whole
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_OCTAL, _HEX = "01234567", "0123456789abcdefABCDEF"


@dataclass(frozen=True)
class Var:
    """A `$name` or `${name}` reference inside a value."""

    name: str


@dataclass(frozen=True)
class Value:
    """One string of a value list: literal text and references, in order."""

    parts: tuple[str | Var, ...]

    @property
    def text(self) -> str:
        """The string as written, references shown as ${name}."""
        return "".join(p if isinstance(p, str) else f"${{{p.name}}}" for p in self.parts)


@dataclass(frozen=True)
class Param:
    name: str  # a variable's without its `$`
    values: tuple[Value, ...]  # empty: a bare boolean
    append: bool
    line: int
    variable: bool = False
    filename: str = ""


@dataclass
class Block:
    """One jail block, in file order. "" is the top-level parameters (FreeBSD's global `*`)."""

    name: str
    params: list[Param] = field(default_factory=list)
    filename: str = ""
    line: int = 0


class Config(Mapping[str, list[Param]]):
    """The parsed file: `blocks` in the order FreeBSD numbers them (which decides who wins).
    As a mapping, block name -> all its parameters, "" the top-level ones (always present)."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def __getitem__(self, name: str) -> list[Param]:
        found = [b for b in self.blocks if b.name == name]
        if not found and name != "":
            raise KeyError(name)
        return [p for b in found for p in b.params]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(["", *(b.name for b in self.blocks)]))

    def __len__(self) -> int:
        return len(set(self))


# Lexing --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Token:
    kind: str  # "piece", "+=", or one of , ; = { }
    line: int
    source: str  # as written, for messages
    part: str | Var = ""  # a piece's text or reference
    joined: bool = False  # a piece touching the one before it (jailparse.y's STR1/VAR1)


def _unescape(raw: str) -> tuple[str, int]:
    """jaillex.l's text2lval: backslash escapes of one piece, and the newlines it holds.
    Escaped bytes come out as UTF-8 where they form it, surrogate-escaped where not."""
    out, i, newlines = [], 0, raw.count("\n")
    while i < len(raw):
        c = raw[i]
        i += 1
        if c != "\\":
            out.append(c)
            continue
        c = raw[i] if i < len(raw) else "\0"  # a lone trailing backslash reads the NUL
        i += 1
        if c in _OCTAL:
            digits = c
            while len(digits) < 3 and i < len(raw) and raw[i] in _OCTAL:
                digits, i = digits + raw[i], i + 1
            out.append(_byte(int(digits, 8) & 0xFF))
        elif c == "x":
            digits = ""
            while len(digits) < 2 and i < len(raw) and raw[i] in _HEX:
                digits, i = digits + raw[i], i + 1
            out.append(_byte(int(digits, 16) if digits else 0))
        elif c != "\n":  # backslash-newline is a continuation: nothing
            out.append(_ESCAPES.get(c, c))
    text = "".join(out)
    if any("\udc80" <= ch <= "\udcff" for ch in text):  # rejoin escaped bytes into UTF-8
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    return text.split("\0", 1)[0], newlines  # a C string ends at its first NUL


def _show(name: str) -> str:
    """A name for a one-line message: as is, or quoted if it holds newlines and the like."""
    return name if name.isprintable() else repr(name)


def _byte(value: int) -> str:
    return chr(value) if value < 0x80 else chr(0xDC00 + value)


def _find_close(text: str, start: int, close: str, stops: str = "", end: int = -1) -> int:
    """Index of the `close` ending a quoted run from `start` (backslash escapes anything), or
    -1 if none comes before a character of `stops` or `end` (the text's end by default)."""
    i, end = start, len(text) if end < 0 else end
    while i < end:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == close:
            return i
        elif c in stops:
            return -1
        else:
            i += 1
    return -1


def _tokens(text: str, filename: str) -> Iterator[_Token]:
    """jaillex.l's tokens, lazily, so an earlier syntax error is reported first."""
    pos, line, instr = 0, 1, False

    def error(message: str) -> UsageError:
        return UsageError(f"{filename}:{line}: {message}")

    def piece(part: str | Var, source: str) -> _Token:
        nonlocal instr
        token = _Token("piece", line, source, part, instr)
        instr = True
        return token

    while pos < len(text):
        c, start = text[pos], pos
        nxt = text[pos + 1] if pos + 1 < len(text) else ""
        if c in " \t":
            pos, instr = pos + 1, False
        elif c == "\n":
            pos, line, instr = pos + 1, line + 1, False
        elif c == "#" or (c == "/" and nxt == "/"):
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        elif c == "/" and nxt == "*":
            end = text.find("*/", pos + 2)
            if end < 0:
                raise error("unterminated comment")
            line += text.count("\n", pos, end)
            pos, instr = end + 2, False
        elif c == "+" and nxt == "=":
            pos, instr = pos + 2, False
            yield _Token("+=", line, "+=")
        elif c in ",;={}":
            pos, instr = pos + 1, False
            yield _Token(c, line, c)
        elif match := _WORD.match(text, pos):
            pos = match.end()
            yield piece(match.group(), match.group())
        elif c == "\\":
            if nxt in _OCTAL and nxt:
                end = pos + 2
                while end < len(text) and end < pos + 4 and text[end] in _OCTAL:
                    end += 1
            elif nxt == "x":
                end = pos + 2
                while end < len(text) and end < pos + 4 and text[end] in _HEX:
                    end += 1
            else:
                end = min(pos + 2, len(text))
            raw = text[pos:end]
            part, newlines = _unescape(raw)
            yield piece(part, raw)
            pos, line = end, line + newlines
        elif c == "$" and (nxt == "{" or _SIMPLE_VAR.match(nxt)):
            pos, line, token = _reference(text, pos, len(text), line, piece, error, "")
            yield token
        elif c in "$*+/":
            pos += 1
            yield piece(c, c)
        elif c in "'\"":
            end = _find_close(text, pos + 1, c)
            if end < 0:
                raise error("unterminated string")
            pos = end + 1
            if c == "'":
                part, newlines = _unescape(text[start + 1:end])
                yield piece(part, text[start:pos])
                line += newlines
                continue
            # Double quotes: literal runs split at each unescaped `$` reference.
            i, run = start + 1, start + 1
            while True:
                while i < end and text[i] != "$":
                    i += 2 if text[i] == "\\" else 1
                i = min(i, end)
                if i > run or run == start + 1:
                    part, newlines = _unescape(text[run:i])
                    yield piece(part, text[start:pos])
                    line += newlines
                if i >= end:
                    break
                if text[i + 1:i + 2] == "{" or _SIMPLE_VAR.match(text, i + 1, end):
                    i, line, token = _reference(text, i, end, line, piece, error, '"')
                    yield token
                else:  # a `$` that starts no reference is itself
                    yield piece("$", text[start:pos])
                    i += 1
                run = i
        elif c == "\r":
            raise error("unexpected carriage return (FreeBSD's jail takes no CRLF line ends)")
        else:
            raise error(f"unexpected character {c!r}")


def _reference(text, pos, limit, line, piece, error, stops):
    """A `$name` or `${...}` at pos, before limit: (end, line after it, its token)."""
    if text[pos + 1] != "{":
        match = _SIMPLE_VAR.match(text, pos + 1, limit)
        return match.end(), line, piece(Var(match.group()), text[pos:match.end()])
    end = _find_close(text, pos + 2, "}", "\n{" + stops, limit)
    if end < 0:
        raise error("unterminated variable")
    name, newlines = _unescape(text[pos + 2:end])
    return end + 1, line + newlines, piece(Var(name), text[pos:end + 1])


# Parsing -------------------------------------------------------------------------------------

class _Parser:
    """jailparse.y's grammar by recursive descent, one token of lookahead:

        conf   : (jail | param ';' | ';')*        jail  : STR '{' conf '}'
        param  : name | name ('=' | '+=')? value  name  : STR | VAR
        value  : string (',' string)*             string: (STR | VAR) (STR1 | VAR1)*
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.top: Block | None = None  # created at the first top-level parameter, as FreeBSD
        self.reading: list[str] = []  # real paths of the files being read, for loops

    def parse(self, text: str, filename: str, block: Block | None, depth: int = 0) -> None:
        self.filename, self.depth = filename, depth
        self.stream, self.last_line = _tokens(text, filename), 1
        self.ahead: _Token | None = next(self.stream, None)
        self.conf(block, nested=False)  # an included file is read inside the includer's block
        if self.ahead is not None:
            raise self.error("'}' without a block", self.ahead.line)

    def error(self, message: str, line: int | None = None) -> UsageError:
        return UsageError(f"{self.filename}:{self.last_line if line is None else line}: "
                          f"{message}")

    def take(self) -> _Token:
        token = self.ahead
        assert token is not None
        self.last_line = token.line
        self.ahead = next(self.stream, None)
        return token

    def conf(self, block: Block | None, nested: bool) -> None:
        while (token := self.ahead) is not None:
            if token.kind == "}":
                if nested:
                    self.take()
                return
            if token.kind == ";":
                self.take()
            elif token.kind == "piece":
                self.statement(block)
            else:
                raise self.error(f"unexpected {token.source!r}", token.line)
        if nested and block is not None:
            raise self.error(f"block {_show(block.name)} (line {block.line}) is not closed")

    def statement(self, block: Block | None) -> None:
        first = self.take()
        if self.ahead is not None and self.ahead.kind == "{":
            if isinstance(first.part, Var):
                raise self.error(f"unexpected '{{' after {_show(first.source)}", first.line)
            if first.part == "":
                raise self.error("a jail block needs a name", first.line)
            self.take()
            name = first.part if block is None else f"{block.name}.{first.part}"
            child = Block(name, [], self.filename, first.line)
            self.config.blocks.append(child)
            self.conf(child, nested=True)
            return
        variable = isinstance(first.part, Var)
        name = first.part.name if isinstance(first.part, Var) else first.part
        shown = _show(f"${name}" if variable else name)
        if self.ahead is not None and self.ahead.kind == "piece" and self.ahead.joined:
            raise self.error(f"unexpected {self.ahead.source!r} after {first.source!r}: a "
                             "name is one token (quote it, as in \"foo.*\" {)", self.ahead.line)
        values: list[Value] = []
        form = "bare"
        if self.ahead is not None and self.ahead.kind in ("=", "+="):
            form = self.take().kind
            if self.ahead is None or self.ahead.kind != "piece":
                raise self.error(f"missing value for {shown}")
            values = self.value_list()
        elif self.ahead is not None and self.ahead.kind == "piece":
            form, values = "name value", self.value_list()
        if self.ahead is None or self.ahead.kind != ";":
            raise self.error(f"missing ';' after {shown}")
        self.take()
        param = Param(name, tuple(values), form == "+=", first.line, variable, self.filename)
        if name == ".include" and form == "name value" and not variable:
            self.include(param, block)
            return
        if block is None:
            if self.top is None:
                self.top = Block("", [], self.filename, first.line)
                self.config.blocks.append(self.top)
            block = self.top
        block.params.append(param)

    def value_list(self) -> list[Value]:
        values = [self.string()]
        while self.ahead is not None and self.ahead.kind == ",":
            self.take()
            if self.ahead is None or self.ahead.kind != "piece" or self.ahead.joined:
                raise self.error("missing value after ','")
            values.append(self.string())
        return values

    def string(self) -> Value:
        parts = [self.take().part]
        while self.ahead is not None and self.ahead.kind == "piece" and self.ahead.joined:
            parts.append(self.take().part)
        merged: list[str | Var] = []
        for part in parts:  # adjacent literal pieces are one string
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            else:
                merged.append(part)
        return Value(tuple(merged))

    def include(self, param: Param, block: Block | None) -> None:
        where = f"{self.filename}:{param.line}"
        for value in param.values:
            if any(isinstance(p, Var) for p in value.parts):
                raise UsageError(f"{where}: variables not permitted in '.include' filename")
            pattern = value.text
            if not os.path.isabs(pattern) and "/" in self.filename:
                pattern = os.path.join(os.path.dirname(self.filename), pattern)
            # glob(3) with GLOB_NOCHECK: a pattern may match nothing; a plain name must exist.
            paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for path in paths:
                self.include_file(path, where, block)

    def include_file(self, path: str, where: str, block: Block | None) -> None:
        real = os.path.realpath(path)
        if real in self.reading:
            raise UsageError(f"{where}: .include loop: {_show(path)} is already being read")
        if self.depth + 1 > MAX_INCLUDE_DEPTH:
            raise UsageError(f"{where}: .include {_show(path)}: maximum include depth exceeded")
        try:
            text = _read(path)
        except OSError as e:
            raise UsageError(f"{where}: .include {_show(path)}: {e.strerror}") from None
        saved = self.filename, self.depth, self.stream, self.ahead, self.last_line
        self.reading.append(real)
        try:
            self.parse(text, path, block, self.depth + 1)
        finally:
            self.reading.pop()
            self.filename, self.depth, self.stream, self.ahead, self.last_line = saved


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


def parse(text: str, filename: str = "jail.conf") -> Config:
    """Parse jail.conf text; `filename` names it in errors and anchors relative `.include`s."""
    config = Config()
    parser = _Parser(config)
    if os.path.isfile(filename):
        parser.reading.append(os.path.realpath(filename))
    parser.parse(text, filename, None)
    return config


def load(path: str) -> Config:
    """Read and parse one file, as `jail -f path` does; an unreadable file is a HyjailError
    (exit 125) naming it."""
    try:
        text = _read(path)
    except OSError as e:
        raise HyjailError(f"{path}: {e.strerror}") from None
    return parse(text, path)


def default_config_path(jail: str | None = None, etc: str = "/etc") -> str:
    """The file FreeBSD reads with no -f: `etc`/jail.conf (jail.c, jailp.h's CONF_FILE). For
    one jail, rc.d/jail's choice: jail.NAME.conf, then jail.conf.d/NAME.conf, then jail.conf,
    the first readable (NAME with `/` and `.` made `_`, as rc.d/jail does)."""
    main = os.path.join(etc, CONF_FILE)
    if jail is None:
        return main
    safe = jail.replace("/", "_").replace(".", "_")
    for path in (os.path.join(etc, f"jail.{safe}.conf"),
                 os.path.join(etc, "jail.conf.d", f"{safe}.conf")):
        if os.access(path, os.R_OK) and os.path.isfile(path):
            return path
    return main


def load_default(jail: str | None = None, etc: str = "/etc",
                 missing_ok: bool = False) -> Config:
    """Parse the default configuration (see default_config_path). `missing_ok` gives an empty
    Config when the file does not exist, as `jail -r` tolerates."""
    path = default_config_path(jail, etc)
    if missing_ok and not os.path.exists(path):
        return Config()
    return load(path)


# Resolving -----------------------------------------------------------------------------------

def is_wildcard(name: str) -> bool:
    """config.c's wild_jail_name: some dot-separated component is exactly `*`."""
    return "*" in name.split(".")


def wildcard_matches(name: str, pattern: str) -> bool:
    """config.c's wild_jail_match: a non-final `*` component matches one component of the
    name, a final `*` the rest (one component or more): `foo.*` matches foo.bar and
    foo.bar.baz, not foo."""
    while "." in name and "." in pattern:
        head, name = name.split(".", 1)
        wild, pattern = pattern.split(".", 1)
        if head != wild and wild != "*":
            return False
    return name == pattern or pattern == "*"


def jail_names(config: Config, pattern: str | None = None) -> list[str]:
    """The configured jails in file order (wildcard blocks are not jails); with `pattern`,
    those it names (a wildcard as `jail -c 'foo.*'` takes it, or one exact name)."""
    names = [n for n in config if n != "" and not is_wildcard(n)]
    if pattern is None:
        return names
    if is_wildcard(pattern):
        return [n for n in names if wildcard_matches(n, pattern)]
    return [n for n in names if n == pattern]


def jid_of(name: str) -> int | None:
    """A block named by a nonzero number is that jid's jail (config.c: strtol, all of it)."""
    return int(name) if _JID.fullmatch(name) and int(name) != 0 else None


def same_option(a: str, b: str) -> bool:
    """config.c's equalopts: `x` and `nox` (or `foo.x` and `foo.nox`) are one parameter."""
    if a == b:
        return True
    while True:
        if (a.startswith("no") and a[2:] == b) or (b.startswith("no") and b[2:] == a):
            return True
        dot = a.find(".")
        if dot < 0 or a[:dot + 1] != b[:dot + 1]:
            return False
        a, b = a[dot + 1:], b[dot + 1:]


@dataclass
class _Entry:
    name: str
    variable: bool
    values: list[Value]
    immutable: bool = False
    where: str = ""


def resolve(config: Config, jail: str) -> dict[str, list[str] | bool]:
    """One jail's parameters, as config.c's load_config builds them: the implied `name` (or
    `jid` for a numbered block), then every block that is this jail or a wildcard matching it,
    in file order, later statements replacing earlier ones and `+=` appending; then `$var` and
    `${param}` references expanded (a list substitutes only as a whole string). Variables are
    not returned; a bare boolean is True."""
    if jail not in jail_names(config):
        raise UsageError(f"{_show(jail)}: no such jail in the configuration")
    jid = jid_of(jail)
    entries = [_Entry("jid" if jid is not None else "name", False,
                      [Value((jail,))], immutable=True)]

    def add(param: Param) -> None:
        where = f"{param.filename}:{param.line}: {_show(jail)}"
        for entry in entries:
            if not same_option(entry.name, param.name):
                continue
            if entry.variable != param.variable:
                raise UsageError(f'{where}: variable "${_show(param.name)}" cannot have the same '
                                 "name as a parameter")
            if entry.immutable:
                raise UsageError(f'{where}: cannot redefine parameter "{entry.name}"')
            entry.name, entry.where = param.name, where
            if param.append and param.values:
                entry.values.extend(param.values)
            else:
                entry.values = list(param.values)
            return
        entries.append(_Entry(param.name, param.variable, list(param.values), where=where))

    for block in config.blocks:
        if block.name == jail or ((block.name == "" or is_wildcard(block.name))
                                  and wildcard_matches(jail, block.name or "*")):
            for param in block.params:
                add(param)
    if jid is not None and not any(e.name == "name" and not e.variable for e in entries):
        entries.append(_Entry("name", False, [Value((jail,))]))

    done: dict[int, list[str]] = {}

    def expand(entry: _Entry, seen: tuple[int, ...]) -> list[str]:
        if id(entry) in done:
            return done[id(entry)]
        shown = _show(f"${entry.name}" if entry.variable else entry.name)
        out: list[str] = []
        for value in entry.values:
            strings = [""]
            last_ref = max((i for i, p in enumerate(value.parts) if isinstance(p, Var)),
                           default=-1)
            literal = "".join(p for p in value.parts if isinstance(p, str))
            for index, part in enumerate(value.parts):
                if isinstance(part, str):
                    strings[-1] += part
                    continue
                target = next((e for e in entries if e.name == part.name), None)
                if target is None or not target.values:
                    raise UsageError(f"{entry.where}: {shown}: ${{{part.name}}} names "
                                     "no parameter or variable with a value")
                if id(target) in seen:
                    raise UsageError(f"{entry.where}: variable loop: "
                                     f"${{{part.name}}} refers to itself")
                got = expand(target, (*seen, id(target)))
                if len(got) > 1:
                    # Only a string that is nothing but this (last) reference takes a list.
                    if literal or strings != [""] or index != last_ref:
                        raise UsageError(f"{entry.where}: {shown}: array cannot be "
                                         "substituted inline")
                    strings = list(got)
                else:
                    strings[-1] += got[0]
            out.extend(strings)
        done[id(entry)] = out
        return out

    resolved: dict[str, list[str] | bool] = {}
    for entry in entries:
        values = expand(entry, (id(entry),))
        if not entry.variable:
            resolved[entry.name] = values if entry.values else True
    return resolved
