"""Whom an entered process runs as: a jail's users and groups, read as plain data (what
`jexec -U/-l` and `hyjail exec -u` need of the jail's /etc/passwd and /etc/group), a user of
the host's (`jexec -u`), and what the caller asked of the entry (`Asked`).

Owns: opening the jail's two files beneath its root by descriptor (openat2 with
RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS: a symlink the jail planted resolves inside the jail,
never out of it), regular files only, bounded in size, and parsing them with our own code,
once and only when asked. Never NSS for the jail's: glibc would read the jail's nsswitch.conf
and load its libnss_*.so into the process that asks, which still holds the host's powers
(SPEC 1, the entry path). A host user is looked up through the host's own NSS, by the caller,
before anything of the jail is joined (as FreeBSD's jexec does before jail_attach).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from hyjail import linux
from hyjail.errors import SetupError
from hyjail.frozen import frozen

MAX_BYTES = 4 << 20  # far beyond any real passwd/group file; a jail cannot make us read more
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel: never an account's id
_RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS


@frozen
class User:
    """A line of the jail's passwd."""

    name: str
    uid: int
    gid: int
    gecos: str = ""
    home: str = "/"
    shell: str = "/bin/sh"


@frozen
class Group:
    """A line of the jail's group file."""

    name: str
    gid: int
    members: tuple[str, ...] = ()


# jexec -l with no root entry in the jail (a bare root): root, at /, with the usual shell.
ROOT = User("root", 0, 0, "", "/", "/bin/sh")


@frozen
class HostUser:
    """A user of the host's passwd, with its groups as initgroups(3) gives them on the host."""
    user: User
    groups: tuple[int, ...]


@frozen
class Asked:
    """What a caller asks of an entry into a jail (jexec's options; `hyjail.jails.exec_in`'s
    keywords), carried into the entering process, which settles it there: the jail's files
    can only be read, and its directories entered, from inside."""
    user: str | None = None  # a user of the jail's passwd (jexec -U, hyjail exec -u)
    group: str | None = None  # a group of the jail's, in place of the user's (--user U:G)
    host: HostUser | None = None  # a user of the host's, looked up before entering (jexec -u)
    login: bool = False  # jexec -l: a login's clean environment, in the user's home
    # FreeBSD's jexec for a named user: its USER, HOME, SHELL and the login class's PATH,
    # even without -l (hyjail exec leaves the environment alone).
    user_environment: bool = False
    # hyjail run's and hyjail exec's: the user's (root's by default) HOME, SHELL, USER,
    # LOGNAME and a login's PATH, under the variables the caller passes (a clean set).
    clean: bool = False
    cwd: str | None = None  # jexec -d: the working directory inside the jail
    # An OCI exec's process (`hyjail.container.ContainerProcess`): its ids and groups
    # exactly, no passwd look-up; the environment is the caller's, as given.
    process: object | None = None

    @property
    def named(self) -> bool:
        return self.user is not None or self.host is not None


def host_user(which: str) -> HostUser:
    """jexec -u: the host's user named `which` (or, failing that, with uid `which`), and its
    groups (the host's /etc/group, through the host's NSS). SetupError if there is none."""
    import pwd
    found = None
    with contextlib.suppress(KeyError):
        found = pwd.getpwnam(which)
    if found is None and which.isascii() and which.isdigit() and int(which) <= _MAX_ID:
        with contextlib.suppress(KeyError):
            found = pwd.getpwuid(int(which))
    if found is None:
        raise SetupError(f"{which}: no such user on the host")
    try:
        groups = os.getgrouplist(found.pw_name, found.pw_gid)
    except OSError as e:
        raise SetupError(f"getgrouplist: {found.pw_name}: {e.strerror or e}") from None
    user = User(found.pw_name, found.pw_uid, found.pw_gid, found.pw_gecos,
                found.pw_dir or "/", found.pw_shell or "/bin/sh")
    return HostUser(user, tuple(groups[:os.sysconf("SC_NGROUPS_MAX")]))


