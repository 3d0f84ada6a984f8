"""The command line: `hyjail`, and the entry points of the FreeBSD drop-ins `jail`, `jls` and
`jexec` (their getopt command lines are `hyjail.jail8`, `hyjail.jls`, `hyjail.jexec8`), a thin
layer over the library.

Owns: argument parsing (click), turning every HyjailError and usage error into one line on
stderr with SPEC section 2's exit code, and nothing else: each command calls one library
function. Heavy modules (pyroute2, the ptrace stack) are imported by the code that uses them,
never here.
"""

from __future__ import annotations

import sys

import click

from hyjail.errors import EXIT_USAGE, HyjailError, one_line
from hyjail.rootfs import KINDS

_RUN_CONTEXT = {"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]}


def _run(path: str, hostname: str, ip: str, command: tuple[str, ...], *,
         allow: tuple[str, ...] = (), memory: str | None = None, pids: str | None = None,
         cpus: str | None = None, rlimit: tuple[str, ...] = (), userns: bool = False,
         userns_base: int | None = None, bind: tuple[str, ...] = (),
         ro_bind: tuple[str, ...] = (), tmpfs: tuple[str, ...] = (), env: tuple[str, ...] = (),
         env_file: tuple[str, ...] = (), **options) -> int:
    from hyjail import environment, fstab, limits
    from hyjail.allow import parse_option
    from hyjail.spec import JailSpec
    from hyjail.supervisor import run, start_detached
    if not command and not options.get("persist"):
        raise click.UsageError("Missing argument 'COMMAND...' (only --persist jails have none).")
    if userns_base is not None and not userns:
        raise click.UsageError("--userns-base needs --userns")
    if userns:
        options["userns_base"] = -1 if userns_base is None else userns_base
    spec = JailSpec.create(path, hostname, ip, command,
                           allow_changes=tuple(parse_option(a) for a in allow),
                           limits=limits.create(memory, pids, cpus, rlimit),
                           mounts=fstab.from_options(bind, ro_bind, tmpfs),
                           environ=environment.from_options(env, env_file), **options)
    if spec.persist:
        click.echo(start_detached(spec).jid)
        return 0
    return run(spec)


_ENVIRONMENT = (
    click.option("--env", multiple=True, metavar="NAME=VALUE",
                 help="A variable for the command (the environment is otherwise clean: TERM, "
                      "and the user's HOME, SHELL, USER, LOGNAME, PATH)."),
    click.option("--env-file", multiple=True, metavar="FILE",
                 help="Variables from FILE: NAME=VALUE lines (# comments; a bare NAME takes "
                      "ours)."),
    click.option("--preserve-env", is_flag=True,
                 help="Pass our whole environment to the command (then --env over it)."),
)


def _with(options):
    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hyjail", prog_name="hyjail", message="%(prog)s %(version)s")
def hyjail() -> None:
    """FreeBSD-style jails for Linux."""


@hyjail.command(context_settings=_RUN_CONTEXT)
@click.option("--name", help="Jail name (default: its JID).")
@click.option("--net", type=click.Choice(["veth", "none"]), default="veth", show_default=True,
              help="veth: the jail's addresses on a veth pair; none: loopback only.")
@click.option("--host-ip", metavar="ADDR[,ADDR]",
              help="Address of the veth's host-side end (default 169.254.77.1, fe80::1).")
@click.option("--persist", is_flag=True,
              help="Start in the background (print the JID); the jail outlives its command "
                   "(which may be omitted) until `hyjail stop` or `jail -r`.")
@click.option("--allow", multiple=True, metavar="NAME[=0|1]",
              help="A FreeBSD allow.* permission for root inside (noNAME or NAME=0 takes one "
                   "away): set_hostname and reserved_ports (on by default), raw_sockets, "
                   "sysvipc, mlock, chflags, mount, socket_af (see `hyjail features`).")
@click.option("--userns", is_flag=True,
              help="Map the jail's uids and gids 0-65535 onto an unprivileged host range (one "
                   "of the jail's own, from 2^30 + JID*65536), so root inside is nobody outside.")
@click.option("--userns-base", type=int, metavar="UID",
              help="With --userns: the first host id of the range.")
@click.option("--backend", type=click.Choice(["auto", "ns", "trace"]), default="auto",
              show_default=True,
              help="Which providers enforce the rules: auto (the kernel's first), ns (the "
                   "kernel's only), trace (ptrace's first; see `hyjail features`).")
@click.option("--memory", metavar="SIZE", help="Memory limit (cgroup), e.g. 256M.")
@click.option("--pids", metavar="N", help="Most processes and threads at once (cgroup).")
@click.option("--cpus", metavar="N", help="CPU time, in CPUs' worth, e.g. 0.5 (cgroup).")
@click.option("--rlimit", multiple=True, metavar="NAME=SOFT[:HARD]",
              help="A resource limit for the command, e.g. nofile=1024:4096 (never above the "
                   "host's hard limit).")
@click.option("--bind", multiple=True, metavar="SRC:DST",
              help="Bind the host's SRC (no symlink on its path) at DST in the jail (which "
                   "must exist there), in the jail's own mount namespace; nosuid, nodev.")
@click.option("--ro-bind", multiple=True, metavar="SRC:DST", help="The same, read-only.")
@click.option("--tmpfs", multiple=True, metavar="DST[:OPTIONS]",
              help="A fresh tmpfs at DST, e.g. /scratch:size=64m,mode=1777.")
@click.option("--interface", metavar="IFACE",
              help="Put the jail's addresses on the LAN of the host's IFACE (a macvlan or ipvlan "
                   "of the jail's own; without a network namespace, aliases of IFACE), instead "
                   "of a veth; IP may then carry the LAN's /PREFIX.")
@click.option("--gateway", metavar="ADDR", help="With --interface: the jail's default route.")
@click.option("--nat", metavar="IFACE",
              help="The jail's (IPv4) traffic masqueraded out of the host's IFACE (nftables, "
                   "forwarding on for its veth and IFACE only).")
@click.option("--publish", "-p", multiple=True, metavar="[HOSTADDR:]HOSTPORT:JAILPORT[/PROTO]",
              help="The host's port forwarded to the jail's (podman's -p; DNAT).")
@click.option("--dns", multiple=True, metavar="ADDR",
              help="A name server for the jail's own /etc/resolv.conf (bound over the "
                   "root's, which is not changed).")
@click.option("--read-only", is_flag=True,
              help="The root read-only, with fresh tmpfs on /tmp, /run and /var/tmp (unless "
                   "--bind or --tmpfs puts something there).")
@click.option("--user", metavar="USER[:GROUP]",
              help="Run the command as USER (and GROUP) of the jail's own passwd and group "
                   "(default: root).")
@click.option("--chdir", "cwd", metavar="DIR", help="The command's directory inside the jail.")
@_with(_ENVIRONMENT)
@click.argument("path")
@click.argument("hostname")
@click.argument("ip")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(path, hostname, ip, command, **options) -> int:
    """Run COMMAND in a new jail rooted at PATH, in the foreground."""
    return _run(path, hostname, ip, command, **options)


@hyjail.group()
def rootfs() -> None:
    """Build jail roots."""


@rootfs.command()
@click.option("--suite", metavar="SUITE", help="debian: the release (default bookworm).")
@click.option("--include", "include", multiple=True, metavar="PKG[,PKG...]",
              help="debian: packages to install beside the minimal base.")
@click.option("--mirror", metavar="URL", help="debian: the archive (default deb.debian.org).")
@click.argument("kind", type=click.Choice(KINDS), default="busybox")
@click.argument("dest", required=False)
def build(suite: str | None, include: tuple[str, ...], mirror: str | None, kind: str,
          dest: str | None) -> int:
    """Build a root of KIND at DEST (default /var/lib/hyjail/roots/KIND): busybox (offline,
    updated in place) or debian (mmdebstrap, into a new or empty DEST; no service starts on
    the host while it builds)."""
    import os

    from hyjail import rootfs as roots
    packages = tuple(p for given in include for p in given.split(",") if p)
    click.echo(roots.build(kind, dest or os.path.join(roots.DEFAULT_DEST, kind), suite,
                           packages, mirror))
    return 0


@rootfs.command(name="import")
@click.argument("archive")
@click.argument("dest")
def import_command(archive: str, dest: str) -> int:
    """A root at DEST (new or empty) from ARCHIVE: a container image (`podman save` or
    `docker save`, docker-archive or OCI layout; layers applied in order, whiteouts and all)
    or a plain root tarball. Nothing is ever written outside DEST."""
    from hyjail.rootfs.image import import_archive
    click.echo(import_archive(archive, dest))
    return 0


@hyjail.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--fresh", is_flag=True, help="Probe again instead of using this boot's cache.")
def features(as_json: bool, fresh: bool) -> int:
    """What this host allows (the probe), which provider holds each rule (the plan), and the
    permissions and limits a jail can have."""
    from hyjail.features import as_text, report
    data = report(fresh)
    if as_json:
        import json
        click.echo(json.dumps(data, indent=2))
        return 0
    for line in as_text(data):
        click.echo(line)
    return 0


@hyjail.command()
@click.option("--backend", type=click.Choice(["auto", "ns", "trace", "all"]), default="auto",
              show_default=True, help="Which backends to try to break (all: every one this "
                                      "host's plan can run).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("-k", "pattern", metavar="PATTERN",
              help="Only attempts whose rule and name contain PATTERN.")
@click.option("--jobs", type=click.IntRange(1, 64), metavar="N",
              help="Attempts at once (default: twice the CPUs, at most 8).")
def check(backend: str, as_json: bool, pattern: str | None, jobs: int | None) -> int:
    """The escape battery: each attempt to break a jail rule, as root in a fresh jail, through
    every ABI this host accepts. Exits 0 only when nothing escaped, every jail ran, and every
    backend this host can run ran something (not every row skipped); else 1, saying why in
    one line on stderr."""
    import os

    from hyjail.check import report
    from hyjail.check.runner import run_battery
    from hyjail.errors import SetupError
    if os.geteuid() != 0:
        raise SetupError("hyjail check: needs root (each attempt runs as root in a jail)")
    outcome = run_battery(backend, pattern, jobs or min(8, 2 * (os.cpu_count() or 1)),
                          progress=None if as_json else report.progress)
    click.echo(report.as_json(outcome) if as_json else report.table(outcome))
    failed = report.failure(outcome)
    if failed:
        click.echo(f"hyjail check: {failed}", err=True)
    return report.exit_status(outcome)


@hyjail.command(name="logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what it writes, until it ends.")
@click.argument("which", metavar="JID|NAME")
def logs_command(follow: bool, which: str) -> int:
    """Print a persistent jail's output (its command's and its supervisor's): the jail's log,
    or its exec.consolelog."""
    from hyjail import logs
    from hyjail.jails import log_of
    path, running = log_of(which)
    logs.read(path, logs.to_stdout, running if follow else None)
    return 0


@hyjail.group(name="systemd")
def systemd_group() -> None:
    """Jails at boot: hyjail.service (the jails of /etc/jail.conf, jail_list in
    /etc/default/hyjail) and hyjail@NAME.service (one jail in the foreground)."""


@systemd_group.command(name="install")
@click.option("--unit-dir", default="/etc/systemd/system", show_default=True,
              help="Where the units go.")
@click.option("--defaults", default="/etc/default/hyjail", show_default=True,
              help="The jail_list file (written only if missing).")
def systemd_install(unit_dir: str, defaults: str) -> int:
    """Write hyjail.service and hyjail@.service (then: systemctl daemon-reload; systemctl
    enable --now hyjail, or hyjail@NAME)."""
    from hyjail import systemd
    for path in systemd.install(unit_dir, defaults):
        click.echo(path)
    return 0


_CONF = click.option("-f", "--conf", metavar="FILE", help="The jail.conf (default /etc/jail.conf).")
_DEFAULTS = click.option("--defaults", default="/etc/default/hyjail", show_default=True,
                         help="The file whose jail_list names the jails.")


@systemd_group.command(name="start")
@_CONF
@_DEFAULTS
def systemd_start(conf: str | None, defaults: str) -> int:
    """hyjail.service's start: jail -c on jail_list (or every jail of /etc/jail.conf)."""
    from hyjail import systemd
    return systemd.start(defaults, conf)


@systemd_group.command(name="stop")
@_CONF
@_DEFAULTS
def systemd_stop(conf: str | None, defaults: str) -> int:
    """hyjail.service's stop: jail -r on the running jails of jail_list (or of jail.conf)."""
    from hyjail import systemd
    return systemd.stop(defaults, conf)


@systemd_group.command(name="run")
@_CONF
@click.argument("name")
def systemd_run(conf: str | None, name: str) -> int:
    """hyjail@NAME.service's: jail NAME of /etc/jail.conf in the foreground until it ends;
    SIGTERM removes it (with its hooks)."""
    from hyjail import systemd
    return systemd.run(name, conf)


@hyjail.command()
def gc() -> int:
    """Reclaim what jails whose supervisor died left behind."""
    from hyjail import cgroups, rootless
    from hyjail.registry import Registry
    Registry().collect(cgroups.sweep if rootless.host_root() else lambda live: None)
    from hyjail.net import rendezvous
    rendezvous.sweep()  # what a killed network helper left
    return 0


@hyjail.command(name="exec", context_settings=_RUN_CONTEXT)
@click.option("-u", "user", metavar="USER", help="Run as USER of the jail's /etc/passwd.")
@click.option("-l", "login", is_flag=True, help="A clean login environment, in the user's home.")
@_with(_ENVIRONMENT)
@click.argument("which", metavar="JID|NAME")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(user, login, env, env_file, preserve_env, which, command) -> int:
    """Run COMMAND inside a running jail, under all its rules."""
    from hyjail import environment
    from hyjail.jails import exec_in
    from hyjail.spec import command_environment
    given = command_environment(environment.from_options(env, env_file), preserve_env)
    return exec_in(which, command, user=user, login=login, environ=given, clean=True)


@hyjail.command()
@click.option("--timeout", type=click.FloatRange(min=0),
              help="Seconds between SIGTERM and SIGKILL (default: the jail's stop.timeout, 10).")
@click.argument("which", metavar="JID|NAME")
def stop(which: str, timeout: float) -> int:
    """Stop a running jail: SIGTERM, then SIGKILL after --timeout, then full teardown."""
    from hyjail.jails import stop as stop_jail
    stop_jail(which, timeout)
    return 0


@hyjail.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def list_command(as_json: bool) -> int:
    """List running jails with detail (backend, processes, uptime)."""
    from hyjail.jails import list_jails
    jails = list_jails()
    if as_json:
        import json
        click.echo(json.dumps([j.to_dict() for j in jails], indent=2))
        return 0
    from hyjail.usage import table
    for line in table(jails):
        click.echo(line)
    return 0


@hyjail.command()
@click.option("-n", "--iterations", type=click.IntRange(min=1), metavar="N",
              help="Refresh N times, then stop (default: until interrupted).")
@click.option("-d", "--delay", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between refreshes.")
def top(iterations: int | None, delay: float) -> int:
    """Every running jail's processes, memory and CPU use, refreshed (podman stats'
    and systemd-cgtop's view): CPU% over the last interval."""
    from hyjail.usage import watch
    watch(iterations, delay, click.echo)
    return 0


@hyjail.command()
@click.option("-j", "which", metavar="JID|NAME", help="Only this jail's processes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def ps(which: str | None, as_json: bool) -> int:
    """Every jailed process on the host, with its jail."""
    from hyjail.jails import get, list_jails
    jails = [get(which)] if which is not None else list_jails()
    processes = [p for j in jails for p in j.processes]
    if as_json:
        import dataclasses
        import json
        click.echo(json.dumps([dataclasses.asdict(p) for p in processes], indent=2))
        return 0
    click.echo(f"{'JID':>5} {'PID':>8} {'JPID':>6}  COMMAND")
    for p in processes:
        click.echo(f"{p.jid:>5} {p.pid:>8} {p.jail_pid:>6}  {p.command}")
    return 0


def _main(command: click.Command, prog: str, argv: list[str] | None) -> None:
    try:
        status = command.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.UsageError as e:
        print(f"{prog}: {e.format_message()}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except click.ClickException as e:
        print(f"{prog}: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except HyjailError as e:
        print(f"{prog}: {one_line(str(e))}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)


def main(argv: list[str] | None = None) -> None:
    _main(hyjail, "hyjail", argv)
