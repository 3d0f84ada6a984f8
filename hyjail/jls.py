"""`jls`: FreeBSD jls(8), its command line and its output, byte for byte, from the registry.

Owns: the values a jail's record gives FreeBSD's jail parameters (every `.jail` row of
`hyjail.jailparams.TABLE`: the record's own fields, then the parameters `jail -c` stored, then
the row's default), every output form (the default table and -N, -v, the parameter forms -n,
-h, -q, -s and named parameters) in every libxo style (text, json, xml, html, with `pretty`),
and `main()`, the getopt command line (no click). Everything but `main()` is a pure function
from records to text; `main()` reads the registry.

libxo is not on Linux: `_Xo` renders the few libxo constructs jls.c uses (titles, padding,
text, value fields, display-only and encode-only fields, leaf lists, containers, lists and
instances) the way libxo 1.6 renders them.
"""

from __future__ import annotations

import ipaddress
import sys

from hyjail import getopt3, jailparams
from hyjail.errors import one_line
from hyjail.frozen import frozen
from hyjail.registry import Record

TYPE_CHECKING = False  # typing's own import costs every jls 2 ms; only a checker reads it
if TYPE_CHECKING:
    from typing import TextIO

PROG = "jls"
OPTIONS = "acdj:hNnqsv"
USAGE = "usage: jls [-dhNnqv] [-j jail] [param ...]\n       jls -c [-d] -j jail"
XO_VERSION = "2"


def _order(name: str) -> tuple[bool, str]:
    """jls.c's sort of "all": top-level parameters first, then dotted ones, by strcmp."""
    return ("." in name, name)


ALL_PARAMS = tuple(sorted(jailparams.JAIL_PARAMS, key=_order))
BOOLEANS = frozenset(n for n in ALL_PARAMS if jailparams.TABLE[n].kind == "bool")
READ_ONLY = frozenset(n for n in ALL_PARAMS if jailparams.TABLE[n].read_only)
_OWN = ("jid", "name", "path", "host.hostname", "ip4.addr", "ip6.addr", "persist")

# jls.c's print flags
DEFAULT, HEADER, NAMEVAL, QUOTED, SKIP, VERBOSE, JAIL_NAME = (1 << i for i in range(7))


@frozen
class Style:
    nameval: bool = False  # -n
    quoted: bool = False  # -q
    skip: bool = False  # -s
    header: bool = False  # -h

    def flags(self) -> int:
        return ((NAMEVAL if self.nameval else 0) | (QUOTED if self.quoted else 0)
                | (SKIP if self.skip else 0) | (HEADER if self.header else 0))


# ---- values ----------------------------------------------------------------------------------

def _addresses(record: Record) -> tuple[list[str], list[str]]:
    four, six = [], []
    for text in record.addresses:
        try:
            version = ipaddress.ip_address(text).version
        except ValueError:
            version = 6 if ":" in str(text) else 4
        (four if version == 4 else six).append(str(text))
    return four, six


def params(record: Record) -> dict[str, object]:
    """Every parameter jls knows, by name, with its typed value (None: not known)."""
    stored = record.params.get("jail_params") if isinstance(record.params, dict) else None
    stored = stored if isinstance(stored, dict) else {}
    four, six = _addresses(record)
    own: dict[str, object] = {
        "jid": record.jid, "name": record.name, "path": record.path,
        "host.hostname": record.hostname, "ip4.addr": four, "ip6.addr": six,
        "persist": bool(record.params.get("persist")) if isinstance(record.params, dict)
        else False,
    }
    values: dict[str, object] = {}
    for name in ALL_PARAMS:
        row = jailparams.TABLE[name]
        if name in own:
            values[name] = own[name]
        elif not row.read_only and name in stored:
            values[name] = stored[name]
        else:
            values[name] = jailparams.default(name)
    return values


