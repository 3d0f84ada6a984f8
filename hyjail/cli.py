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

from hyjail import runline
from hyjail.errors import EXIT_USAGE, exit_status
from hyjail.rootfs import KINDS
from hyjail.runline import Option

_RUN_CONTEXT = {"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]}


def _click_option(option: Option):
    """A click option from a row of `hyjail.runline`'s table."""
    kind = option.kind
    extra = ({"is_flag": True} if kind == "flag" else {"multiple": True} if kind == "multiple"
             else {"type": int} if kind == "int" else {})
    if option.choices:
        extra["type"] = click.Choice(list(option.choices))
    if option.default is not None:
        extra.update(default=option.default, show_default=True)
    return click.option(*option.names, option.dest, metavar=option.metavar, help=option.help,
                        **extra)


def _with(options):
    def decorate(function):
        for option in reversed(options):
            function = _click_option(option)(function)
        return function
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hyjail", prog_name="hyjail", message="%(prog)s %(version)s")
def hyjail() -> None:
    """FreeBSD-style jails for Linux."""


@hyjail.command(context_settings=_RUN_CONTEXT)
@_with(runline.OPTIONS)
@click.argument("path")
@click.argument("hostname")
@click.argument("ip")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(**values) -> int:
    """Run COMMAND in a new jail rooted at PATH, in the foreground."""
    problem = runline.usage_error(values)
    if problem:
        raise click.UsageError(problem)
    return runline.start(values)


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
@_with(runline.ENVIRONMENT)
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
        import json

        from hyjail.frozen import asdict
        click.echo(json.dumps([asdict(p) for p in processes], indent=2))
        return 0
    click.echo(f"{'JID':>5} {'PID':>8} {'JPID':>6}  COMMAND")
    for p in processes:
        click.echo(f"{p.jid:>5} {p.pid:>8} {p.jail_pid:>6}  {p.command}")
    return 0


def _main(command: click.Command, prog: str, argv: list[str] | None) -> None:
    def parsed_and_run():
        try:
            return command.main(args=argv, prog_name=prog, standalone_mode=False)
        except click.UsageError as e:
            print(f"{prog}: {e.format_message()}", file=sys.stderr)
            return EXIT_USAGE
        except click.ClickException as e:
            print(f"{prog}: {e.format_message()}", file=sys.stderr)
            return e.exit_code
    sys.exit(exit_status(prog, parsed_and_run))


def main(argv: list[str] | None = None) -> None:
    _main(hyjail, "hyjail", argv)
