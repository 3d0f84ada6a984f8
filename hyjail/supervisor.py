"""The supervisor: one jail's life on the host, from admission to teardown, read top to bottom.

Owns: the order of the host-side steps and their undoing (each step registers its undo on an
ExitStack, so a failure at any step undoes exactly the steps before it): admission to the
registry, the jail's cgroups, forking pid 1 into a new pid namespace, the veth, then the
foreground run (`hyjail.foreground`: terminal relay, signal forwarding, exit status).
The jail-side steps are `hyjail.ns.jail`; the kernel guarantees that pid 1, and with it every
jailed process, dies when the supervisor dies (parent-death signal, set before READY).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence

from hyjail import enforcement, foreground, linux, logs, phases, rootless, terminal
from hyjail import plan as plans
from hyjail.errors import HyjailError, SetupError
from hyjail.foreground import (
    Child,
    caught_signals,
    place_in_cgroups,
    run_in_foreground,
    wait_ready,
)
from hyjail.frozen import asdict, replace
from hyjail.namespaces import JOINABLE, open_joinable
from hyjail.net import host_link_name
from hyjail.ns import control
from hyjail.plan import Plan
from hyjail.registry import Record, Registry
from hyjail.spec import JailSpec


def run(spec: JailSpec, registry: Registry | None = None,
        on_ready: Callable[[Record], None] | None = None,
        stdio: Sequence[int] | None = None,
        console: Callable[[int], None] | None = None) -> int:
    """Run spec.command in a new jail, in the foreground; return its exit status (SPEC 2).

    Raises SetupError (exit 125) when the jail cannot be set up, and a HyjailError with exit
    code 126 or 127 when the command cannot be executed or found inside the jail.
    `on_ready` is called with the jail's record once it exists and is about to run. stdio:
    the command's 0-2 (no terminal relay then), else ours. console: the command's 0-2 are a
    terminal of the jail's own, whose master is handed to console (an OCI runtime's
    --console-socket) instead of being relayed.
    """
    phases.mark("called")
    try:
        return _run(spec, registry or Registry(), on_ready, stdio, console)
    finally:
        phases.mark("torn down")
        phases.report()


def _run(spec: JailSpec, registry: Registry, on_ready: Callable[[Record], None] | None,
         stdio: Sequence[int] | None, console: Callable[[int], None] | None) -> int:
    plan = choose_plan(spec)
    phases.mark("plan chosen")
    if rootless.host_root():
        logs.make_directory()  # there to be masked (or refused) in a jail whose root holds it
    if plan.kind == "trace":
        from hyjail.trace import supervisor as trace_supervisor
        return trace_supervisor.run(spec, plan, registry, on_ready, stdio, console)
    host_root = rootless.host_root()
    if not host_root:
        rootless.refuse_what_needs_root(spec)
    spec = enforcement.fit_container(spec, plan)
    enforcement.refuse_what_the_plan_cannot_hold(spec, plan)
    namespaces = enforcement.namespaces_of(plan)
    if spec.netns_path is not None:  # the caller's network namespace: joined, none made
        namespaces = replace(namespaces, net=False)
    if spec.joined:  # a pod's IPC namespace: joined, none made
        namespaces = replace(namespaces, **{kind: False for kind, _ in spec.joined})
    confinement = enforcement.confinement(spec, plan)
    veth = spec.needs_veth and namespaces.net
    params = {**spec.record_params(), "confinement": confinement.to_params(),
              "pid_namespace": namespaces.pid}
    lan = spec.lan.request(spec.addresses, namespaces.net) if spec.lan else None
    if lan:
        params["lan"] = lan  # what the network helper will do for this supervisor
    if not host_root:
        params["rootless"] = "1"  # no cgroups to join or reclaim
    with contextlib.ExitStack() as undo:
        pending = undo.enter_context(caught_signals((signal.SIGCHLD,) if plan.traced else ()))
        record = registry.admit(
            name=spec.name, hostname=spec.hostname, path=spec.path,
            addresses=tuple(str(a) for a in spec.addresses), backend=plan.kind,
            params=params, jid=spec.jid,
            link_name=host_link_name if veth else lambda jid: None)
        undo.callback(registry.remove, record.jid)
        phases.mark("admitted")
        spec = _name_servers(spec, record, registry, namespaces)
        cgroup_paths: list[str] = []
        if host_root:  # a user's jail has none (rootless)
            cgroup_paths, record = foreground.make_jail_groups(spec, record, registry, undo)
        phases.mark("cgroups made")

        tty_fds = (0, 1, 2) if console else terminal.tty_fds() if stdio is None else ()
        channel, jail_end = control.pair()
        undo.callback(channel.close)
        netns_fd = _open_netns(spec.netns_path) if spec.netns_path else None
        if netns_fd is not None:
            undo.callback(os.close, netns_fd)
        joined_fds = []
        for kind, path in spec.joined:
            joined_fds.append((JOINABLE[kind], open_joinable(kind, path)))
            undo.callback(os.close, joined_fds[-1][1])
        host = control.HostPlan(
            netns_fd=netns_fd, joined_fds=tuple(joined_fds),
            cgroup_paths=tuple(cgroup_paths),
            id_map=spec.id_map(record.jid) if host_root else rootless.JAIL_ID_MAP,
            state_dir=registry.state_dir, namespaces=namespaces, confinement=confinement,
            hand_over_namespaces=not host_root)
        if not host_root:
            enter_pid_namespace = rootless.enter_user_and_pid_namespaces
        elif namespaces.pid:
            enter_pid_namespace = lambda: linux.unshare(linux.CLONE_NEWPID)  # noqa: E731
        else:  # the tracer holds R4: the jail's first process is one of the host's pids
            enter_pid_namespace = None
        # Pid 1's code is imported here, before the fork: imported after it, by pid 1, every
        # page the import touches is a copy-on-write fault (3-5 ms of pid 1's setup, against
        # under 2 ms here).
        from hyjail.ns import jail as pid_1
        with jail_end:
            jail = Child(enter_pid_namespace, lambda: pid_1.main(spec, jail_end, tty_fds, host),
                         through_helper=not host_root, stdio=stdio)
        undo.callback(jail.kill)
        phases.mark("pid 1 forked")
        place_in_cgroups(jail.pid, channel, cgroup_paths)
        fds, handed_over = wait_ready(channel)
        phases.mark("pid 1 ready")
        for fd in handed_over.values():
            undo.callback(os.close, fd)
        if console and fds:
            terminal.hand_over(console, fds[0])
            fds = []
        if handed_over:  # jexec opens them as /proc/<supervisor>/fd/N
            record = registry.update(record, params={**record.params, "namespace_fds": handed_over})

        if veth:
            from hyjail.net import link
            undo.enter_context(link.attached(
                record.host_link, jail.pid, spec.veth_addresses, spec.veth_host_addresses))
            if spec.nat or spec.publish:
                record = _out_and_in(spec, record, registry, undo)
        if lan:
            from hyjail.net import link
            made = undo.enter_context(link.on_lan(lan, None if lan["mode"] == "alias"
                                                  else jail.pid))
            record = registry.update(record, params={**record.params, "lan": {
                **lan, "added": made["added"], "kind": made["kind"]}})
        tracing = None
        if plan.traced:  # a hybrid: the supervisor traces pid 1 and with it every descendant
            from hyjail.trace import supervisor as trace_supervisor
            undo.callback(trace_supervisor.kill_and_reap, jail.pid)  # after kill_all
            tracing = trace_supervisor.Tracing(spec, plan, registry, record, jail.pid, undo)
        started = {"init_pid": jail.pid, "init_start": linux.process_start_time(jail.pid)}
        # A tracing supervisor keeps the record (sethostname inside renames the jail).
        record = tracing.update(**started) if tracing else registry.update(record, **started)
        phases.mark("network up")
        if on_ready:
            on_ready(record)
        phases.mark("command started")
        if tracing:
            relay = foreground.relay_of(fds, tty_fds, undo)
            code = tracing.supervise(channel, relay, undo, pending)
        else:
            code = run_in_foreground(jail, channel, tty_fds, fds, undo, pending)
        phases.mark("command ended")
        return code


def _open_netns(path: str) -> int:
    """The network namespace at path (a caller's: podman's /run/netns/NAME, CNI's, a pod's
    /proc/PID/ns/net), opened and checked again before the jail joins it."""
    return open_joinable("net", path, f"network namespace {path}")


def _out_and_in(spec: JailSpec, record: Record, registry: Registry,
                undo: contextlib.ExitStack) -> Record:
    """--nat and --publish (`hyjail.net.nat`): kept in the record first (the helper does
    only what it says), then asked for; undone at the jail's end."""
    from hyjail.net import link
    wanted = {"jid": record.jid, "veth": record.host_link,
              "addresses": [str(a) for a in spec.veth_addresses], "uplink": spec.nat,
              "publish": [asdict(p) for p in spec.publish]}
    record = registry.update(record, params={**record.params, "nat": wanted})
    made = undo.enter_context(link.nat_and_ports(wanted))
    return registry.update(record, params={**record.params, "nat": {
        **wanted, "forwarded": made["forwarded"]}})


