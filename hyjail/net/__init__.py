"""Jail networking: the addresses a jail holds (addresses), its loopback (loopback) and the veth
that carries its addresses (veth).

`veth` loads pyroute2 (hundreds of milliseconds): only the network helper (`netd`) imports it;
a supervisor asks the helper for its jail's veth through `link`.
"""


def host_link_name(jid: int) -> str:
    """The host-side end of jail JID's veth (SPEC section 3: the `hj` prefix)."""
    return f"hj{jid}h"


JAIL_LINK_NAME = "eth0"