class JailAccounts:
    """The accounts of the jail whose root `root_fd` is (an fd the caller keeps open). Each
    file is read and parsed at its first use, and never again."""

    def __init__(self, root_fd: int):
        self._root = root_fd
        self._users: list[User] | None = None
        self._groups: list[Group] | None = None

    def users(self) -> list[User]:
        if self._users is None:
            self._users = parse_passwd(read_jail_file(self._root, "etc/passwd"))
        return self._users

    def groups(self) -> list[Group]:
        if self._groups is None:
            self._groups = parse_group(read_jail_file(self._root, "etc/group"))
        return self._groups

    def user(self, which: str | None) -> User:
        """The user named `which`, or with uid `which` if it is a number (such a user needs
        no entry: then its group is the same number, its home /); root for None. SetupError
        for a name the jail's /etc/passwd does not have."""
        wanted = which if which is not None else "root"
        if wanted.isdigit():
            uid = int(wanted)
            if uid > _MAX_ID:
                raise SetupError(f"{which}: no such user in the jail")
            return next((u for u in self.users() if u.uid == uid),
                        User(wanted, uid, uid, "", "/", "/bin/sh"))
        found = next((u for u in self.users() if u.name == wanted), None)
        if found is None:
            if which is None:
                return ROOT
            raise SetupError(f"{which}: no such user in the jail")
        return found

    def group_id(self, which: str) -> int:
        """The gid of the jail's group named `which`, or `which` itself if it is a number;
        SetupError for a name the jail's /etc/group does not have."""
        number = _id(which)
        if number is not None:
            return number
        found = next((g for g in self.groups() if g.name == which), None)
        if found is None:
            raise SetupError(f"{which}: no such group in the jail")
        return found.gid

    def group_ids(self, user: User) -> tuple[int, ...]:
        """initgroups(3)'s list, from the jail's /etc/group: the user's own group, then every
        group that names the user as a member (in file order, each once)."""
        ids = [user.gid]
        for group in self.groups():
            if user.name in group.members and group.gid not in ids:
                ids.append(group.gid)
        return tuple(ids[:os.sysconf("SC_NGROUPS_MAX")])


def read_jail_file(root_fd: int, path: str) -> bytes:
    """The bytes of the regular file at path beneath root_fd (b"" if it does not exist);
    SetupError, naming the file, for anything else: a special file, a magic link, too big."""
    shown = "/" + path
    try:
        # First by O_PATH, which opens nothing: a device or FIFO the jail put there is never
        # opened (with our capabilities) just to be refused.
        probe = linux.openat2(root_fd, path, os.O_PATH, _RESOLVE)
        try:
            kind = os.fstat(probe)
        finally:
            os.close(probe)
        if not stat.S_ISREG(kind.st_mode):
            raise SetupError(f"the jail's {shown} is not a regular file")
        fd = linux.openat2(root_fd, path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK, _RESOLVE)
    except FileNotFoundError:
        return b""
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            return b""
        raise SetupError(f"cannot read the jail's {shown}: {e.strerror}") from None
    try:
        opened = os.fstat(fd)  # swapped between the two opens: refuse what it became
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
                kind.st_dev, kind.st_ino):
            raise SetupError(f"the jail's {shown} changed while it was read")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > MAX_BYTES:
                raise SetupError(f"the jail's {shown} is larger than {MAX_BYTES >> 20} MiB")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise SetupError(f"cannot read the jail's {shown}: {e.strerror}") from None
    finally:
        os.close(fd)


def _fields(data: bytes, count: int) -> list[list[str]]:
    """Each well-formed line's `count` colon-separated fields; comments, blank lines, NIS
    compat lines (+/-) and lines with another number of fields are skipped, as glibc's files
    module skips what it cannot parse."""
    rows = []
    for raw in data.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", "surrogateescape")
        if not line or line[0] in "#+-":
            continue
        fields = line.split(":")
        if len(fields) == count and fields[0]:
            rows.append(fields)
    return rows


def _id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and int(text) <= _MAX_ID else None


def parse_passwd(data: bytes) -> list[User]:
    users = []
    for name, _, uid, gid, gecos, home, shell in _fields(data, 7):
        if (u := _id(uid)) is not None and (g := _id(gid)) is not None:
            users.append(User(name, u, g, gecos, home or "/", shell or "/bin/sh"))
    return users


def parse_group(data: bytes) -> list[Group]:
    groups = []
    for name, _, gid, members in _fields(data, 4):
        if (g := _id(gid)) is not None:
            groups.append(Group(name, g, tuple(m for m in members.split(",") if m)))
    return groups
