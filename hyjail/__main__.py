"""`python -m hyjail` is the `hyjail` command."""

from hyjail.cli import main

main()
