"""The plan: for each jail rule (SPEC section 1, R1-R7), the provider that enforces it here.

Owns: the providers each rule can have (the kernel's first, ptrace's second), what each needs
of the host (named by `hyjail.platform` checks), the choice under `--backend auto|ns|trace`,
and the refusal, naming the rule and why, when a rule is left without one. A provider that
is not built yet counts as missing: a rule is never assumed to hold.
"""

from __future__ import annotations

from collections.abc import Mapping

from hyjail.errors import SetupError
from hyjail.frozen import frozen
from hyjail.platform import Probe
from hyjail.spec import BACKENDS, check_backend

RULES = {"R1": "root", "R2": "hostname", "R3": "address", "R4": "processes",
         "R5": "superuser", "R6": "lifetime", "R7": "identity"}
# R1 decides the jail's shape. With the kernel's R1 (a mount namespace and pivot_root) every
# other rule takes its own best provider: a hybrid jail, namespaces where the host has them
# and the ptrace providers for the rest, inside the same jail. With ptrace's R1 (a chroot)
# the jail is the trace backend's whole, which can still use a network namespace for R3;
# so the plan never claims a kernel provider the jail does not get.
MIXABLE_WITH_CHROOT = ("R3",)
# The rules whose ptrace provider needs the supervisor to trace the jail (R5's is the
# capability sets and the filter alone).
TRACED = ("R1", "R2", "R3", "R4", "R6", "R7")
# What every ptrace provider needs: a RET_TRACE prefilter that stops only the judged calls,
# the kernel's own decoding of each (any ABI), and tracees that die with their tracer.
_TRACING = ("seccomp.filter", "seccomp.trace", "ptrace.traceseccomp", "ptrace.syscall_info",
            "ptrace.exitkill")


@frozen
class Provider:
    """Who holds one rule (SPEC's R1-R7): the kernel or ptrace, and how."""

    rule: str
    kind: str  # "kernel" or "ptrace"
    how: str
    needs: tuple[str, ...]
    built: bool = True
    variant: str = ""  # which of a rule's ptrace providers, where it has more than one

    def missing(self, probe: Probe) -> list[str]:
        """What this host lacks for it ([] when it can enforce its rule here)."""
        lacking = [need for need in self.needs if not probe.has(need)]
        return lacking if self.built else ["not built yet", *lacking]


PROVIDERS: dict[str, tuple[Provider, ...]] = {
    "R1": (Provider("R1", "kernel", "mount namespace, pivot_root", ("ns.mnt", "pivot_root")),
           Provider("R1", "ptrace", "chroot; chroot, pivot_root and mounts denied",
                    ("seccomp.filter",))),
    # The jail's user namespace is what lets its root set its own hostname (allow.set_hostname)
    # and nothing of the host's.
    "R2": (Provider("R2", "kernel", "UTS namespace owned by the jail's user namespace",
                    ("ns.uts", "ns.user")),
           Provider("R2", "ptrace", "uname and sethostname answered per jail", _TRACING)),
    # Two ptrace providers for R3, as strong as each other: where Landlock has scopes (6.12)
    # the kernel keeps abstract unix names inside the jail and unix calls run as made;
    # elsewhere (from 5.10) the supervisor performs every unix call that names an address,
    # as a stand-in with the caller's root, directory and credentials, and reaches an
    # abstract name only while a jail process holds the socket bound to it.
    "R3": (Provider("R3", "kernel", "network namespace, veth", ("ns.net",)),
           Provider("R3", "ptrace", "socket calls performed by the supervisor, Landlock "
                    "scopes", (*_TRACING, "pidfd_getfd", "kcmp", "landlock.scope"),
                    variant="scoped"),
           Provider("R3", "ptrace", "socket calls performed by the supervisor, unix too",
                    (*_TRACING, "pidfd_getfd", "kcmp"), variant="stand-in")),
    # Signals go through process pidfds and tgkill on tids the supervisor still traces (a
    # traced task's tid is not reused until its tracer reaps it): no thread pidfds needed.
    "R4": (Provider("R4", "kernel", "pid namespace", ("ns.pid",)),
           Provider("R4", "ptrace", "jail pids only; signals sent by the supervisor",
                    (*_TRACING, "pidfd_open", "kcmp"))),
    "R5": (Provider("R5", "kernel", "user namespace, capabilities, seccomp filter",
                    ("ns.user", "ns.uts", "seccomp.filter")),
           Provider("R5", "ptrace", "capabilities, seccomp filter (no user namespace)",
                    ("seccomp.filter",))),
    "R6": (Provider("R6", "kernel", "pid namespace: all die with pid 1", ("ns.pid",)),
           Provider("R6", "ptrace", "PTRACE_O_EXITKILL: all die with the tracer",
                    ("ptrace.exitkill",))),
    "R7": (Provider("R7", "kernel", "registry, pid namespace", ("ns.pid",)),
           Provider("R7", "ptrace", "registry, the tracer's tracees", _TRACING)),
}


