"""The rule-to-provider plan, on probes of hosts that have less than this one (pure: the plan
reads only the probe), and the probe of this host itself."""

from __future__ import annotations

import pytest

from hyjail import plan, platform
from hyjail.errors import SetupError
from hyjail.platform import Check, Probe

from conftest import needs, needs_root

EVERYTHING = ("ns.mnt", "ns.pid", "ns.uts", "ns.ipc", "ns.net", "ns.cgroup", "ns.user",
              "pivot_root", "seccomp.filter", "seccomp.trace", "ptrace.exitkill",
              "ptrace.traceseccomp", "ptrace.syscall_info", "pidfd_open", "pidfd_getfd",
              "pidfd.thread", "landlock.scope", "kcmp", "mount_setattr")


def host(*lacking: str) -> Probe:
    return Probe({name: Check(name, name not in lacking, "") for name in EVERYTHING})


def kinds(chosen: plan.Plan) -> dict[str, str]:
    return {rule: provider.kind for rule, provider in chosen.chosen.items()}


def test_a_full_host_gets_the_kernel_for_every_rule_unless_trace_is_asked_for():
    assert set(kinds(plan.choose(host(), "auto")).values()) == {"kernel"}
    assert plan.choose(host(), "ns").kind == "ns"
    assert set(kinds(plan.choose(host(), "trace")).values()) == {"ptrace"}


@pytest.mark.parametrize("missing", ["ns.mnt", "pivot_root"])
def test_without_the_kernels_r1_the_jail_is_the_trace_backends_whole(missing):
    chosen = plan.choose(host(missing), "auto")
    assert chosen.kind == "trace" and chosen.traced
    # Never a kernel provider the trace backend cannot give (R3's network namespace it can).
    assert {r for r, k in kinds(chosen).items() if k == "kernel"} == {"R3"}


@pytest.mark.parametrize("missing, ptraced", [
    ("ns.net", {"R3"}),
    ("ns.pid", {"R4", "R6", "R7"}),
    ("ns.user", {"R2", "R5"}),  # root cannot be let set a hostname the host's userns owns
    ("ns.uts", {"R2", "R5"}),
])
def test_with_the_kernels_r1_each_missing_rule_alone_goes_to_ptrace(missing, ptraced):
    chosen = plan.choose(host(missing), "auto")
    assert chosen.kind == "hybrid" and chosen.traced
    assert chosen.ptrace_rules() == ptraced


def test_a_hybrid_is_refused_by_backend_ns_and_trace_takes_the_whole():
    with pytest.raises(SetupError, match=r"^R4 \(processes\) cannot be enforced"):
        plan.choose(host("ns.pid"), "ns")
    assert plan.choose(host("ns.pid"), "trace").kind == "trace"


def test_ns_refuses_naming_the_rule_and_what_is_missing():
    with pytest.raises(SetupError) as refused:
        plan.choose(host("ns.net"), "ns")
    assert str(refused.value) == ("R3 (address) cannot be enforced on this host with "
                                  "--backend ns: kernel (network namespace, veth): ns.net")


# What Debian 11's 5.10 (and 6.1, before 6.9 and 6.12) lacks of what a 6.18 kernel has.
BEFORE_6_9 = ("pidfd.thread", "landlock.scope")


def test_without_landlock_r3_goes_to_the_stand_in_and_r4_needs_no_thread_pidfds():
    namespaces = [n for n in EVERYTHING if n.startswith("ns.")]
    chosen = plan.choose(host(*namespaces, *BEFORE_6_9), "auto")
    assert chosen.kind == "trace" and set(kinds(chosen).values()) == {"ptrace"}
    assert chosen.chosen["R3"].variant == "stand-in"
    # Where Landlock has scopes, they are preferred (the kernel keeps the names in).
    assert plan.choose(host(*namespaces), "auto").chosen["R3"].variant == "scoped"
    assert plan.choose(host(*BEFORE_6_9), "trace").kind == "trace"


def test_without_namespaces_or_kcmp_r3_has_no_provider_and_says_why_for_each():
    lacking = [n for n in EVERYTHING if n.startswith("ns.")] + ["landlock.scope", "kcmp"]
    with pytest.raises(SetupError, match=r"^R3 \(address\) cannot be enforced .*"
                                         r"Landlock scopes\): kcmp, landlock.scope; "
                                         r"ptrace \(.*unix too\): kcmp$"):
        plan.choose(host(*lacking), "auto")


def test_a_rule_ptrace_cannot_hold_refuses_the_trace_backend():
    with pytest.raises(SetupError, match=r"^R4 \(processes\): the trace backend, whose chroot "
                                         r"this host needs for R1, cannot hold it: "
                                         r"pidfd_open$"):
        plan.choose(host("pivot_root", "pidfd_open"), "auto")


def test_an_unknown_backend_is_refused():
    with pytest.raises(SetupError, match="--backend jails: one of auto, ns, trace"):
        plan.choose(host(), "jails")


def test_the_table_shows_every_provider_and_each_backends_pick():
    rows = plan.table(host("ns.net"))
    r3 = [row for row in rows if row["rule"] == "R3"]
    assert [row["provider"] for row in r3] == ["kernel", "ptrace", "ptrace"]
    assert r3[0]["missing"] == ["ns.net"] and r3[0]["picked_by"] == []
    assert r3[1]["picked_by"] == ["auto", "trace"] and r3[2]["picked_by"] == []
    stand_in = [row for row in plan.table(host("ns.net", "landlock.scope"))
                if row["rule"] == "R3"][2]
    assert stand_in["picked_by"] == ["auto", "trace"] and stand_in["missing"] == []


@needs_root
@needs(*EVERYTHING, "abi.i386")
def test_a_host_with_everything_plans_an_ns_jail():
    """A host with every namespace, ptrace's options, pidfds and Landlock's scopes (this
    machine: kernel 6.18, as root) probes them all afresh, and auto picks the ns backend."""
    probe = platform.run()
    assert all(probe.has(name) for name in EVERYTHING), {
        n: c.detail for n, c in probe.items() if not c.ok}
    assert probe.has("abi.i386")
    assert plan.choose(probe, "auto").kind == "ns"