def _export(value: object) -> str | None:
    """libjail's jailparam_export: the value as text (None: a value of no length)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if value else None
    return str(value)


def _is_set(value: object) -> bool:
    return bool(value) and value not in ("0", "false")


def _noname(name: str) -> str:
    head, dot, last = name.rpartition(".")
    return f"{head}{dot}no{last}"


def _resolve(name: str) -> tuple[str, bool] | None:
    """(the parameter, whether asked for as FreeBSD's `noNAME`), or None if jls knows none."""
    row = jailparams.TABLE.get(name)
    if row is not None and row.jail:
        return name, False
    plain = jailparams.negated(name)
    if plain is not None and jailparams.TABLE[plain].jail:
        return plain, True
    return None


def check_param_names(names: list[str]) -> None:
    """KeyError(name) for the first name jls does not know ("all" and noNAME are known)."""
    for name in names:
        if name != "all" and _resolve(name) is None:
            raise KeyError(name)


def expand(names: list[str]) -> list[str]:
    """The parameters asked for, in order, "all" expanded, each once (jls.c's add_param)."""
    shown: list[str] = []
    for name in names:
        for one in (ALL_PARAMS if name == "all" else (name,)):
            if one not in shown:
                shown.append(one)
    return shown


def _skipped(name: str, values: dict[str, object]) -> bool:
    """-s leaves out read-only parameters, unused ones (no value), and those whose jailsys
    parent (the name before its first dot: ip4 for ip4.addr) is not "new"."""
    plain, _ = _resolve(name) or (name, False)
    if jailparams.TABLE[plain].read_only or values[plain] is None:
        return True
    parent = plain.split(".", 1)[0]
    return parent != plain and parent in values and values[parent] != "new"


def settable_words(record: Record) -> list[str]:
    """The jail's parameters as `jail -c` takes them (jls -s, unquoted): for `jail -J`."""
    values = params(record)
    words = []
    for name in ALL_PARAMS:
        if _skipped(name, values):
            continue
        value = values[name]
        if jailparams.TABLE[name].kind == "bool":
            words.append(name if value else _noname(name))
        else:
            words.append(f"{name}={_export(value) or ''}")
    return words


# ---- libxo -----------------------------------------------------------------------------------

STYLES = ("text", "json", "xml", "html")
_FLAGS = ("color", "color-force", "columns", "dtrt", "flush", "flush-line", "ignore-close",
          "info", "keys", "log-gettext", "log-syslog", "no-humanize", "no-locale", "no-retain",
          "no-top", "not-first", "pretty", "retain", "underscores", "units", "warn", "warn-xml",
          "xpath", "no-color")


class LibxoError(Exception):
    """--libxo given something libxo refuses (message as libxo words it)."""


class Libxo:
    """--libxo's options. (A plain class: jls is on the hot path, dataclasses is not.)"""

    __slots__ = ("style", "pretty", "underscores", "indent")

    def __init__(self, style: str = "text", pretty: bool = False, underscores: bool = False,
                 indent: int = 2) -> None:
        self.style, self.pretty, self.underscores, self.indent = (style, pretty, underscores,
                                                                   indent)


def libxo_options(text: str, xo: Libxo, warn: list[str]) -> None:
    """libxo's xo_set_options: "json,pretty", "indent=4", or the ":JP" letters."""
    if text.startswith(":"):
        letters = text[1:]
        i = 0
        while i < len(letters):
            c = letters[i]
            if c in "HJTX":
                xo.style = {"H": "html", "J": "json", "T": "text", "X": "xml"}[c]
            elif c == "P":
                xo.pretty = True
            elif c == "u":
                xo.underscores = True
            elif c == "i":
                digits = _leading_digits(letters[i + 1:])
                if digits:
                    xo.indent = int(digits)
                    i += len(digits)
            i += 1
        return
    style = None
    failed = False
    for word in text.split(","):
        if word == "":
            continue
        name, eq, value = word.partition("=")
        if name.startswith("@") or name in ("colors", "encoder"):
            continue
        if name in STYLES:
            if style is not None:
                warn.append(f"ignoring multiple styles: '{name}'")
            else:
                style = name
        elif name in _FLAGS:
            xo.pretty = xo.pretty or name == "pretty"
            xo.underscores = xo.underscores or name == "underscores"
        elif name == "indent":
            if eq:
                xo.indent = int(_leading_digits(value) or 0)
        else:
            warn.append(f"unknown libxo option value: '{name}'")
            failed = True
    if style is not None:
        xo.style = style
    if failed:
        raise LibxoError


def libxo_args(argv: list[str]) -> tuple[list[str], Libxo, list[str]]:
    """xo_parse_args: take every --libxo argument out of argv (anywhere in it). Returns the
    rest, the options and the warnings; LibxoError (its warnings in args) to exit 1."""
    xo, rest, warn = Libxo(), [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--libxo"):
            rest.append(arg)
            i += 1
            continue
        tail = arg[len("--libxo"):]
        try:
            if tail == "":
                if i + 1 >= len(argv):
                    warn.append("missing libxo option")
                    raise LibxoError
                i += 1
                libxo_options(argv[i], xo, warn)
            elif tail[0] == ":":
                libxo_options(tail, xo, warn)
            elif tail[0] == "=":
                libxo_options(tail[1:], xo, warn)
            else:
                warn.append(f"unknown libxo option: '{arg}'")
                raise LibxoError
        except LibxoError:
            raise LibxoError(*warn) from None
        i += 1
    return rest, xo, warn


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _json_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class _Xo:
    """One document in one libxo style."""

    def __init__(self, options: Libxo):
        self.style, self.pretty = options.style, options.pretty
        self.underscores, self.by = options.underscores, options.indent
        self.ppn = "\n" if self.pretty else ""
        self.out: list[str] = []
        self.frames: list[bool] = [False]  # json: each open level's "something emitted"
        self.open: list[tuple[str, str]] = []  # (kind, name)
        self.top = False
        self.version: str | None = None
        self.depth = 0  # xml indentation
        self.in_line = False  # html

    def text(self) -> str:
        return "".join(self.out)

    def _ind(self, level: int) -> str:
        return " " * (level * self.by) if self.pretty else ""

    def _name(self, name: str) -> str:
        return name.replace("-", "_") if self.underscores else name

    # display: titles, padding, literal text, line ends
    def _div(self, cls: str, content: str, tag: str | None = None) -> None:
        if not self.in_line:
            self.out.append('<div class="line">' + self.ppn)
            self.in_line = True
        attr = f' data-tag="{_xml_escape(tag)}"' if tag is not None else ""
        self.out.append(f'{"  " if self.pretty else ""}<div class="{cls}"{attr}>'
                        f"{_xml_escape(content)}</div>{self.ppn}")

    def _display(self, cls: str, content: str) -> None:
        if self.style == "text":
            self.out.append(content)
        elif self.style == "html":
            self._div(cls, content)

    def title(self, content: str) -> None:
        self._display("title", content)

    def pad(self, content: str) -> None:
        self._display("padding", content)

    def literal(self, content: str) -> None:
        self._display("text", content)

    def newline(self) -> None:
        if self.style == "text":
            self.out.append("\n")
        elif self.style == "html" and self.in_line:
            self.out.append("</div>" + self.ppn)
            self.in_line = False

    # data
    def value(self, name: str, display: str, encoded: str | None = None, *,
              numeric: bool = False, display_only: bool = False, encode_only: bool = False,
              tag: str | None = "") -> None:
        """A value field: `display` in text and html (data-tag `tag`, default the name; None:
        no data-tag), `encoded` (default display) in json and xml."""
        encoded = display if encoded is None else encoded
        if self.style == "text":
            if not encode_only:
                self.out.append(display)
        elif self.style == "html":
            if not encode_only:
                self._div("data", display, name if tag == "" else tag)
        elif not display_only:
            if self.style == "json":
                self._top()
                self._prep(leaf=False)
                self.out.append(f'{self._ind(len(self.frames))}"{_json_escape(self._name(name))}'
                                f'":{" " if self.pretty else ""}')
                self.out.append(encoded if numeric else f'"{_json_escape(encoded)}"')
            else:
                self._xml_leaf(name, encoded)

    def leaf(self, display: str) -> None:
        """An item of the open list, as a leaf-list value (jls.c's `{ql:...}`)."""
        if self.style == "text":
            self.out.append(display)
        elif self.style == "html":
            self._div("data", display, self.open[-1][1] if self.open else "")
        elif self.style == "json":
            first = not self.frames[-1]
            self._prep(leaf=True)
            if not first and self.pretty:
                self.out.append("\n")
            self.out.append(f'{self._ind(len(self.frames))}"{_json_escape(display)}"')
        else:
            self._xml_leaf(self.open[-1][1] if self.open else "", display)

    def _xml_leaf(self, name: str, encoded: str) -> None:
        self.out.append(f"{self._ind(self.depth)}<{name}{self._attr()}>{_xml_escape(encoded)}"
                        f"</{name}>{self.ppn}")

    def _attr(self) -> str:
        if self.version is None:
            return ""
        version, self.version = self.version, None
        return f' version="{version}"'

    def _prep(self, leaf: bool) -> None:
        if self.frames[-1]:
            self.out.append("," + ("\n" if self.pretty and not leaf else ""))
        else:
            self.frames[-1] = True

    def _top(self) -> None:
        if not self.top:
            self.top = True
            self.out.append("{" + self.ppn)
            if self.version is not None:
                self.out.append(f'{self._ind(1)}"__version": "{self.version}", {self.ppn}')

    # structure
    def set_version(self, version: str) -> None:
        if self.style in ("json", "xml"):
            self.version = version

    def _open(self, kind: str, name: str) -> None:
        self.open.append((kind, name))
        if self.style == "json":
            self._top()
            pre = ((",\n" if self.pretty else ", ") if self.frames[-1] else "")
            self.frames[-1] = True
            level = self._ind(len(self.frames))
            if kind == "instance":
                self.out.append(f"{pre}{level}{{{self.ppn}")
            else:
                bracket = "[" if kind == "list" else "{"
                self.out.append(f'{pre}{level}"{_json_escape(self._name(name))}": '
                                f"{bracket}{self.ppn}")
            self.frames.append(False)
        elif self.style == "xml" and kind != "list":
            self.out.append(f"{self._ind(self.depth)}<{name}{self._attr()}>{self.ppn}")
            self.depth += 1

    def close(self) -> None:
        if not self.open:
            return
        kind, name = self.open.pop()
        if self.style == "json":
            had = self.frames.pop()
            nl = "\n" if self.pretty and (had or kind != "list") else ""
            self.out.append(f"{nl}{self._ind(len(self.frames))}{']' if kind == 'list' else '}'}")
            self.frames[-1] = True
        elif self.style == "xml" and kind != "list":
            self.depth -= 1
            self.out.append(f"{self._ind(self.depth)}</{name}>{self.ppn}")

    def open_container(self, name: str) -> None:
        self._open("container", name)

    def open_list(self, name: str) -> None:
        self._open("list", name)

    def open_instance(self, name: str) -> None:
        self._open("instance", name)

    def finish(self) -> None:
        while self.open:
            self.close()
        if self.style == "json":
            self.out.append(("\n" if self.pretty else "") + "}\n" if self.top else "{ }\n")


# ---- the output forms ------------------------------------------------------------------------

def _cut(text: str, width: int) -> str:
    return text[:width]


def _header(xo: _Xo, pflags: int, names: list[str]) -> None:
    if pflags & VERBOSE:
        xo.title("   ")
        xo.title("JID")
        xo.pad("  ")
        xo.title("Hostname")
        xo.pad(" " * 22)
        xo.title("Path")
        xo.newline()
        xo.pad(" " * 8)
        xo.title("Name")
        xo.pad(" " * 26)
        xo.title("State")
        xo.newline()
        xo.pad(" " * 8)
        xo.title("CPUSetID")
        xo.newline()
        xo.pad(" " * 8)
        xo.title("IP Address(es)")
        xo.newline()
    elif pflags & DEFAULT:
        if pflags & JAIL_NAME:
            for i, (title, width) in enumerate((("JID", 15), ("IP Address", 15),
                                                ("Hostname", 29), ("Path", 0))):
                xo.pad(" ")
                xo.title(f"{title:<{width}}")
                if i == 3:
                    xo.newline()
        else:
            xo.title(f"{'JID':>6}")
            xo.pad("  ")
            xo.title("IP Address")
            xo.pad(" " * 6)
            xo.title("Hostname")
            xo.pad(" " * 22)
            xo.title("Path")
            xo.newline()
    elif pflags & HEADER:
        for i, name in enumerate(names):
            if i:
                xo.pad(" ")
            xo.literal(name)
        xo.pad("\n")


def _ip_list(xo: _Xo, list_name: str, addresses: list[str]) -> None:
    xo.open_list(list_name)
    for address in addresses:
        xo.pad(" " * 8)
        xo.leaf(address)
        xo.pad("\n")
    xo.close()


def _quoted(value: str, pflags: int) -> tuple[str, str]:
    """jls.c's choice of quote ('"' for a value with ' or blanks, "'" for one with "), and
    the value as shown: with -q, backslashes and that quote escaped with a backslash (as
    FreeBSD's jls before libxo did), so that sh and jail(8) read back the value given; a
    value with both a '"' and a backslash is double-quoted, since "'" cannot escape."""
    mark = ('"' if "'" in value else "'" if '"' in value
            else '"' if (" " in value or "\t" in value) else "")
    if not pflags & QUOTED:
        return "", value
    if mark == "'" and "\\" not in value:
        return mark, value  # nothing in it needs a backslash
    shown = value.replace("\\", "\\\\")
    if mark:
        mark, shown = '"', shown.replace('"', '\\"')
    return mark, shown


def _jail(xo: _Xo, record: Record, pflags: int, names: list[str]) -> None:
    values = params(record)
    xo.open_instance("jail")
    if pflags & VERBOSE:
        xo.value("jid", f"{record.jid:6d}", str(record.jid), numeric=True)
        xo.pad("  ")
        xo.value("hostname", f"{_cut(record.hostname, 29):<29}", record.hostname)
        xo.pad(" ")
        xo.value("path", _cut(record.path, 74), record.path)
        xo.newline()
        xo.pad(" " * 8)
        xo.value("name", f"{_cut(record.name, 29):<29}", record.name)
        xo.pad(" ")
        xo.value("state", "DYING" if values["dying"] else "ACTIVE")
        xo.newline()
        xo.pad(" " * 8)
        xo.value("cpusetid", str(values["cpuset.id"]), numeric=True)
        xo.newline()
        _ip_list(xo, "ipv4_addrs", values["ip4.addr"])
        _ip_list(xo, "ipv6_addrs", values["ip6.addr"])
    elif pflags & DEFAULT:
        if pflags & JAIL_NAME:
            xo.pad(" ")
            xo.value("name", f"{record.name:<15}", record.name)
            xo.pad(" ")
        else:
            xo.value("jid", f"{record.jid:6d}", str(record.jid), numeric=True)
            xo.pad("  ")
        ip4 = (values["ip4.addr"] or [""])[0]
        xo.value("ipv4", f"{_cut(ip4, 15):<15}", ip4)
        xo.pad(" ")
        xo.value("hostname", f"{_cut(record.hostname, 29):<29}", record.hostname)
        xo.pad(" ")
        xo.value("path", _cut(record.path, 74), record.path)
        xo.newline()
    else:
        _param_fields(xo, values, pflags, names)
    xo.close()


def _param_fields(xo: _Xo, values: dict[str, object], pflags: int, names: list[str]) -> None:
    as_list = xo.style in ("json", "xml")
    first = True
    for name in names:
        plain, nobool = _resolve(name) or (name, False)
        if pflags & SKIP and _skipped(name, values):
            continue
        if not first:
            xo.pad(" ")
        first = False
        value = values[plain]
        is_bool = jailparams.TABLE[plain].kind == "bool"
        if nobool:
            value = not _is_set(value)
        if pflags & NAMEVAL:
            if is_bool:
                on = _is_set(value)
                # jls.c: a true noNAME encodes true, and so (sic) does a false one
                xo.value(name, "", "true" if on or nobool else "false", numeric=True,
                         encode_only=True)
                xo.value("", name if on else (plain if nobool else _noname(name)),
                         display_only=True, tag=None)
                continue
            xo.value("%s", name, display_only=True, tag="%s")
            xo.literal("=")
        text = _export(value)
        if not as_list and text is None:
            if pflags & QUOTED:
                xo.pad('""')
            elif not pflags & NAMEVAL:
                xo.pad("-")
        elif as_list and plain in ("ip4.addr", "ip6.addr"):
            xo.open_list(name)
            for address in value if isinstance(value, list) else []:
                xo.pad(" " * 8)
                xo.leaf(str(address))
                xo.pad("\n")
            xo.close()
        elif not text:
            xo.value(name, '""', "")
        else:
            mark, shown = _quoted(text, pflags)
            if mark:
                xo.pad(mark)
            xo.value(name, shown, text)
            if mark:
                xo.pad(mark)
    xo.pad("\n")


def render(records: list[Record], pflags: int, names: list[str],
           options: Libxo | None = None) -> str:
    """The whole output of jls for these jails, with jls.c's print flags (DEFAULT, VERBOSE
    or the parameter forms, which print `names`)."""
    xo = _Xo(options or Libxo())
    xo.set_version(XO_VERSION)
    _header(xo, pflags, names)
    xo.open_container("jail-information")
    xo.open_list("jail")
    for record in records:
        _jail(xo, record, pflags, names)
    xo.finish()
    return xo.text()


def _mode(style: Style, names: list[str], verbose: bool = False) -> tuple[int, list[str]]:
    pflags = style.flags()
    if names:
        return pflags, expand(names)
    if pflags & (HEADER | NAMEVAL):
        return pflags, list(ALL_PARAMS)
    return pflags | (VERBOSE if verbose else DEFAULT), []


def default_table(records: list[Record], by_name: bool = False) -> str:
    return render(records, DEFAULT | (JAIL_NAME if by_name else 0), [])


def verbose_table(records: list[Record]) -> str:
    return render(records, VERBOSE, [])


def param_lines(records: list[Record], names: list[str], style: Style) -> str:
    """-n, -h, -q, -s and named parameters: one line per jail."""
    return render(records, style.flags(), expand(names))


def libxo_json(records: list[Record], names: list[str] | None, verbose: bool) -> str:
    """`--libxo json`: {"__version": "2", "jail-information": {"jail": [...]}}."""
    pflags = (NAMEVAL if names is not None else (VERBOSE if verbose else DEFAULT))
    return render(records, pflags, expand(names or []), Libxo(style="json"))


# ---- the command -----------------------------------------------------------------------------

class _Fail(Exception):
    pass


def _write(stream: TextIO, text: str) -> None:
    if not text:
        return
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(text)
        stream.flush()
        return
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "backslashreplace")
    stream.flush()
    buffer.write(data)
    buffer.flush()


def _leading_digits(text: str) -> str:
    """The ASCII digits text starts with (what libxo's and strtoul(3)'s loops read)."""
    return text[:len(text) - len(text.lstrip("0123456789"))]


def _jail_key(text: str) -> int:
    """jls.c's -j: strtoul(3) of the argument; 0 (or trailing junk) means a name."""
    body = text.lstrip(" \t\n\v\f\r")  # isspace(3)'s, in the C locale
    sign = body[:1] if body[:1] in ("+", "-") else ""
    digits = _leading_digits(body[len(sign):])
    if not digits or len(sign) + len(digits) != len(body):
        return 0
    number = int(digits) % (1 << 64)
    number = -((1 << 64) - number) if sign == "-" and number else number
    number = (number + (1 << 31)) % (1 << 32) - (1 << 31)  # as jls.c's int
    return 0 if number == 0 else number


def main(argv: list[str] | None = None, *, registry=None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """jls(8): argv without the program name (sys.argv[1:] by default). Prints to stdout
    and stderr (sys.stdout/sys.stderr by default) and returns the exit status: 0, or 1 for
    every error, as FreeBSD's jls. registry: a hyjail.registry.Registry (default: the
    user's). Never raises (SystemExit included) for any argv."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out, err = stdout or sys.stdout, stderr or sys.stderr

    def warn(message: str) -> None:
        _write(err, f"{PROG}: {message}\n")

    try:
        try:
            argv, options, warnings = libxo_args(argv)
        except LibxoError as e:
            for message in e.args:
                warn(message)
            return 1
        for message in warnings:
            warn(message)
        return _run(argv, options, registry, out, warn)
    except BrokenPipeError:
        return 1


def _run(argv: list[str], options: Libxo, registry, out: TextIO, warn) -> int:
    xo_empty = _Xo(options)

    def fail(message: str) -> int:  # xo_errx: the message, then the document closed
        warn(message)
        xo_empty.set_version(XO_VERSION)
        xo_empty.finish()
        _write(out, xo_empty.text())
        return 1

    try:
        opts, args = getopt3.parse(argv, OPTIONS)
    except getopt3.OptionError as e:
        warn(f"{e.reason} -- {one_line(e.character)}")
        return fail(USAGE)
    pflags, jid, jname, check = 0, 0, None, False
    for opt, value in opts:
        if opt == "-j":
            jid = _jail_key(value)
            jname = None if jid else value
        elif opt == "-h":
            pflags = (pflags & ~(SKIP | VERBOSE)) | HEADER
        elif opt == "-N":
            pflags |= JAIL_NAME
        elif opt == "-n":
            pflags = (pflags & ~VERBOSE) | NAMEVAL
        elif opt == "-q":
            pflags |= QUOTED
        elif opt == "-s":
            pflags = (pflags & ~(HEADER | VERBOSE)) | NAMEVAL | QUOTED | SKIP
        elif opt == "-v":
            pflags = (pflags & ~(HEADER | NAMEVAL | SKIP)) | VERBOSE
        elif opt == "-c":
            check = True
        # -a and -d: dying jails too; none linger here
    if check and not jid and jname is None:
        return fail(USAGE)
    if args:
        pflags &= ~VERBOSE
        for name in args:
            if name != "all" and _resolve(name) is None:
                return fail(f"unknown parameter: {one_line(name)}")  # argv's, one printable line
        names = expand(args)
    elif pflags & (HEADER | NAMEVAL):
        names = list(ALL_PARAMS)
    else:
        names = []
        if not pflags & VERBOSE:
            pflags |= DEFAULT
    try:
        if registry is None:
            from hyjail.registry import Registry
            registry = Registry()
        records = registry.live()
    except (OSError, ValueError) as e:
        return fail(getattr(e, "strerror", None) or str(e))
    except Exception as e:  # HyjailError and the like: one line
        return fail(str(e))
    if jid:
        records = [r for r in records if r.jid == jid]
        missing = f"jail {jid} not found"
    elif jname is not None:
        records = [r for r in records if r.name == jname]
        missing = f'jail "{jname}" not found'
    if check:
        return 0 if records else 1
    xo = _Xo(options)
    xo.set_version(XO_VERSION)
    _header(xo, pflags, names)
    xo.open_container("jail-information")
    xo.open_list("jail")
    status = 0
    if (jid or jname is not None) and not records:
        _write(out, xo.text())
        xo.out.clear()
        warn(missing)
        status = 1
    for record in records:
        _jail(xo, record, pflags, names)
    xo.finish()
    _write(out, xo.text())
    return status
