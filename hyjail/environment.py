"""The variables `hyjail run` gives a jail's command: --env NAME=VALUE and --env-file FILE.

Owns reading them (podman's --env and --env-file words: NAME=VALUE, a bare NAME taking the
caller's value, `#` comments and blank lines in a file), each refusal one line naming the
option, file and line. What the command's environment is made of beyond them (a clean one,
or the caller's with --preserve-env; the user's HOME, SHELL, USER inside) is
`hyjail.spec.command_environment`'s and `hyjail.ns.whom`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from hyjail.errors import SetupError

MAX_FILE = 1 << 20


def from_options(given: Iterable[str], files: Iterable[str]) -> dict[str, str]:
    """The files' variables, in order, then --env's over them."""
    found: dict[str, str] = {}
    for path in files:
        found.update(_read_file(path))
    for word in given:
        found.update(_variable(word, "--env"))
    return found


def _read_file(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise SetupError(f"--env-file {path}: {e.strerror}") from None
    if len(data) > MAX_FILE:
        raise SetupError(f"--env-file {path}: longer than {MAX_FILE} bytes")
    found: dict[str, str] = {}
    for number, line in enumerate(data.decode(errors="surrogateescape").splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            found.update(_variable(line, f"--env-file {path}:{number}"))
    return found


def _variable(word: str, where: str) -> dict[str, str]:
    name, equals, value = word.partition("=")
    if not name or name != name.strip() or "\0" in word:
        raise SetupError(f"{where}: {word}: NAME=VALUE (or NAME, to pass ours)")
    if not equals:
        return {name: os.environ[name]} if name in os.environ else {}
    return {name: value}
