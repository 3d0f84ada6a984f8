"""jls(8) drop-in: FreeBSD's layouts byte for byte (pure formatting, every libxo style), the
getopt command line (main(), on an in-memory registry), and the command on real jails."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyjail import jailparams, jls, lifecycle
from hyjail.registry import Record, Registry

from conftest import guard, jail_ip, jail_record, needs, needs_root, running, veth_args


def _record(jid, name, hostname, path, addresses, **params):
    return Record(jid=jid, name=name, hostname=hostname, path=path, addresses=addresses,
                  backend="ns", supervisor_pid=1, supervisor_start=0, started=0.0,
                  params=params)


ONE = _record(1, "1", "ahost", "/", ("127.0.0.1",))
TWO = _record(12, "web", "a-very-long-host-name.example.org", "/srv/jails/web",
              ("10.0.0.5", "fd00::5", "10.0.0.6"), persist=True,
              jail_params={"meta": "tag one", "allow.raw_sockets": True, "securelevel": 2})
V6 = _record(3, "six", "six", "/srv/six", ("fd00::6",))

DEFAULT = (
    "   JID  IP Address      Hostname                      Path\n"
    "     1  127.0.0.1       ahost                         /\n"
    "    12  10.0.0.5        a-very-long-host-name.example /srv/jails/web\n"
    "     3                  six                           /srv/six\n")


class _Registry:
    def __init__(self, records):
        self.records = list(records)

    def live(self):
        return self.records


def run(*argv, records=(ONE, TWO, V6)):
    out, err = io.StringIO(), io.StringIO()
    status = jls.main(list(argv), registry=_Registry(records), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


USAGE = ("jls: usage: jls [-dhNnqv] [-j jail] [param ...]\n"
         "       jls -c [-d] -j jail\n")


def test_default_table():
    assert jls.default_table([ONE, TWO, V6]) == DEFAULT
    assert jls.default_table([]) == DEFAULT.splitlines(keepends=True)[0]
    assert run() == (0, DEFAULT, "")
    assert run("-q")[1] == DEFAULT  # -q alone changes nothing


def test_names_table():
    names = (
        " JID             IP Address      Hostname                      Path\n"
        " 1               127.0.0.1       ahost                         /\n"
        " web             10.0.0.5        a-very-long-host-name.example /srv/jails/web\n")
    assert jls.default_table([ONE, TWO], by_name=True) == names
    assert run("-N", records=[ONE, TWO])[1] == names


def test_verbose_table():
    verbose = (
        "   JID  Hostname                      Path\n"
        "        Name                          State\n"
        "        CPUSetID\n"
        "        IP Address(es)\n"
        "    12  a-very-long-host-name.example /srv/jails/web\n"
        "        web                           ACTIVE\n"
        "        -1\n"
        "        10.0.0.5\n"
        "        10.0.0.6\n"
        "        fd00::5\n")
    assert jls.verbose_table([TWO]) == verbose
    assert run("-v", records=[TWO])[1] == verbose
    assert run("-nv", records=[TWO])[1] == verbose  # the last of -n/-v wins
    assert run("-vn", "jid", records=[TWO])[1] == "jid=12\n"
    assert run("-v", "jid", records=[TWO])[1] == "12\n"  # parameters turn -v off


def test_all_parameters_in_freebsds_order():
    names = list(jls.ALL_PARAMS)
    assert sorted(names) == sorted(jailparams.JAIL_PARAMS)
    dotted = [n for n in names if "." in n]
    assert names == sorted(set(names) - set(dotted)) + sorted(dotted)
    line = run("-n", records=[ONE])[1]
    assert line == run("-n", "all", records=[ONE])[1]
    words = line.split()
    assert len(words) == len(names)
    assert words[:3] == ["devfs_ruleset=0", "nodying",
                         "enforce_statfs=2"]
    for word in ("jid=1", "name=1", "path=/", "nopersist", "host.hostname=ahost",
                 "ip4.addr=127.0.0.1", "ip6.addr=", "cpuset.id=-1", "parent=0",
                 "children.cur=0", "allow.set_hostname", "allow.noraw_sockets", "ip4=new",
                 'host.domainname=""', "sysvshm=disable", "securelevel=-1"):
        assert word in words, word


def test_values_from_the_record_then_jail_params_then_defaults():
    values = jls.params(TWO)
    assert values["persist"] is True and values["meta"] == "tag one"
    assert values["allow.raw_sockets"] is True and values["securelevel"] == 2
    assert values["ip4.addr"] == ["10.0.0.5", "10.0.0.6"] and values["ip6.addr"] == ["fd00::5"]
    assert values["enforce_statfs"] == 2 and values["dying"] is False
    stored = _record(2, "ro", "ro", "/", (), jail_params={"dying": True, "cpuset.id": 7})
    assert jls.params(stored)["dying"] is False and jls.params(stored)["cpuset.id"] == -1
    assert jls.params(_record(2, "x", "x", "/", (), jail_params="junk"))["meta"] == ""


def test_name_value_forms():
    assert run("-n", "jid", "name", "persist", "dying", "ip6.addr", records=[ONE])[1] == (
        "jid=1 name=1 nopersist nodying ip6.addr=\n")
    assert run("-nq", "ip6.addr", "meta", records=[ONE])[1] == 'ip6.addr="" meta=""\n'
    assert run("-h", "ip4.addr", "ip6.addr", records=[TWO])[1] == (
        "ip4.addr ip6.addr\n10.0.0.5,10.0.0.6 fd00::5\n")
    assert run("ip4.addr", "persist", records=[V6])[1] == "- false\n"
    assert run("-n", "nopersist", "allow.noraw_sockets", records=[TWO])[1] == (
        "persist allow.raw_sockets\n")
    assert run("-n", "nopersist", records=[ONE])[1] == "nopersist\n"
    assert run("jid", "jid", "name", records=[ONE])[1] == "1 1\n"  # each once
    style = jls.Style(nameval=True, quoted=True, skip=True)
    assert jls.param_lines([ONE], ["jid", "dying", "ip6.addr"], style) == 'jid=1 ip6.addr=""\n'


def test_header_and_skip_flags_as_jls_c_combines_them():
    assert run("-h", "jid", "name", records=[ONE])[1] == "jid name\n1 1\n"
    assert run("-hn", "jid", "name", records=[ONE])[1] == "jid name\njid=1 name=1\n"
    assert run("-hs", "jid", "dying", records=[ONE])[1] == "jid=1\n"  # -s drops -h
    assert run("-sh", "jid", "dying", records=[ONE])[1] == (
        "jid dying\njid=1 nodying\n")  # -h drops -s, keeps -nq
    assert run("-h", records=[ONE])[1].splitlines()[0] == " ".join(jls.ALL_PARAMS)


def test_quoting():
    spaced = _record(4, "q", "q", "/srv/with space", ())
    quote = _record(5, "q2", "q2", "/srv/it's", ())
    double = _record(6, "q3", "q3", '/srv/say "hi"', ())
    style = jls.Style(nameval=True, quoted=True)
    assert jls.param_lines([spaced], ["path"], style) == 'path="/srv/with space"\n'
    assert jls.param_lines([quote], ["path"], style) == "path=\"/srv/it's\"\n"
    assert jls.param_lines([double], ["path"], style) == "path='/srv/say \"hi\"'\n"
    assert jls.param_lines([spaced], ["path"], jls.Style(nameval=True)) == (
        "path=/srv/with space\n")
    assert run("-q", "path", records=[spaced])[1] == '"/srv/with space"\n'
    both = _record(7, "q4", "q4", "/a'b\"c\\d", ())
    assert run("-nq", "path", records=[both])[1] == 'path="/a\'b\\"c\\\\d"\n'
    assert shlex.split(run("-nq", "path", records=[both])[1]) == ["path=/a'b\"c\\d"]


def _settable_round_trip(record):
    status, out, err = run("-s", records=[record])
    assert (status, err) == (0, "")
    words = shlex.split(out)
    assert words == jls.settable_words(record)
    typed = lifecycle.typed(lifecycle.parse_command_line(words))
    values = jls.params(record)
    for name, value in typed.items():
        assert value == values[name], name
    return words


def test_skip_prints_what_jail_c_takes_back():
    words = _settable_round_trip(TWO)
    names = {w.split("=", 1)[0] for w in words}
    assert not names & {"dying", "nodying", "children.cur", "cpuset.id", "parent"}
    assert "vnet=inherit" in words  # FreeBSD's default: the host's network stack
    # What FreeBSD's prints of a jail that did not set them: the defaults, which jail -c
    # takes back as no change (osrelease the host's: no tracer asked for).
    assert {"linux=new", "host.hostuuid=00000000-0000-0000-0000-000000000000",
            f"osrelease={os.uname().release}", "mac.label=",
            "zfs.mount_snapshot=0"} <= set(words)
    assert lifecycle.to_spec(lifecycle.typed(lifecycle.parse_command_line(
        [w for w in words if not w.startswith(("ip", "path="))]))).osrelease == ""
    assert {"jid=12", "name=web", "persist", "allow.raw_sockets", "securelevel=2",
            "meta=tag one", "ip4.addr=10.0.0.5,10.0.0.6"} <= set(words)
    hidden = _record(8, "h", "h", "/", ("10.0.0.8",), jail_params={"ip4": "disable"})
    assert "ip4=disable" in _settable_round_trip(hidden)
    assert not any(w.startswith(("ip4.addr", "ip4.saddrsel")) for w in jls.settable_words(hidden))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.sampled_from("ab /'\"\\\t.-_"), min_size=1, max_size=12),
       st.text(st.sampled_from("ab '\"\\"), max_size=8))
def test_skip_round_trips_any_path_and_meta(path, meta):
    _settable_round_trip(_record(9, "rt", "rt", path, ("10.0.0.9",),
                                 jail_params={"meta": meta}))


def test_libxo_json_shape():
    data = json.loads(jls.libxo_json([ONE, TWO], None, verbose=False))
    assert data == {"__version": "2", "jail-information": {"jail": [
        {"jid": 1, "ipv4": "127.0.0.1", "hostname": "ahost", "path": "/"},
        {"jid": 12, "ipv4": "10.0.0.5", "hostname": TWO.hostname, "path": "/srv/jails/web"}]}}
    named = json.loads(jls.libxo_json([TWO], ["name", "ip4.addr"], verbose=False))
    assert named["jail-information"]["jail"] == [
        {"name": "web", "ip4.addr": ["10.0.0.5", "10.0.0.6"]}]


def test_libxo_json_bytes_as_libxo_prints_them():
    assert run("--libxo", "json", records=[ONE])[1] == (
        '{"__version": "2", "jail-information": {"jail": [{"jid":1,"ipv4":"127.0.0.1",'
        '"hostname":"ahost","path":"/"}]}}\n')
    assert run("--libxo=json", records=[])[1] == (
        '{"__version": "2", "jail-information": {"jail": []}}\n')
    assert run("--libxo", "json,pretty", records=[ONE])[1] == (
        '{\n  "__version": "2", \n  "jail-information": {\n    "jail": [\n      {\n'
        '        "jid": 1,\n        "ipv4": "127.0.0.1",\n        "hostname": "ahost",\n'
        '        "path": "/"\n      }\n    ]\n  }\n}\n')
    assert run("--libxo:JP", records=[ONE])[1] == run("--libxo", "json,pretty",
                                                     records=[ONE])[1]
    verbose = json.loads(run("-v", "--libxo", "json", records=[TWO])[1])
    assert verbose["jail-information"]["jail"] == [{
        "jid": 12, "hostname": TWO.hostname, "path": "/srv/jails/web", "name": "web",
        "state": "ACTIVE", "cpusetid": -1, "ipv4_addrs": ["10.0.0.5", "10.0.0.6"],
        "ipv6_addrs": ["fd00::5"]}]
    assert ', "ipv4_addrs": ["10.0.0.5","10.0.0.6"], ' in run("-v", "--libxo", "json",
                                                             records=[TWO])[1]
    named = json.loads(run("-n", "--libxo", "json", "jid", "persist", "dying", "meta",
                           "ip6.addr", records=[TWO])[1])
    assert named["jail-information"]["jail"] == [
        {"jid": "12", "persist": True, "dying": False, "meta": "tag one",
         "ip6.addr": ["fd00::5"]}]
    plain = json.loads(run("--libxo", "json", "jid", "persist", records=[TWO])[1])
    assert plain["jail-information"]["jail"] == [{"jid": "12", "persist": "true"}]
    full = json.loads(run("-n", "--libxo", "json", records=[ONE])[1])
    assert set(full["jail-information"]["jail"][0]) <= set(jls.ALL_PARAMS)
    underscored = json.loads(run("--libxo", "json,underscores", records=[ONE])[1])
    assert "jail_information" in underscored


def test_libxo_xml_and_html_shape():
    xml = run("--libxo", "xml", records=[ONE, TWO])[1]
    assert xml.startswith('<jail-information version="2"><jail><jid>1</jid><ipv4>127.0.0.1'
                          "</ipv4><hostname>ahost</hostname><path>/</path></jail>")
    root = ET.fromstring(xml)
    assert [j.findtext("jid") for j in root.findall("jail")] == ["1", "12"]
    pretty = run("--libxo", "xml,pretty", "-v", records=[TWO])[1]
    assert "\n    <ipv4_addrs>10.0.0.5</ipv4_addrs>\n    <ipv4_addrs>10.0.0.6</ipv4_addrs>\n" \
        in pretty
    assert [e.text for e in ET.fromstring(pretty).iter("ipv6_addrs")] == ["fd00::5"]
    html = run("--libxo", "html", records=[ONE])[1]
    assert html == (
        '<div class="line"><div class="title">   JID</div><div class="padding">  </div>'
        '<div class="title">IP Address</div><div class="padding">      </div>'
        '<div class="title">Hostname</div><div class="padding">                      </div>'
        '<div class="title">Path</div></div><div class="line">'
        '<div class="data" data-tag="jid">     1</div><div class="padding">  </div>'
        '<div class="data" data-tag="ipv4">127.0.0.1      </div><div class="padding"> </div>'
        '<div class="data" data-tag="hostname">ahost                        </div>'
        '<div class="padding"> </div><div class="data" data-tag="path">/</div></div>')
    pretty_html = run("--libxo", "html,pretty", records=[ONE])[1]
    assert pretty_html.startswith('<div class="line">\n  <div class="title">   JID</div>\n')
    odd = _record(2, "x", "a<b&c", "/", ())
    assert "<hostname>a&lt;b&amp;c</hostname>" in run("--libxo", "xml", records=[odd])[1]
    assert '"hostname":"a<b&c"' in run("--libxo", "json", records=[odd])[1]


def test_names_in_every_style():
    assert json.loads(run("-N", "--libxo", "json", records=[TWO])[1])[
        "jail-information"]["jail"] == [{"name": "web", "ipv4": "10.0.0.5",
                                         "hostname": TWO.hostname, "path": "/srv/jails/web"}]
    assert "<name>web</name><ipv4>" in run("-N", "--libxo", "xml", records=[TWO])[1]
    html = run("-N", "--libxo", "html", records=[TWO])[1]
    assert '<div class="title">JID            </div>' in html
    assert '<div class="data" data-tag="name">web            </div>' in html


def test_select_one_jail():
    assert run("-j", "web", "-n", "name", "jid")[1] == "name=web jid=12\n"
    assert run("-nj", "12", "name")[1] == "name=web\n"
    assert run("-sj", "web", "jid")[1] == "jid=12\n"
    assert run("-j", "six")[1].splitlines()[1].startswith("     3  ")
    assert run("-j", "nosuch") == (1, DEFAULT.splitlines(keepends=True)[0],
                                   'jls: jail "nosuch" not found\n')
    assert run("-j", "99") == (1, DEFAULT.splitlines(keepends=True)[0],
                               "jls: jail 99 not found\n")
    assert run("-j", "nosuch", "--libxo", "json") == (
        1, '{"__version": "2", "jail-information": {"jail": []}}\n',
        'jls: jail "nosuch" not found\n')
    assert run("-d", "-a", "-j", "1", "jid")[1] == "1\n"


def test_check_only():
    assert run("-c", "-j", "web") == (0, "", "")
    assert run("-cj", "12") == (0, "", "")
    assert run("-c", "-j", "nosuch") == (1, "", "")
    assert run("-c") == (1, "", USAGE)


def test_bad_flags_print_usage_and_exit_1():
    assert run("-x") == (1, "", "jls: illegal option -- x\n" + USAGE)
    assert run("-nx") == (1, "", "jls: illegal option -- x\n" + USAGE)
    assert run("-j") == (1, "", "jls: option requires an argument -- j\n" + USAGE)
    assert run("--bogus")[0] == 1
    assert run("--libxo", "json", "-x") == (1, "{ }\n", "jls: illegal option -- x\n" + USAGE)


def test_unknown_parameter_one_line():
    assert run("nosuchparam") == (1, "", "jls: unknown parameter: nosuchparam\n")
    assert run("-n", "jid", "exec.start") == (1, "", "jls: unknown parameter: exec.start\n")
    assert run("--libxo", "json", "bogus") == (1, "{ }\n", "jls: unknown parameter: bogus\n")
    try:
        jls.check_param_names(["jid", "all", "nopersist", "bogus"])
    except KeyError as e:
        assert e.args == ("bogus",)
    else:
        raise AssertionError("bogus accepted")


def test_bad_libxo_options():
    assert run("--libxo", "foo") == (1, "", "jls: unknown libxo option value: 'foo'\n")
    assert run("--libxo") == (1, "", "jls: missing libxo option\n")
    assert run("--libxofoo") == (1, "", "jls: unknown libxo option: '--libxofoo'\n")
    status, out, err = run("--libxo", "json,xml", records=[])
    assert (status, err) == (0, "jls: ignoring multiple styles: 'xml'\n")
    assert json.loads(out)
    assert run("jid", "--libxo", "text", records=[ONE])[1] == "1\n"  # anywhere in argv


def test_main_reads_an_empty_registry(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert jls.main([], registry=Registry(str(tmp_path)), stdout=out, stderr=err) == 0
    assert (out.getvalue(), err.getvalue()) == (DEFAULT.splitlines(keepends=True)[0], "")


_WORDS = st.sampled_from(["-a", "-c", "-d", "-h", "-N", "-n", "-q", "-s", "-v", "-j", "-x",
                          "-nq", "-sj", "-", "--", "all", "jid", "name", "nopersist",
                          "ip4.addr", "bogus", "web", "1", "0", "-1", "--libxo", "json",
                          "--libxo=xml,pretty", "--libxo:HP", "html", "pretty", "--libxo=",
                          "allow.noraw_sockets", "\udcff", ""])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_WORDS, st.text(max_size=6)), max_size=7))
def test_random_argv_never_raises(tmp_path_factory, argv):
    registry = Registry(str(tmp_path_factory.getbasetemp() / "empty-registry"))
    for reg in (registry, _Registry([ONE, TWO, V6])):
        out, err = io.StringIO(), io.StringIO()
        status = jls.main(argv, registry=reg, stdout=out, stderr=err)
        assert status in (0, 1)
        assert len(err.getvalue().splitlines()) <= 3


JLS = os.path.join(os.path.dirname(sys.executable), "jls")


def _jls(*args):
    return subprocess.run([JLS, *args], capture_output=True, text=True, timeout=30)


@needs_root
@needs("backend:auto")
def test_jls_on_running_jails(busybox_root):
    ip = jail_ip()
    with running("run", "--name", "web", *veth_args(ip), busybox_root, "www", ip,
                 "/bin/sh", "-c", guard("www") + "echo up; sleep 30") as jail:
        assert jail.stdout.readline() == "up\n"
        jid = jail_record(ip)["jid"]
        table = _jls().stdout
        assert f"{jid:6d}  {ip:<15} {'www':<29} {busybox_root}\n" in table
        assert table.startswith("   JID  IP Address      Hostname                      Path\n")
        one = _jls("-j", "web", "-n", "name", "host.hostname", "ip4.addr")
        assert one.stdout == f"name=web host.hostname=www ip4.addr={ip}\n"
        assert _jls("-j", str(jid), "-q", "path").stdout == f"{busybox_root}\n"
        data = json.loads(_jls("--libxo", "json", "-j", "web").stdout)
        assert data["jail-information"]["jail"] == [
            {"jid": jid, "ipv4": ip, "hostname": "www", "path": busybox_root}]
    missing = _jls("-j", "nosuch")
    assert (missing.returncode, missing.stderr) == (1, 'jls: jail "nosuch" not found\n')
    assert _jls("nosuchparam").returncode == 1


@needs_root
@needs("backend:auto")
def test_twenty_concurrent_jails_get_distinct_jids(busybox_root):
    with contextlib.ExitStack() as stack:
        jails = [stack.enter_context(running("run", "--name", f"c{i}", busybox_root, f"c{i}",
                                             "127.0.0.1", "/bin/sh", "-c", "echo up; sleep 60"))
                 for i in range(20)]
        # While they start, every jls read must be whole: no half-written record, ever.
        started = 0
        while started < 20:
            listing = _jls("-n", "jid", "name")
            assert listing.returncode == 0, listing.stderr
            for line in listing.stdout.splitlines():
                assert re.fullmatch(r"jid=\d+ name=c\d+", line), line
            started = len(listing.stdout.splitlines())
        for jail in jails:
            assert jail.stdout.readline() == "up\n"
        pairs = [line.split() for line in _jls("-n", "jid", "name").stdout.splitlines()]
        jids = sorted(int(jid.split("=")[1]) for jid, _ in pairs)
        assert jids == list(range(1, 21))
        assert sorted(name.split("=")[1] for _, name in pairs) == sorted(
            f"c{i}" for i in range(20))
    assert _jls().stdout == DEFAULT.splitlines(keepends=True)[0]
    assert os.listdir("/run/hyjail/jails") == []
