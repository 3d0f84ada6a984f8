"""What an OCI container's process asks of a jail beyond a FreeBSD jail's command: exact ids
and environment, a capability set of its own, a umask, an OOM score, a seccomp profile of
its own stacked on the jail's filter, and an AppArmor profile.

Owns only the typed form, which `hyjail.oci` builds from a config.json (after refusing what
no backend holds) and the jail side reads: `hyjail.ns.whom` (ids, environment, directory)
and `hyjail.ns.dilution` (capabilities, the extra filter). Nothing here can widen a jail:
the capabilities are what the jail's root would keep anyway, less what the container gives
up (`allowed_caps`), and the extra filter is loaded after the jail's own, so the kernel
applies the stricter answer of the two.
"""

from __future__ import annotations

from hyjail.frozen import frozen


@frozen
class ContainerProcess:
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()  # the supplementary groups, exactly (additionalGids)
    umask: int | None = None
    oom_score_adj: int | None = None
    # The capability names (lower case, no CAP_) the process's bounding, permitted and
    # effective sets hold; None: the jail's own (`hyjail.ns.dilution.kept_caps`).
    caps: tuple[str, ...] | None = None
    # The container's own seccomp profile, compiled (`hyjail.oci.seccomp`); b"": none.
    extra_filter: bytes = b""
    # An AppArmor profile, loaded on the host, for the process from its exec on
    # (`hyjail.apparmor`); None: none (an exec's: the container's), "unconfined": none.
    apparmor: str | None = None
