"""`python -m hyjail` is the `hyjail` command."""

from hyjail.commands import hyjail_main

hyjail_main()
