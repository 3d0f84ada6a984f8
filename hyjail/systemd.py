"""Jails at boot, under systemd: the unit pair and what its commands do.

Owns: the two units (`hyjail.service` starts the jails of /etc/jail.conf at boot, the ones
named by `jail_list` in /etc/default/hyjail as FreeBSD's rc.conf names them, or every one;
`hyjail@NAME.service` runs one jail of it in the foreground, so that systemd restarts it
when it ends), writing them (`hyjail systemd install`), and the commands they run: `start`
and `stop` (jail(8)'s -c and -r on the list, dependencies in order), and `run NAME` (create
the jail, tell systemd it is up, wait for its end; SIGTERM removes it with its hooks).

hyjail@NAME's jail has its groups under the unit's (Delegate=yes, HYJAIL_CGROUPS=delegated:
`hyjail.cgroups`), so that systemd counts and kills it with the unit; hyjail.service's jails
keep theirs in hyjail's own tree (SPEC section 3), their supervisors in the unit's.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sys
import threading

from hyjail.errors import HyjailError, SetupError

UNIT_DIR = "/etc/systemd/system"
DEFAULTS = "/etc/default/hyjail"

SERVICE = """\
[Unit]
Description=hyjail: the jails of /etc/jail.conf
Wants=network-online.target
After=network-online.target local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={hyjail} systemd start
ExecStop={hyjail} systemd stop
TimeoutStartSec=15min
TimeoutStopSec=5min

[Install]
WantedBy=multi-user.target
"""

TEMPLATE = """\
[Unit]
Description=hyjail: jail %i of /etc/jail.conf, in the foreground
Wants=network-online.target
After=network-online.target local-fs.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={hyjail} systemd run %i
Environment=HYJAIL_CGROUPS=delegated
Delegate=yes
KillMode=mixed
Restart=on-failure
RestartSec=5s
TimeoutStopSec=5min

[Install]
WantedBy=multi-user.target
"""

DEFAULTS_TEXT = """\
# hyjail.service starts these jails of /etc/jail.conf at boot, in their dependency order
# (FreeBSD rc.conf's jail_list); empty: every jail there.
jail_list=""
"""


def executable() -> str:
    """The hyjail command the units run: the one beside this Python (a venv's), else PATH's."""
    import shutil
    beside = os.path.join(os.path.dirname(sys.executable), "hyjail")
    found = beside if os.access(beside, os.X_OK) else shutil.which("hyjail")
    if found is None:
        raise SetupError("systemd install: no hyjail command found to run")
    return os.path.abspath(found)


def install(unit_dir: str = UNIT_DIR, defaults: str = DEFAULTS) -> list[str]:
    """Write the units (and /etc/default/hyjail if there is none); returns what it wrote."""
    command = shlex.quote(executable())
    written = []
    for name, text in (("hyjail.service", SERVICE), ("hyjail@.service", TEMPLATE)):
        path = os.path.join(unit_dir, name)
        _write(path, text.format(hyjail=command))
        written.append(path)
    if not os.path.exists(defaults):
        _write(defaults, DEFAULTS_TEXT)
        written.append(defaults)
    return written


def _write(path: str, text: str) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)
    except OSError as e:
        raise SetupError(f"{path}: {e.strerror}") from None


def jail_list(defaults: str = DEFAULTS) -> list[str]:
    """jail_list of /etc/default/hyjail (a shell-style assignment), or [] for every jail."""
    try:
        with open(defaults) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise SetupError(f"{defaults}: {e.strerror}") from None
    for line in lines:
        name, equals, value = line.strip().partition("=")
        if equals and name.strip() == "jail_list":
            try:
                return [w for word in shlex.split(value) for w in word.split()]
            except ValueError as e:
                raise SetupError(f"{defaults}: jail_list: {e}") from None
    return []


def _request(flag: str, conf: str | None):
    from hyjail import jail8
    return jail8.parse([*(["-f", conf] if conf else []), flag])[0]


def start(defaults: str = DEFAULTS, conf: str | None = None) -> int:
    """jail -c on the list (every jail of /etc/jail.conf, or conf, if it is empty)."""
    from hyjail import jail8
    return jail8.run(_request("-c", conf), jail_list(defaults))


def stop(defaults: str = DEFAULTS, conf: str | None = None) -> int:
    """jail -r on the list's jails that run (every configured one that runs if it is empty)."""
    from hyjail import jail8, jailconf
    from hyjail.jails import get
    config = jailconf.load(conf) if conf else jailconf.load_default(missing_ok=True)
    names = jail_list(defaults) or jailconf.jail_names(config)
    running = []
    for name in names:
        try:
            get(name)
        except HyjailError:
            continue  # not running: nothing to stop
        running.append(name)
    if not running:
        return 0
    return jail8.run(_request("-r", conf), running)


def run(name: str, conf: str | None = None) -> int:
    """One jail in the foreground (hyjail@NAME): created from /etc/jail.conf as jail -c does,
    READY=1 to systemd, then held until SIGTERM (jail -r, with its hooks: 0) or until it
    ends by itself (its last process gone, or jail -r from elsewhere: 1, one line, which
    Restart=on-failure answers with a new one)."""
    from hyjail import jail8
    from hyjail.jails import get
    from hyjail.registry import Registry
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.set())
    status = jail8.run(_request("-c", conf), [name])
    if status != 0:
        return status
    record = get(name).record
    _notify(f"READY=1\nSTATUS=jail {record.name} (JID {record.jid}) runs\nMAINPID={os.getpid()}")
    registry = Registry()
    while not stopping.wait(0.5):
        if not any(r.jid == record.jid and r.supervisor_pid == record.supervisor_pid
                   for r in registry.live()):
            print(f"hyjail: jail {record.name} ended by itself", file=sys.stderr)
            return 1
    _notify("STOPPING=1")
    try:
        return jail8.run(_request("-r", conf), [name])
    except HyjailError as e:
        print(f"hyjail: {e}", file=sys.stderr)
        return 1


def _notify(message: str) -> None:
    """sd_notify(3): a datagram to $NOTIFY_SOCKET, where systemd listens (nothing elsewhere)."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return
    address = "\0" + where[1:] if where.startswith("@") else where
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(message.encode(), address)
