"""`hyjail check`: the escape battery, sysjail's sjtest done thoroughly.

Each attempt to break a jail rule (SPEC section 1, R1-R7, plus the races that killed sysjail)
runs as root inside a fresh jail of its own, through every ABI the host accepts, on each
backend asked for; a row is held, ESCAPED, skipped (with the host's reason) or an error.
`attempts` is the catalogue, `probe.c` the program that makes the attempts, `probes` builds
it, `runner` runs the battery, `report` prints it.
"""
