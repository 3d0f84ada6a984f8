"""FreeBSD's jexec(8) command line: `jexec [-l] [-d dir] [-u user | -U user] jail [command ...]`.

Owns: parsing jexec(8)'s options as FreeBSD's getopt does (no permutation: the first word
that is not an option is the jail, everything after it the command; the old `-n`, which
FreeBSD still accepts and ignores), choosing what `hyjail.jails.exec_in` is asked (-u: a user
of the host's passwd; -U: of the jail's; -l: a login's clean environment in the user's home;
-d: the working directory inside; no command: the user's shell), and printing and exiting
as FreeBSD's jexec does: its usage text and exit 1 for usage, `jexec: MESSAGE` (err(3)'s
wording, one line) and exit 1 for its own errors, else the command's status. Entering the jail
is `hyjail.jails.exec_in`'s; this module only words its refusals the way FreeBSD's would.
No click: jexec is on the hot path of every entry, and getopt is what FreeBSD's uses.
"""

from __future__ import annotations

import sys

from hyjail import getopt3
from hyjail.errors import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, HyjailError, one_line

PROG = "jexec"
OPTIONS = "d:lnu:U:"
USAGE = ("usage: jexec [-l] [-d working-directory] [[-u username] | [-U username]] jail "
         "[command ...]\n")

# How exec_in's entered process words a failed exec (hyjail.ns.init) and an unknown user
# (hyjail.accounts): FreeBSD's jexec says err(3)'s "execvp: CMD: strerror" and errx(3)'s
# "NAME: no such user".
_NOT_FOUND = ": command not found in the jail"
_CANNOT_EXECUTE = ": cannot execute: "
_NO_SUCH_USER = (": no such user in the jail", ": no such user on the host")


class Usage(Exception):
    """A usage error: the reason getopt(3) prints, if any, then the usage text; exit 1."""


class Request:
    """What the options ask for."""

    def __init__(self) -> None:
        self.login = False
        self.cwd: str | None = None
        self.host_user: str | None = None  # -u
        self.jail_user: str | None = None  # -U
        self.jail = ""
        self.command: list[str] = []


def parse(argv: list[str]) -> Request:
    try:
        options, args = getopt3.parse(argv, OPTIONS)
    except getopt3.OptionError as e:
        raise Usage(f"{PROG}: {e}") from None
    request = Request()
    uflag = Uflag = False
    for flag, value in options:
        match flag:
            case "-d":
                request.cwd = value
            case "-l":
                request.login = True
            case "-n":
                pass  # a jail name, once; FreeBSD's jexec still takes it and ignores it
            case "-u":
                request.host_user, uflag = value, True
            case "-U":
                request.jail_user, Uflag = value, True
    if not args or (uflag and Uflag):
        raise Usage("")
    request.jail, *request.command = args
    return request


def freebsd_words(error: HyjailError, request: Request) -> str:
    """exec_in's refusal as FreeBSD's jexec words the same failure."""
    text = str(error)
    verb = "execvp" if request.command else "execlp"  # jexec.c runs the shell by execlp
    if error.exit_code == EXIT_NOT_FOUND and text.endswith(_NOT_FOUND):
        return f"{verb}: {text.removesuffix(_NOT_FOUND)}: No such file or directory"
    if error.exit_code == EXIT_CANNOT_EXECUTE and _CANNOT_EXECUTE in text:
        named = request.command[0] if request.command else None
        if named is not None and text.startswith(named + _CANNOT_EXECUTE):
            return f"{verb}: {named}: {text.removeprefix(named + _CANNOT_EXECUTE)}"
        command, _, why = text.partition(_CANNOT_EXECUTE)
        return f"{verb}: {command}: {why}"
    for suffix in _NO_SUCH_USER:
        if text.endswith(suffix):
            return text.removesuffix(suffix) + ": no such user"
    which = request.jail
    if text == f'jail "{which}" not found' and which.isascii() and which.isdigit():
        return f"jail {int(which)} not found"  # libjail's words for a JID
    return text


def main(argv: list[str] | None = None) -> int:
    """jexec(8): argv without the program name (sys.argv[1:] by default); returns the exit
    status. Never raises for any argv."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--help"]:
        sys.stdout.write(USAGE)
        return 0
    try:
        request = parse(argv)
    except Usage as e:
        if str(e):
            print(one_line(str(e)), file=sys.stderr)
        sys.stderr.write(USAGE)
        return 1
    try:
        from hyjail.jails import exec_in
        return exec_in(request.jail, request.command, user=request.jail_user,
                       host_user=request.host_user, login=request.login, cwd=request.cwd,
                       user_environment=True)
    except HyjailError as e:
        print(f"{PROG}: {one_line(freebsd_words(e, request))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
