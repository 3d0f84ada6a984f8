"""An OCI container's state on the host: its directory under the runtime's root, and the
state JSON `hyjail-oci state` prints.

Owns: container ids (what may name a directory), the directory `ROOT/ID` (made exclusively,
root's alone: 0700, so only the runtime's caller reaches the start socket in it), the record
kept there (`container.json`: bundle, creation time, annotations, the stand-in's pid and
start time, whether it was started, the hooks later operations run), and the status the
runtime spec defines (creating, created, running, stopped; paused from the freezer) read
from that record and the live processes. The jail itself is the registry's
(`hyjail.registry`), named by the container id.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from hyjail import charsets, jsontext
from hyjail.errors import HyjailError
from hyjail.frozen import asdict, frozen, made_by, replace
from hyjail.linux import process_start_time

DEFAULT_ROOT = "/run/hyjail/oci"  # SPEC 3: hyjail's state is under /run/hyjail
OCI_VERSION = "1.0.2"
RECORD = "container.json"
START_SOCKET = "start.sock"
# runc's rule: what a container id may be (it names a directory and a jail).
_ID = charsets.ALNUM | frozenset("_+.-")


class NoSuchContainer(HyjailError):
    """The message runc gives, which podman and containerd look for."""

    def __init__(self, container_id: str):
        super().__init__(f'container "{container_id}" does not exist', 1)


def check_id(container_id: str) -> str:
    if not charsets.made_of(container_id, _ID, 1, 64) or container_id in (".", ".."):
        raise HyjailError(f"invalid container id {container_id!r}: letters, digits, "
                          f"'_', '+', '.' and '-', at most 64", 1)
    return container_id


@frozen
class Container:
    id: str
    bundle: str
    created: float
    annotations: dict[str, str] = made_by(dict)
    rootfs: str = ""
    pid: int = 0  # the stand-in's (`hyjail.oci.standin`): the state's and --pid-file's
    pid_start: int = 0
    started: bool = False
    hooks: dict = made_by(dict)  # what start and delete run (`oci.hooks`)

    def to_json(self) -> str:
        return jsontext.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Container:
        data = jsontext.loads(text)
        return cls(**{name: data[name] for name in cls.__frozen_fields__ if name in data})

    def alive(self) -> bool:
        """The stand-in, and so the supervisor and the jail, still there."""
        return bool(self.pid) and process_start_time(self.pid) == self.pid_start


class Store:
    """The runtime's root directory (`--root`): one directory per container."""

    def __init__(self, root: str = DEFAULT_ROOT):
        self.root = os.path.abspath(root)

    def directory(self, container_id: str) -> str:
        return os.path.join(self.root, check_id(container_id))

    def start_socket(self, container_id: str) -> str:
        return os.path.join(self.directory(container_id), START_SOCKET)

    def make(self, container: Container) -> None:
        """The container's directory and record; refused if the id is taken."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            os.mkdir(self.directory(container.id), 0o700)
        except FileExistsError:
            raise HyjailError(f"container with id exists: {container.id}", 1) from None
        self.write(container)

    def write(self, container: Container) -> None:
        directory = self.directory(container.id)
        tmp = os.path.join(directory, f".{RECORD}.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(container.to_json())
        os.replace(tmp, os.path.join(directory, RECORD))

    def read(self, container_id: str) -> Container:
        try:
            with open(os.path.join(self.directory(container_id), RECORD)) as f:
                return Container.from_json(f.read())
        except (FileNotFoundError, NotADirectoryError, ValueError, TypeError):
            raise NoSuchContainer(container_id) from None

    def update(self, container_id: str, **changes) -> Container:
        with self.locked(container_id):
            container = replace(self.read(container_id), **changes)
            self.write(container)
        return container

    @contextlib.contextmanager
    def locked(self, container_id: str) -> Iterator[None]:
        try:
            fd = os.open(self.directory(container_id), os.O_RDONLY | os.O_DIRECTORY
                         | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoSuchContainer(container_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def remove(self, container_id: str) -> None:
        # Its own files (the record, the start socket, a hook's output): no shutil, whose
        # import (bz2, lzma) was milliseconds of every delete.
        for directory, subdirectories, names in os.walk(self.directory(container_id),
                                                       topdown=False):
            for name in names:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))
            for name in subdirectories:
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    (os.unlink if os.path.islink(path) else os.rmdir)(path)
        with contextlib.suppress(OSError):
            os.rmdir(self.directory(container_id))

    def ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [name for name in names if charsets.made_of(name, _ID, 1, 64)
                and os.path.isfile(os.path.join(self.root, name, RECORD))]


def status(container: Container, paused: bool = False) -> str:
    """The runtime spec's status: creating (no stand-in yet), created (held before its
    process), running, paused, stopped (its stand-in, and so the jail, is gone)."""
    if not container.pid:
        return "creating"
    if not container.alive():
        return "stopped"
    if not container.started:
        return "created"
    return "paused" if paused else "running"


def state_json(container: Container, current: str) -> dict:
    """The state the runtime spec defines (with runc's rootfs, created and owner besides)."""
    state = {"ociVersion": OCI_VERSION, "id": container.id, "status": current,
             "pid": container.pid if current != "stopped" else 0,
             "bundle": container.bundle, "rootfs": container.rootfs,
             "created": rfc3339(container.created), "owner": ""}
    if container.annotations:
        state["annotations"] = container.annotations
    return state


def rfc3339(when: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
    return f"{seconds}.{int(when % 1 * 1e9):09d}Z"
