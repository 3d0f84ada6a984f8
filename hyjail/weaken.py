"""Deliberately weakened jails, for proving that the escape battery can fail.

Owns the one switch that turns a protection off: the environment variable
HYJAIL_UNSAFE_WEAKEN, a comma-separated list of the names below, honoured for root only (who
needs no jail to reach the host) and announced on stderr by every jail it weakens. The
battery's own tests set it to see attempts report ESCAPED; nothing else ever should.
"""

from __future__ import annotations

import os
import sys

from hyjail.errors import SetupError

VARIABLE = "HYJAIL_UNSAFE_WEAKEN"
KINDS = {
    "no-filter": "no seccomp filter (nor the trace backend's prefilter)",
    "all-caps": "root keeps every capability",
    "no-pidns": "no pid namespace, and nothing in its place",
    "leak-fds": "descriptors beyond 0-2 cross into the jail",
    "untraced-pids": "the trace backend's supervisor judges no call that names a process",
    # The entry path (SPEC section 1), one per class of issue 13's findings:
    "host-nss": "jexec looks users up through NSS inside the jail, before confinement",
    "dumpable-entry": "an entering process stays dumpable and keeps host descriptors until exec",
    "follow-symlinks": "mount set-up and the root follow symlinks by name",
    "any-netd": "the network helper is trusted without checking who answers",
    "unchecked-cache": "cached filters load unverified, and a jail over / can write the cache",
    "judged-fd-passthrough": "a judged socket call on a descriptor not an internet socket "
                             "resumes unchanged (trace)",
    "open-families": "sockets of families no namespace confines (vsock, ...) may be opened",
    "unmasked-proc": "the /proc files that runc and podman mask stay readable",
    # Issue 14: the trace backend's providers for kernels before 6.9 and 6.12.
    "unjudged-unix": "without Landlock scopes, unix calls that name an address run as made "
                     "(trace)",
    "any-fown": "F_SETOWN may name any process for SIGIO (trace)",
    "host-mqueue": "a jail without an IPC namespace may use the host's POSIX message queues "
                   "(trace)",
    # Found by the test boxes (systemd makes every mount shared).
    "shared-root-copy": "a trace jail's copy of its root stays a peer of the root's mount: "
                        "its mounts show where the root lies (trace)",
}
_announced = False


def weakened() -> frozenset[str]:
    """The weakenings asked for (none, normally); SetupError for a bad list or a non-root
    caller."""
    global _announced
    names = frozenset(filter(None, os.environ.get(VARIABLE, "").split(",")))
    if not names:
        return names
    unknown = names - KINDS.keys()
    if unknown:
        raise SetupError(f"{VARIABLE}={','.join(sorted(unknown))}: unknown (known: "
                         f"{', '.join(KINDS)})")
    if os.geteuid() != 0:
        raise SetupError(f"{VARIABLE}: only root may weaken a jail")
    if not _announced:
        _announced = True
        print(f"hyjail: WARNING: this jail is deliberately weakened: "
              f"{'; '.join(KINDS[n] for n in sorted(names))}", file=sys.stderr)
    return names
