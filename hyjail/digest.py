"""Hashes and MACs for the host's caches and names, without OpenSSL on the start path.

Owns: the one hash hyjail uses for keys, fingerprints and names (BLAKE2b), keyed BLAKE2b as
the caches' MAC, and a constant-time comparison. `hashlib` and `hmac` load OpenSSL's
libcrypto when imported, a few milliseconds of every start for a few short hashes; BLAKE2 is
built into CPython (`_blake2`, which `hashlib` itself wraps), and keyed BLAKE2b is a MAC by
design, so no HMAC construction is needed around it.
"""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it: hashlib's (same algorithm)
    from hashlib import blake2b
try:
    from _operator import _compare_digest as same
except ImportError:
    from hmac import compare_digest as same

KEY_SIZE = 32  # bytes of a MAC key (BLAKE2b takes up to 64)
MAC_SIZE = 32


def hexdigest(data: bytes, size: int = 16) -> str:
    """A hex digest of `size` bytes (2 * size hex digits) of data."""
    return blake2b(data, digest_size=size).hexdigest()


def digest(data: bytes) -> bytes:
    """data's unkeyed tag, MAC_SIZE bytes (a rootless cache's, which has no key to use)."""
    return blake2b(data, digest_size=MAC_SIZE).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """data's MAC under key (keyed BLAKE2b, MAC_SIZE bytes)."""
    return blake2b(data, key=key, digest_size=MAC_SIZE).digest()


__all__ = ["KEY_SIZE", "MAC_SIZE", "digest", "hexdigest", "mac", "same"]
