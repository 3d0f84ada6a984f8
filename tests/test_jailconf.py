"""jail.conf(5) parsing and resolution: pure, no kernel."""

from __future__ import annotations

import pytest

from hyjail.errors import UsageError
from hyjail.jailconf import jail_names, parse, resolve

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
    ("a { b { } }", 1),
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