def _name_servers(spec: JailSpec, record: Record, registry: Registry, namespaces) -> JailSpec:
    """--dns: the jail's own resolv.conf, bound over the root's (which must be a file there);
    without it, a jail with a network of its own is told once which of the root's name
    servers it cannot reach."""
    from hyjail.net import resolv
    if not spec.dns:
        if namespaces.net:
            resolv.warn_if_unreachable(record.name, spec.path, spec.veth_host_addresses)
        return spec
    target = os.path.join(spec.path, "etc", "resolv.conf")
    if not os.path.isfile(target) or os.path.islink(target):
        raise SetupError(f"--dns: {target}: not a file to put the jail's own in place of "
                         f"(the root is never changed)")
    from hyjail.fstab import JailMount
    path = resolv.write(registry.resolv_path(record.jid), spec.dns)
    own = JailMount("bind", "etc/resolv.conf", source=path, read_only=True)
    return replace(spec, mounts=(*spec.mounts, own))


def choose_plan(spec: JailSpec) -> Plan:
    """The rule-to-provider plan for this jail on this host (the probe is cached per boot)."""
    from hyjail import platform
    probe = platform.current()
    needs = enforcement.ptrace_for(spec)
    if rootless.host_root():
        return plans.choose(probe, spec.backend, needs)
    # A user other than root has namespaces (its own user namespace) or nothing: the trace
    # backend's chroot needs root.
    if spec.backend == "trace":
        raise SetupError("--backend trace: needs root (its R1 is chroot)")
    if not probe.has("userns.unprivileged"):
        raise SetupError(f"a jail started by a user other than root needs an unprivileged user "
                         f"namespace, and this host denies it: "
                         f"{probe['userns.unprivileged'].detail}")
    if needs:
        raise SetupError(f"{', '.join(needs.values())}: needs the ptrace providers, which "
                         f"need root")
    return plans.choose(probe, "ns")


