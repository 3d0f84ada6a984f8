"""Reading and writing a stopped tracee's memory, once per argument.

Owns: process_vm_readv/writev through ctypes. A handler reads an argument exactly once into
the supervisor's own memory and decides (and acts) on that copy only: another thread of the
tracee may rewrite the original at any moment, which is how sysjail was broken.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)


class _IOVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


for _name in ("process_vm_readv", "process_vm_writev"):
    getattr(_libc, _name).argtypes = (ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong,
                                      ctypes.POINTER(_IOVec), ctypes.c_ulong, ctypes.c_ulong)
    getattr(_libc, _name).restype = ctypes.c_ssize_t


def read(pid: int, address: int, size: int) -> bytes:
    """size bytes at address in pid; OSError (EFAULT) if any of them is not mapped."""
    buffer = ctypes.create_string_buffer(size)
    local = _IOVec(ctypes.cast(buffer, ctypes.c_void_p), size)
    remote = _IOVec(address, size)
    done = _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done != size:
        err = ctypes.get_errno() if done < 0 else 14  # EFAULT: a partial read
        raise OSError(err, os.strerror(err), f"reading {size} bytes of pid {pid}")
    return buffer.raw


def write(pid: int, address: int, data: bytes) -> None:
    buffer = ctypes.create_string_buffer(data, len(data))
    local = _IOVec(ctypes.cast(buffer, ctypes.c_void_p), len(data))
    remote = _IOVec(address, len(data))
    done = _libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done != len(data):
        err = ctypes.get_errno() if done < 0 else 14
        raise OSError(err, os.strerror(err), f"writing {len(data)} bytes of pid {pid}")
