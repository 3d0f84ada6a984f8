"""`hyjail check`: the escape battery, sysjail's sjtest done thoroughly.

Each attempt to break a jail rule (SPEC section 1, R1-R7, plus the races that killed sysjail,
and the entry group E against the host's own way in: SPEC's "entry path") runs as root
inside a fresh jail of its own, through every ABI the host accepts, on each backend asked for;
a row is held, ESCAPED, skipped (with the host's reason) or an error.
`attempts` is the catalogue, `probe.c` the program that makes the attempts, `probes` builds
it, `ground` is what the battery stands on, `runner` runs it (`jailrun` one jail, `entry` the
entry group's drivers, `impostor` its fake network helper), `report` prints it.
"""
