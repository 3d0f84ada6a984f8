"""The errors hyjail reports to its user, each with the exit code SPEC section 2 gives it.

Owns: the exception types and their codes, how a message becomes the one printable line it
is shown as (`one_line`), and a command's exit status from them (`exit_status`). Raising one
of these means "print one line naming the offending value and exit with this code"; every
other exception is a bug.
"""

from __future__ import annotations

import sys

EXIT_SETUP = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
EXIT_USAGE = 2


class HyjailError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    exit_code = EXIT_SETUP

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class SetupError(HyjailError):
    """The jail could not be set up: bad input, an unenforceable rule, a kernel refusal."""

    exit_code = EXIT_SETUP


class UsageError(HyjailError):
    """The command line itself is malformed."""

    exit_code = EXIT_USAGE


def one_line(text: str) -> str:
    """A message naming what was given: whatever it held, one printable line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def exit_status(prog: str, call) -> int:
    """call's exit status; a HyjailError is one line on stderr and its SPEC 2 exit code."""
    try:
        status = call()
    except HyjailError as e:
        print(f"{prog}: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return status if isinstance(status, int) else 0
