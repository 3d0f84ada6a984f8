"""How one jail carries out its plan: the namespaces it gets, how its root is diluted, which
calls its supervisor judges, and what the plan cannot hold for this jail's options.

Owns the step from the host-wide plan (`hyjail.plan`, one provider per rule) to one jail:
each kernel provider is a namespace the jail's first process makes (the harmless ones the
host has, IPC, cgroup and UTS, are made even where ptrace holds the rule, so a hybrid jail
leaks no more than it must), each ptrace provider a set of handlers whose calls the seccomp
prefilter stops. What a provider cannot give this jail's options is refused here, in one
line naming the option and the reason, before anything exists on the host.
"""

from __future__ import annotations

import errno
import os
import socket

from hyjail import linux, weaken
from hyjail.errors import SetupError
from hyjail.frozen import replace
from hyjail.namespaces import Namespaces
from hyjail.ns.dilution import Confinement
from hyjail.plan import Plan
from hyjail.spec import JailSpec


def namespaces_of(plan: Plan) -> Namespaces:
    """The namespaces this host's plan gives a jail (mount: whenever R1 is the kernel's)."""
    has = plan.probe.has
    if "no-pidns" in weaken.weakened() and plan.kind == "ns":
        return Namespaces(mount=True, pid=False, net=True, uts=True, ipc=True, cgroup=True,
                          user=True)
    if plan.kind == "trace":  # a chroot; the kernel may hold R3 (and with it SysV IPC)
        net = plan.uses("R3", "kernel")
        return Namespaces(mount=False, pid=False, net=net, uts=False, ipc=net, cgroup=False,
                          user=False)
    return Namespaces(mount=True, pid=plan.uses("R4", "kernel"), net=plan.uses("R3", "kernel"),
                      uts=has("ns.uts"), ipc=has("ns.ipc"), cgroup=has("ns.cgroup"),
                      user=plan.uses("R5", "kernel"))


def ptrace_for(spec: JailSpec) -> dict[str, str]:
    """Rules this jail's options need ptrace's provider of, each with the option: a jail with
    its own uname release gets it from its tracer (a hybrid jail where the kernel holds the
    rest), since no namespace changes the release; one that inherits the host's addresses
    shares the host's network, where only the tracer confines the rest of R3."""
    needs = {"R2": "osrelease"} if spec.osrelease else {}
    if spec.inherit_ip:
        needs["R3"] = ", ".join(f"ip{v}=inherit" for v in sorted(spec.inherit_ip))
    return needs


# A container's permissions that a jail without a namespace of the kind cannot grant safely,
# with the capability each stands for. Dropped, not refused: the engine's defaults ask for
# them (podman's CAP_NET_RAW), and fewer privileges hold every rule (gVisor's runsc drops
# CAP_NET_RAW the same way unless told otherwise).
CONTAINER_DROPPED = {"raw_sockets": ("net", "net_raw"), "sysvipc": ("ipc", None),
                     "mqueue": ("ipc", None)}


def fit_container(spec: JailSpec, plan: Plan) -> JailSpec:
    """An OCI container's spec without the permissions this plan's jail cannot grant (see
    CONTAINER_DROPPED); any other jail's unchanged (refused below instead)."""
    if spec.container is None:
        return spec
    namespaces = namespaces_of(plan)
    dropped = {name: cap for name, (kind, cap) in CONTAINER_DROPPED.items()
               if name in spec.allowed and not getattr(namespaces, kind)}
    if not dropped:
        return spec
    container = spec.container
    if container.caps is not None:
        container = replace(container, caps=tuple(c for c in container.caps
                                                  if c not in dropped.values()))
    return replace(spec, allowed=spec.allowed - frozenset(dropped), container=container)