@frozen
class Plan:
    """Each rule's provider for one jail on this host, and the backend that follows."""

    backend: str  # what was asked for
    chosen: dict[str, Provider]
    probe: Probe

    @property
    def kind(self) -> str:
        """The jail's shape: "ns" when the kernel holds every rule, "trace" when ptrace holds
        R1 (a chroot, and ptrace for all but R3), else "hybrid" (a namespace jail whose
        missing rules a tracing supervisor holds)."""
        if self.uses("R1", "ptrace"):
            return "trace"
        return "ns" if all(p.kind == "kernel" for p in self.chosen.values()) else "hybrid"

    @property
    def traced(self) -> bool:
        """Whether the supervisor traces the jail's processes."""
        return any(self.uses(rule, "ptrace") for rule in TRACED)

    def ptrace_rules(self) -> set[str]:
        return {rule for rule, p in self.chosen.items() if p.kind == "ptrace"}

    def uses(self, rule: str, kind: str) -> bool:
        return self.chosen[rule].kind == kind


def choose(probe: Probe, backend: str = "auto",
           ptrace_for: Mapping[str, str] | None = None) -> Plan:
    """The plan for this host. `ns` takes kernel providers only, `trace` ptrace's first,
    `auto` the kernel's first. ptrace_for: rules this jail needs ptrace's provider of, each
    with the option that needs it (osrelease: only the tracer can answer uname's release).
    Raises SetupError naming the first rule left without one."""
    check_backend(backend)
    ptrace_for = ptrace_for or {}
    chosen: dict[str, Provider] = {}
    for rule, providers in PROVIDERS.items():
        if rule in ptrace_for:
            if backend == "ns":
                raise SetupError(f"{ptrace_for[rule]}: needs ptrace's provider of {rule} "
                                 f"({RULES[rule]}), which --backend ns does not use")
            providers = tuple(p for p in providers if p.kind == "ptrace")
        picked = _pick(providers, probe, backend)
        if picked is None:
            why = "; ".join(f"{p.kind} ({p.how}): {', '.join(p.missing(probe))}"
                            for p in _order(providers, backend))
            raise SetupError(f"{rule} ({RULES[rule]}) cannot be enforced on this host with "
                             f"--backend {backend}: {why}")
        chosen[rule] = picked
    if chosen["R1"].kind == "ptrace":
        for rule, providers in PROVIDERS.items():
            if rule in MIXABLE_WITH_CHROOT:
                continue
            ptraced = [p for p in providers if p.kind == "ptrace"]
            usable = [p for p in ptraced if not p.missing(probe)]
            if not usable:
                why = "; ".join(", ".join(p.missing(probe)) for p in ptraced)
                raise SetupError(f"{rule} ({RULES[rule]}): the trace backend, whose chroot this "
                                 f"host needs for R1, cannot hold it: {why}")
            chosen[rule] = usable[0]
    return Plan(backend, chosen, probe)


def _order(providers: tuple[Provider, ...], backend: str) -> list[Provider]:
    if backend == "ns":
        return [p for p in providers if p.kind == "kernel"]
    if backend == "trace":
        return sorted(providers, key=lambda p: p.kind != "ptrace")
    return list(providers)


def _pick(providers: tuple[Provider, ...], probe: Probe, backend: str) -> Provider | None:
    return next((p for p in _order(providers, backend) if not p.missing(probe)), None)


def table(probe: Probe) -> list[dict]:
    """Every rule with every provider: whether this host has it, and which each backend
    would pick; what `hyjail features` prints."""
    picks = {}
    for backend in BACKENDS:
        try:
            picks[backend] = choose(probe, backend).chosen
        except SetupError:
            picks[backend] = {}  # this backend cannot run a jail here
    rows = []
    for rule, providers in PROVIDERS.items():
        for provider in providers:
            rows.append({
                "rule": rule, "name": RULES[rule], "provider": provider.kind,
                "how": provider.how, "missing": provider.missing(probe),
                "picked_by": [b for b in BACKENDS if picks[b].get(rule) == provider]})
    return rows
