"""jail.conf(5) parsing and resolution: pure, no kernel."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyjail.errors import HyjailError, UsageError
from hyjail.jailconf import (
    default_config_path,
    is_wildcard,
    jail_names,
    jid_of,
    load,
    load_default,
    parse,
    resolve,
    same_option,
    wildcard_matches,
)

CONF = """
# defaults for every jail
exec.clean;
path = "/srv/jails/$name";
host.hostname = "${name}.example.org";
$net = 10.77.3;

* {
    mount.devfs;  // a wildcard block applies to all
}

web {
    ip4.addr = "${net}.5";
    ip4.addr += ${net}.6, '${literal}';
    exec.start = "/bin/sh /etc/rc";
    persist;
}

/* a second jail,
   over several lines */
db {
    host.hostname = db;
    ip4.addr = 10.77.3.7;
    exec.prestart = "echo starting $name at ${path}";
}
"""


def test_jails_and_their_resolved_parameters():
    config = parse(CONF, "test.conf")
    assert jail_names(config) == ["web", "db"]
    web = resolve(config, "web")
    assert web == {
        "name": ["web"], "exec.clean": True, "path": ["/srv/jails/web"],
        "host.hostname": ["web.example.org"], "mount.devfs": True,
        "ip4.addr": ["10.77.3.5", "10.77.3.6", "${literal}"],
        "exec.start": ["/bin/sh /etc/rc"], "persist": True}
    db = resolve(config, "db")
    assert db["host.hostname"] == ["db"]
    assert db["exec.prestart"] == ["echo starting db at /srv/jails/db"]


@pytest.mark.parametrize("text,line", [
    ("web {\n path = /x\n}\n", 2),
    ("web {\n path = /x;\n", 2),
    ("}\n", 1),
    ("a { b { } ", 1),
    ("path = ;", 1),
    ("path = 'unterminated;\n", 1),
])
def test_syntax_errors_name_file_and_line(text, line):
    with pytest.raises(UsageError) as err:
        parse(text, "bad.conf")
    assert str(err.value).startswith(f"bad.conf:{line}: ")


def test_unknown_reference_and_loops_are_errors():
    with pytest.raises(UsageError, match="names no parameter"):
        resolve(parse('j { path = "$nothing"; }'), "j")
    with pytest.raises(UsageError, match="itself"):
        resolve(parse('j { $a = "$b"; $b = "$a"; path = $a; }'), "j")
    with pytest.raises(UsageError, match="no such jail"):
        resolve(parse("j { persist; }"), "other")


def test_dollar_escape_and_dotted_references():
    config = parse('j { host.hostname = h; a = "${host.hostname}.$name.x \\$HOME"; }')
    assert resolve(config, "j")["a"] == ["h.j.x $HOME"]


# --- FreeBSD's grammar (jailparse.y, jaillex.l) ------------------------------------------------

def one(text: str, jail: str = "j") -> dict:
    return resolve(parse(text, "t.conf"), jail)


def test_name_value_without_equals_and_the_other_statement_forms():
    assert one("j { path /x; ip4.addr 10.0.0.1, 10.0.0.2; persist; a = 1; a += 2, 3; }") == {
        "name": ["j"], "path": ["/x"], "ip4.addr": ["10.0.0.1", "10.0.0.2"], "persist": True,
        "a": ["1", "2", "3"]}


def test_plus_equals_without_an_earlier_value_and_a_bare_name_clearing_one():
    assert one("j { a += x; b = y; b; }") == {"name": ["j"], "a": ["x"], "b": True}


@pytest.mark.parametrize("value,expected", [
    ('"a""b"', "ab"),
    ("\"a\"'b'c", "abc"),
    ("x\"$name\"'$name'$name", "xj$namej"),  # each piece keeps its own expansion rule
    ('"${name}"y', "jy"),
    ("a+b*c/d$", "a+b*c/d$"),  # one-character words join their neighbours
    ('""', ""),
])
def test_adjacent_pieces_are_one_string(value, expected):
    assert one(f"j {{ v = {value}; }}")["v"] == [expected]


def test_pieces_apart_are_two_strings_a_syntax_error_as_in_freebsd():
    # jaillex.l joins only touching pieces (STR1); whitespace between makes a new STR.
    with pytest.raises(UsageError, match=r"^t\.conf:1: missing ';' after v$"):
        parse('j { v = "a" "b"; }', "t.conf")


@pytest.mark.parametrize("value,expected", [
    (r'"\n\t\a\b\f\r\v"', "\n\t\a\b\f\r\v"),
    (r'"\\ \" \$HOME \q"', '\\ " $HOME q'),
    (r'"\101\0101\x41\x4a1"', "A\b1AJ1"),  # up to 3 octal, 2 hex digits
    (r'"a\x"', "a"),  # \x with no digit is a NUL, which ends the C string
    (r"'it\'s \n $x'", "it's \n $x"),  # single quotes: escapes yes, expansion no
    (r"a\ b\;c", "a b;c"),  # escapes in a bare word too
    (r'"\303\251"', "é"),  # escaped bytes that form UTF-8
    ('"one\\\ntwo"', "onetwo"),  # backslash-newline continues the string
    ("one\\\ntwo", "onetwo"),  # and a bare word
    ('"two\nlines"', "two\nlines"),
])
def test_backslash_escapes(value, expected):
    assert one(f"j {{ v = {value}; }}")["v"] == [expected]


def test_escaped_newlines_still_count_lines():
    with pytest.raises(UsageError, match=r"^t\.conf:6: "):
        parse('a = "x\\\ny\nz";\nb = \\\nc;\n=', "t.conf")


def test_empty_statements_everywhere():
    config = parse(";;\n; j { ; ; persist;; } ;\n;", "t.conf")
    assert jail_names(config) == ["j"]
    assert resolve(config, "j") == {"name": ["j"], "persist": True}


def test_a_numbered_block_is_that_jid():
    config = parse("5 { path = /x; }  7 { name = seven; }  0 { }  web { }", "t.conf")
    assert resolve(config, "5") == {"jid": ["5"], "path": ["/x"], "name": ["5"]}
    assert resolve(config, "7") == {"jid": ["7"], "name": ["seven"]}
    assert resolve(config, "0") == {"name": ["0"]}  # strtol gives 0: a name, not a jid
    assert (jid_of("5"), jid_of("web"), jid_of("0"), jid_of("5a")) == (5, None, None, None)
    with pytest.raises(UsageError, match='cannot redefine parameter "jid"'):
        resolve(parse("5 { jid = 6; }"), "5")
    with pytest.raises(UsageError, match='cannot redefine parameter "name"'):
        resolve(parse("web { name = other; }"), "web")


def test_wildcards_in_file_order():
    config = parse("""
        a = top;
        * { b = early; c = early; }
        "bar.*" { d = bar; }
        bar { b = own; c = own; sub { e; } }
        "bar.*.x" { f; }
        "bar.y" { }
        * { c = late; }
    """, "t.conf")
    assert jail_names(config) == ["bar", "bar.sub", "bar.y"]
    assert resolve(config, "bar") == {"name": ["bar"], "a": ["top"], "b": ["own"],
                                      "c": ["late"]}
    assert resolve(config, "bar.sub") == {"name": ["bar.sub"], "a": ["top"], "b": ["early"],
                                          "c": ["late"], "d": ["bar"], "e": True}
    assert jail_names(config, "bar.*") == ["bar.sub", "bar.y"]
    assert jail_names(config, "*") == ["bar", "bar.sub", "bar.y"]
    assert jail_names(config, "bar") == ["bar"]


@pytest.mark.parametrize("name,pattern,matches", [
    ("foo.bar", "foo.*", True), ("foo.bar.baz", "foo.*", True), ("foo", "foo.*", False),
    ("a.b.c", "a.*.c", True), ("a.b.d", "a.*.c", False), ("anything", "*", True),
    ("a.b", "*", True), ("x.b", "a.*", False), ("a.b", "a.b", True),
])
def test_wildcard_matching(name, pattern, matches):
    assert wildcard_matches(name, pattern) is matches
    assert is_wildcard(pattern) is ("*" in pattern.split("."))


def test_nested_blocks_name_child_jails():
    config = parse("host { path = /h; web { path = /w; * { persist; } } }", "t.conf")
    assert jail_names(config) == ["host", "host.web"]
    assert resolve(config, "host.web") == {"name": ["host.web"], "path": ["/w"]}
    assert "host.web.*" in config


def test_names_freebsd_accepts():
    config = parse("""my_jail { host.hostname = "my host_name.example.org"; }
        "with space" { }  'it.has.dots' { }  web-1 { host.hostname = a-b_c.d; }""", "t.conf")
    assert jail_names(config) == ["my_jail", "with space", "it.has.dots", "web-1"]
    assert resolve(config, "my_jail")["host.hostname"] == ["my host_name.example.org"]
    assert resolve(config, "web-1")["host.hostname"] == ["a-b_c.d"]


def test_no_prefix_is_the_same_option_and_the_later_one_wins():
    assert one("j { persist; allow.mount; } * { nopersist; allow.nomount; }") == {
        "name": ["j"], "nopersist": True, "allow.nomount": True}
    assert same_option("allow.mount", "allow.nomount") and not same_option("a.x", "b.nox")


def test_variables_lists_and_their_errors():
    assert one("$x = a, b; j { ip4.addr = $x; p = \"$x\"; }")["ip4.addr"] == ["a", "b"]
    with pytest.raises(UsageError, match="array cannot be substituted inline"):
        one('$x = a, b; j { ip4.addr = "y$x"; }')
    with pytest.raises(UsageError, match="names no parameter"):
        one("j { persist; p = $persist; }")  # a bare boolean has no value to substitute
    with pytest.raises(UsageError, match='variable "\\$path" cannot have the same name'):
        one("j { $path = 1; path = 2; }")
    assert one("j { ${a b} = 1; c = ${a b}; }")["c"] == ["1"]


# --- .include ---------------------------------------------------------------------------------

def test_include_files_and_globs_relative_to_the_including_file(tmp_path):
    (tmp_path / "jail.conf.d").mkdir()
    (tmp_path / "jail.conf.d" / "b.conf").write_text("b { path = /b; }\n")
    (tmp_path / "jail.conf.d" / "a.conf").write_text("a { path = /a; }\n")
    (tmp_path / "jail.conf.d" / "skip.txt").write_text("nope { }\n")
    (tmp_path / "common").write_text("persist;\n")
    (tmp_path / "inner").write_text("$v = inner;\n")
    main = tmp_path / "jail.conf"
    main.write_text('.include "common";\n.include "jail.conf.d/*.conf";\n'
                    '.include "none/*.conf";\nc { .include "inner"; p = $v; }\n')
    config = load(str(main))
    assert jail_names(config) == ["a", "b", "c"]
    assert resolve(config, "a") == {"name": ["a"], "persist": True, "path": ["/a"]}
    assert resolve(config, "c") == {"name": ["c"], "persist": True, "p": ["inner"]}


def test_include_errors_name_the_including_file_and_line(tmp_path):
    main = tmp_path / "jail.conf"
    main.write_text('\n.include "missing.conf";\n')
    with pytest.raises(UsageError) as err:
        load(str(main))
    assert str(err.value) == (f"{main}:2: .include {tmp_path}/missing.conf: "
                              "No such file or directory")
    main.write_text('x;\n\n.include "other";\n')
    (tmp_path / "other").write_text('.include "jail.conf";\n')
    with pytest.raises(UsageError, match=rf"^{tmp_path}/other:1: \.include loop: "):
        load(str(main))
    main.write_text('.include "$x";\n')
    with pytest.raises(UsageError, match=r":1: variables not permitted in '\.include'"):
        load(str(main))
    main.write_text('.include "other";\n')
    (tmp_path / "other").write_text("a {\n")
    with pytest.raises(UsageError, match=rf"^{tmp_path}/other:1: block a .* not closed$"):
        load(str(main))


def test_include_with_equals_is_an_ordinary_parameter():
    assert one('j { .include = "x"; }')[".include"] == ["x"]


# --- the default configuration ---------------------------------------------------------------

def test_default_configuration(tmp_path):
    etc = tmp_path
    assert default_config_path(etc=str(etc)) == f"{etc}/jail.conf"
    (etc / "jail.conf").write_text("main { }\n")
    assert jail_names(load_default(etc=str(etc))) == ["main"]
    assert default_config_path("web", str(etc)) == f"{etc}/jail.conf"
    (etc / "jail.conf.d").mkdir()
    (etc / "jail.conf.d" / "web.conf").write_text("web { }\n")
    assert default_config_path("web", str(etc)) == f"{etc}/jail.conf.d/web.conf"
    (etc / "jail.web.conf").write_text("web { persist; }\n")
    assert default_config_path("web", str(etc)) == f"{etc}/jail.web.conf"
    assert resolve(load_default("web", str(etc)), "web")["persist"] is True
    (etc / "jail.conf.d" / "a_b.conf").write_text("'a.b' { }\n")
    assert default_config_path("a.b", str(etc)) == f"{etc}/jail.conf.d/a_b.conf"
    assert len(load_default(etc=str(etc / "none"), missing_ok=True)) == 1  # just ""
    with pytest.raises(HyjailError, match="No such file"):
        load_default(etc=str(etc / "none"))


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,line,message", [
    ("a b c;", 1, "missing ';' after a"),
    ("j {\n  v = \"a\" \"b\";\n}", 2, "missing ';' after v"),
    ("\n\nj { x = ${a\n }", 3, "unterminated variable"),
    ("j { x = ${a; }", 1, "missing ';' after x"),  # the variable is named "a; "
    ('x = "${a";', 1, "unterminated variable"),
    ("x = \"open\n\n", 1, "unterminated string"),
    ("\n/* open\n", 2, "unterminated comment"),
    ("j {\r\n}", 1, "unexpected carriage return (FreeBSD's jail takes no CRLF line ends)"),
    ("j { v = caf\u00e9; }", 1, "unexpected character '\u00e9'"),
    ("= x;", 1, "unexpected '='"),
    ("\n{ }", 2, "unexpected '{'"),
    ("$v { }", 1, "unexpected '{' after $v"),
    ("foo.* { }", 1, "unexpected '*' after 'foo.': a name is one token "
     "(quote it, as in \"foo.*\" {)"),
    ('"" { }', 1, "a jail block needs a name"),
    ("x = a, ;", 1, "missing value after ','"),
    ("x +=;", 1, "missing value for x"),
    ("x = a;\n}", 2, "'}' without a block"),
    ("a {\n b {\n", 2, "block a.b (line 2) is not closed"),
])
def test_every_syntax_error_is_one_line(text, line, message):
    with pytest.raises(UsageError) as err:
        parse(text, "bad.conf")
    assert str(err.value) == f"bad.conf:{line}: {message}"


_WORDS = ["j", "web", "5", "*", '"foo.*"', "=", "+=", ";", ",", "{", "}", " ", "\n", "$x",
          "${x}", "${", '"', "'", "\\", "\\\n", "#", "//", "/*", "*/", "persist", "path",
          "name", "nopersist", "a.b", '"$x"', "'$x'", "\\x4", "\\0", "\r", "\u00e9", "$"]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=60),
                 st.lists(st.sampled_from(_WORDS), max_size=40).map("".join)))
def test_random_text_parses_or_is_a_usage_error(text):
    try:
        config = parse(text, "fuzz.conf")
        for name in jail_names(config):
            resolve(config, name)
    except UsageError as e:
        assert re.fullmatch(r"fuzz\.conf:\d+: [^\n]+", str(e)), str(e)