def refuse_what_the_plan_cannot_hold(spec: JailSpec, plan: Plan) -> None:
    """One line and exit 125 for an option whose provider this jail does not get."""
    namespaces = namespaces_of(plan)
    if plan.traced:
        from hyjail import rootless
        if not rootless.host_root():
            raise SetupError(f"{_ptraced(plan)}: the ptrace providers need root")
    if not namespaces.mount and plan.uses("R4", "ptrace") and _proc_is_mounted(spec.path):
        raise SetupError(f"R4 (processes): {spec.path}/proc is a mounted proc that shows the "
                         f"host's processes, and the trace backend cannot replace it")
    if not namespaces.mount:
        from hyjail.ns.mounts import host_state_within
        exposed = host_state_within(spec.path, weakened=weaken.weakened())
        if exposed:
            raise SetupError(f"R1 (root): {os.path.join(spec.path, exposed[0])} is hyjail's "
                             f"own state, inside the jail's root, and a chroot cannot hide it")
    if (spec.nat or spec.publish) and not (namespaces.net and spec.needs_veth):
        raise SetupError("--nat, --publish: need the jail's own veth (a network namespace of "
                         "its own, an address not on the LAN and not loopback)")
    if spec.lan is not None and "raw_sockets" in spec.allowed:
        raise SetupError(f"allow.raw_sockets with {spec.lan.describe()}: on the LAN nothing "
                         f"would check a raw packet's source address")
    if spec.dns and not namespaces.mount:
        raise SetupError("--dns: needs a mount namespace of the jail's to give it its own "
                         "/etc/resolv.conf (a chroot uses the root's)")
    if spec.devfs_ruleset not in (0, 4) and not namespaces.mount:
        raise SetupError(f"devfs_ruleset={spec.devfs_ruleset}: needs a mount namespace of the "
                         f"jail's for a /dev of its own; a chroot has the root's own /dev")
    if spec.devices and not namespaces.mount:
        raise SetupError(f"--device /{spec.devices[0].path}: needs a mount namespace of the "
                         f"jail's for a /dev of its own; a chroot has the root's own /dev")
    profile = spec.container.apparmor if spec.container is not None else None
    if profile and profile != "unconfined" and not namespaces.mount:
        raise SetupError(f"config.json: process.apparmorProfile: {profile}: needs a mount "
                         f"namespace of the jail's (the profile is asked for through its own "
                         f"/proc; a chroot has none)")
    if spec.domainname and not namespaces.uts:
        raise SetupError("host.domainname: needs a UTS namespace of the jail's, which this "
                         "jail does not get (the trace backend answers uname's hostname only)")
    if "mount" in spec.allowed and not namespaces.user:
        raise SetupError("allow.mount: needs a user namespace of the jail's (R5's kernel "
                         "provider), which this jail does not get")
    if "sysvipc" in spec.allowed and not namespaces.ipc:
        raise SetupError("allow.sysvipc: without an IPC namespace the jail would share the "
                         "host's System V IPC")
    for name, _ in spec.sysctl:  # each acts on the namespace of the writer: the jail's own
        from hyjail.ns import sysctl
        scope = sysctl.namespace_of(name)
        held = (namespaces.net or (spec.netns_path is not None and plan.kind != "trace")
                if scope == "net" else scope is not None and getattr(namespaces, scope))
        if not held:
            raise SetupError(f"linux.sysctl: {name}: needs the jail's own {scope} namespace, "
                             f"which this jail does not get (it would set the host's)")
    if spec.joined and plan.kind == "trace":
        raise SetupError(f"linux.namespaces: {spec.joined[0][0]}: {spec.joined[0][1]}: "
                         f"joining a namespace needs the ns or hybrid backend")
    if spec.netns_path is not None and plan.kind == "trace":
        raise SetupError(f"linux.namespaces: network: {spec.netns_path}: joining a namespace "
                         f"needs the ns or hybrid backend (a trace jail's is the host's)")
    if "mqueue" in spec.allowed and not namespaces.ipc:
        raise SetupError("allow.mqueue: without an IPC namespace the jail would share the "
                         "host's POSIX message queues")
    if spec.userns_base is not None and not namespaces.user:
        raise SetupError("--userns: needs a user namespace of the jail's (R5's kernel "
                         "provider), which this jail does not get")
    if plan.uses("R3", "ptrace"):
        if "raw_sockets" in spec.allowed:
            raise SetupError("allow.raw_sockets: without a network namespace a raw socket "
                             "could send from any address of the host")
        if "socket_af" in spec.allowed:
            raise SetupError("allow.socket_af: without a network namespace every other family "
                             "would act on the host's own network stack")
        for address in spec.addresses if spec.lan is None else ():  # aliases: made local
            if not _is_local(address):
                raise SetupError(f"R3 (address): {address} is not an address of this host; "
                                 f"without a network namespace the jail shares the host's "
                                 f"network, so its address must be one of the host's")


