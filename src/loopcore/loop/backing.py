"""The backing file of an attach or a change_fd: one object, one owner.

:meth:`BackingFile.open` takes what a caller passes (a path, an fd, a
file object), checks it is a regular file or a block device, and knows
its size and the name the kernel should record; :meth:`close` closes the
fd only if loopcore opened it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import IO, Any, Union

from .. import _c
from .._validate import check_fd
from ..errors import LoopError, TypeError, ValueError, error_from_errno
from . import _calls
from .info import LO_NAME_SIZE

__all__ = ["Backing", "BackingFile"]

Backing = Union[str, bytes, "os.PathLike[str]", int, IO[Any]]
"""A backing file: a path, an open file descriptor or a file object."""

# O_NONBLOCK: opening a FIFO read-only would otherwise wait for a writer
# forever; anything but regular files and block devices is refused right
# after, and the flag is cleared on what is kept.
_OPEN_FLAGS = os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _fd_name(fd: int) -> str:
    """The path behind an fd, for the kernel's ``lo_file_name`` and for
    errors (losetup records a path too); ``fd N`` when it has none."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd {fd}"
    return target if target.startswith("/") else f"fd {fd}"


class BackingFile:
    """An open backing file.  ``fd``; ``owned`` (loopcore opened it and
    closes it); ``name`` (for errors and ``lo_file_name``); ``st``; ``size``
    in bytes.  Use as a context manager or call :meth:`close`."""

    __slots__ = ("fd", "owned", "name", "st", "size")

    def __init__(self, fd: int, owned: bool, name: str) -> None:
        self.fd = fd
        self.owned = owned
        self.name = name
        try:
            try:
                st = os.fstat(fd)
            except OSError as e:
                raise error_from_errno(e.errno or 0, name) from None
            if stat.S_ISREG(st.st_mode):
                self.size = st.st_size
            elif stat.S_ISBLK(st.st_mode):
                size = _c.ffi.new("uint64_t *")
                _calls.check(_c.lib.lc_get_size64(fd, size), name)
                self.size = int(size[0])
            else:
                raise LoopError(errno.EINVAL,
                                "backing file is not a regular file or block device", name)
            if owned:
                fcntl.fcntl(fd, fcntl.F_SETFL, 0)  # the O_NONBLOCK it was opened with
        except BaseException:
            self.close()
            raise
        self.st = st

    @classmethod
    def open(cls, backing: Backing, read_only: bool) -> "BackingFile":
        """Open (a path) or adopt (an fd, a file object) ``backing``."""
        if isinstance(backing, bool):
            raise TypeError("backing must be a path, an fd or a file object, not a bool")
        if isinstance(backing, int):
            check_fd(backing)
            return cls(backing, False, _fd_name(backing))
        if isinstance(backing, (str, bytes, os.PathLike)):
            name = os.fsdecode(backing)
            if not name:
                raise ValueError("backing path is empty")
            fd = os.open(name, (os.O_RDONLY if read_only else os.O_RDWR) | _OPEN_FLAGS)
            return cls(fd, True, name if name.startswith("/") else os.path.abspath(name))
        fileno = getattr(backing, "fileno", None)
        if fileno is None:
            raise TypeError(
                f"backing must be a path, an fd or a file object, not {type(backing).__name__}")
        fd = check_fd(fileno())
        given = getattr(backing, "name", None)
        if isinstance(given, (str, bytes)) and given:
            return cls(fd, False, os.path.abspath(os.fsdecode(given)))
        return cls(fd, False, _fd_name(fd))

    def writable(self) -> bool:
        """Whether the fd was opened for writing (a caller's may not be)."""
        return fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY

    def file_name_field(self) -> bytes:
        """The 64-byte ``lo_file_name`` (NUL-terminated, truncated like
        losetup); empty for an fd with no path to record (``fd N`` means
        nothing to anyone else)."""
        return file_name_field(self.name)

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "BackingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_name_field(name: str) -> bytes:
    """See :meth:`BackingFile.file_name_field`."""
    if not name.startswith("/"):
        return b""
    return os.fsencode(name)[: LO_NAME_SIZE - 1]


def expected_size(backing_size: int, offset: int, size_limit: int) -> int:
    """The size of a device over ``backing_size`` bytes from ``offset``,
    at most ``size_limit`` (0: no limit), in whole sectors."""
    size = max(backing_size - offset, 0)
    if size_limit:
        size = min(size, size_limit)
    return size & ~511


def partial_file_name(raw: bytes) -> str:
    """``lo_file_name`` as a name, its last byte ``*`` when all 63 are used
    and it may have been cut (util-linux's mark)."""
    name = bytes(raw).split(b"\0", 1)[0]
    if len(name) >= LO_NAME_SIZE - 1:
        name = name[: LO_NAME_SIZE - 2] + b"*"
    return os.fsdecode(name)