def start_detached(spec: JailSpec, until_empty: bool = False, log: str | None = None) -> Record:
    """Start a jail whose supervisor runs on in the background (`--persist`, `jail -c`):
    returns its record once it exists, or raises what stopped it from starting. until_empty:
    the supervisor also keeps FreeBSD's lifetime watch (`hyjail.lifetime`), which ends the
    jail once it is armed and the jail has no process left. The command's output, and the
    supervisor's, go to `log` (exec.consolelog) or the jail's own log (`hyjail.logs`)."""
    ready_read, ready_write = os.pipe()
    output_read, output_write = os.pipe()
    if os.fork() == 0:
        os.close(ready_read)
        os.setsid()  # no terminal, no job control of the caller's shell
        # The command's and our own output: a pipe the log's pump reads (`hyjail.logs`).
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
        for fd in (1, 2):
            os.dup2(output_write, fd)
        # Nothing else of the caller's: a fork keeps every descriptor, and one held here (a
        # pipe the caller's caller reads to EOF, jail(8)'s saved stdout under
        # exec.consolelog, a lock) would outlive the caller for the jail's whole life.
        kept = sorted((ready_write, output_read))
        for low, high in zip([3, *(fd + 1 for fd in kept)], [*kept, os.sysconf("SC_OPEN_MAX")],
                             strict=True):
            os.closerange(low, high)
        pumping = []

        def ready(record: Record) -> None:
            registry = Registry()
            path = log or logs.default_path(
                record.name, None if rootless.host_root() else registry.state_dir)
            pumping.append(logs.pump(output_read, logs.Log(path).open()))
            registry.update(record, params={**record.params, "log": path})
            if until_empty:
                from hyjail import lifetime
                lifetime.watch(record.jid, registry)
            os.write(ready_write, b"%d\n" % record.jid)
        try:
            run(spec, on_ready=ready)
            code = 0
        except HyjailError as e:
            message = f"{e.exit_code} {e}\n".encode()
            if pumping:  # started: the jail's end goes to its log
                sys.stderr.write(f"hyjail: {e}\n")
            else:
                os.write(ready_write, message)
            code = e.exit_code
        os.close(1)
        os.close(2)
        for thread in pumping:  # the jail is gone: every writer is, and the pump drains
            thread.join(timeout=5)
        os._exit(code)
    os.close(output_read)
    os.close(output_write)
    os.close(ready_write)
    with os.fdopen(ready_read) as ready:
        answer = ready.readline().rstrip("\n")
    if not answer:
        raise SetupError("the jail's supervisor died while starting it")
    code, _, message = answer.partition(" ")
    if message:
        raise HyjailError(message, int(code))
    jid = int(code)
    record = next((r for r in Registry().live() if r.jid == jid), None)
    if record is None:
        raise HyjailError(f"jail {jid} ended as it started", 1)
    return record