def _ptraced(plan: Plan) -> str:
    return ", ".join(sorted(plan.ptrace_rules()))


def _is_local(address) -> bool:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def _proc_is_mounted(path: str) -> bool:
    target = os.path.join(path, "proc")
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def handled(plan: Plan) -> dict:
    """The handlers of the rules the plan gives ptrace ({} for a jail nobody traces)."""
    if not plan.traced:
        return {}
    from hyjail.trace import handlers
    rules = plan.ptrace_rules()
    if "untraced-pids" in weaken.weakened():
        rules -= {"R4"}
    return handlers.table(rules)


def unix_stand_in(plan: Plan) -> bool:
    """Whether the supervisor performs the jail's addressed unix calls itself: the plan's
    R3 is ptrace's without Landlock scopes (and the battery has not weakened that away)."""
    return (plan.uses("R3", "ptrace") and plan.chosen["R3"].variant == "stand-in"
            and "unjudged-unix" not in weaken.weakened())


def confinement(spec: JailSpec, plan: Plan) -> Confinement:
    """How the jail's processes are confined just before exec (`Confinement.apply`), its
    filter compiled here, on the host."""
    namespaces = namespaces_of(plan)
    container = spec.container  # an OCI container's process (hyjail.container)
    allowed = spec.allowed
    if "host-mqueue" in weaken.weakened() and not namespaces.ipc:
        allowed = allowed | {"mqueue"}  # the battery's proof that the gate is what holds
    base = Confinement(allowed, spec.limits.rlimits, userns=namespaces.user,
                       chrooted=not namespaces.mount, weakened=weaken.weakened(),
                       **({} if container is None else {
                           "caps": container.caps, "extra_filter": container.extra_filter,
                           "umask": container.umask,
                           "oom_score_adj": container.oom_score_adj,
                           "apparmor": container.apparmor}))
    if not plan.traced:
        return base.prepare()

    from hyjail.trace import handlers
    from hyjail.trace.tracer import tags
    scopes = 0
    if (plan.uses("R3", "ptrace") or plan.uses("R4", "ptrace")) and plan.probe.has(
            "landlock.scope"):  # the kernel keeps signals and abstract sockets in
        scopes = linux.LANDLOCK_SCOPE_SIGNAL | linux.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
    refused_arguments: tuple = ()
    if plan.uses("R3", "ptrace"):  # protocols and options that add addresses
        from hyjail.trace import sockets
        versions = {address.version for address in spec.addresses}
        refused_arguments = (
            # A family the jail has no address of does not exist for it (as on FreeBSD), so
            # programs fall back to the other one.
            *(("socket", 0, family, errno.EAFNOSUPPORT)
              for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6))
              if version not in versions),
            *(("socket", 2, protocol, errno.EPROTONOSUPPORT)
              for protocol in sockets.REFUSED_PROTOCOLS),
            *(("setsockopt", 1, level, errno.EPERM) for level in sockets.REFUSED_OPTION_LEVELS))
    judged = handled(plan)
    if plan.uses("R4", "ptrace") and "any-fown" not in weaken.weakened():
        refused_arguments += tuple(("ioctl", 1, request, errno.EPERM)
                                   for request in handlers.OWNER_IOCTLS)
    return replace(base, traced=tuple(tags(judged).items()),
                   traced_arguments=tuple((name, h.only_when[0], value)
                                          for name, h in judged.items() if h.only_when
                                          for value in h.only_when[1]),
                   self_args=tuple((name, h.self_arg) for name, h in judged.items()
                                   if h.self_arg is not None),
                   refused=tuple(handlers.REFUSED_IN_TRACE.items()), landlock_scopes=scopes,
                   refused_arguments=refused_arguments).prepare()
