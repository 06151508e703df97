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
import sys
from typing import IO, TYPE_CHECKING, Any, Optional, Union

from .. import _c, _sysfs
from .._validate import check_fd
from ..errors import LoopError, TypeError, ValueError, error_from_errno
from .info import LO_NAME_SIZE

if TYPE_CHECKING:
    from .._native import CData

__all__ = ["Backing"]  # BackingFile: the attach paths' and change_fd's own

_BACKING = _c.ffi.typeof("struct lc_backing *")
# An unopened file's ``found`` until its bind: all zeros, never written.
_NOT_FOUND_YET = _c.ffi.new(_BACKING)

# os.fsencode's arguments, looked up once (it is on the attach path)
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

Backing = Union[str, bytes, "os.PathLike[str]", int, IO[Any]]
"""A backing file: a path, an open file descriptor or a file object."""


def _fd_name(fd: int) -> str:
    """The path behind an fd, for the kernel's ``lo_file_name`` and for
    errors (losetup records a path too); ``fd N`` when it has none."""
    return _sysfs.fd_path(fd) or f"fd {fd}"


class BackingFile:
    """An open backing file.  ``fd``; ``owned`` (loopcore opened it and
    closes it); ``name`` (for errors and ``lo_file_name``); ``path`` (b""
    unless :meth:`unopened`: what lc_attach opens); ``dev`` and
    ``ino`` (its st_dev and st_ino); ``size`` in bytes;
    ``direct_io_refused`` (asked for with ``probe_direct_io``: its file
    system claims direct I/O but fails it, lc_direct_io_refused), read
    from ``found`` (the struct lc_backing the C side filled).  Use as a
    context manager or call :meth:`close`."""

    __slots__ = ("fd", "owned", "name", "path", "_encoded", "found")

    def __init__(self, fd: int, owned: bool, name: str, found: CData,
                 encoded: Optional[bytes] = None, path: bytes = b"") -> None:
        self.fd = fd
        self.owned = owned
        self.name = name
        self.path = path  # b"": open, lc_attach binds fd
        self._encoded = encoded
        self.found = found  # read field by field, when asked

    @property
    def size(self) -> int:
        return int(self.found.size)

    @property
    def dev(self) -> int:
        return int(self.found.dev)

    @property
    def ino(self) -> int:
        return int(self.found.ino)

    @property
    def direct_io_refused(self) -> bool:
        return bool(self.found.direct_io_refused)

    @classmethod
    def open(cls, backing: Backing, read_only: bool,
             probe_direct_io: bool = False) -> "BackingFile":
        """Open (a path) or adopt (an fd, a file object) ``backing``: one C
        call each (lc_backing_open, lc_backing_stat)."""
        found = _c.ffi.new(_BACKING)
        if type(backing) is str:  # the common case first
            name = backing
        elif isinstance(backing, int):
            fd = check_fd(backing)  # also refuses a bool
            name = _fd_name(fd)
            _check_backing(_c.lib.lc_backing_stat(fd, probe_direct_io, found), found, name)
            return cls(fd, False, name, found)
        elif isinstance(backing, (str, bytes, os.PathLike)):
            name = os.fsdecode(backing)
        else:
            fileno = getattr(backing, "fileno", None)
            if fileno is None:
                raise TypeError(f"backing must be a path, an fd or a file object, "
                                f"not {type(backing).__name__}")
            fd = check_fd(fileno())
            given = getattr(backing, "name", None)
            name = (os.path.abspath(os.fsdecode(given)) if isinstance(given, (str, bytes))
                    and given else _fd_name(fd))
            _check_backing(_c.lib.lc_backing_stat(fd, probe_direct_io, found), found, name)
            return cls(fd, False, name, found)
        if not name:
            raise ValueError("backing path is empty")
        if "\0" in name:
            raise ValueError(f"backing path {name!r} has a NUL byte")
        if name[0] != "/":
            name = os.path.abspath(name)
        encoded = os.fsencode(name)
        fd = _c.lib.lc_backing_open(encoded, read_only, probe_direct_io, found)
        if fd < 0:
            _check_backing(fd, found, name)
        return cls(fd, True, name, found, encoded)

    @classmethod
    def unopened(cls, path: str) -> Optional["BackingFile"]:
        """A path for lc_attach to open itself, so that attach() is one C
        call: ``fd`` -1 and ``path`` what to open (b"" for an open file)
        until the bind, which sets ``found`` to lc_attach's
        ``result.backing``.
        None for a path :meth:`open` refuses (empty, with a NUL: it says
        why)."""
        if not path or "\0" in path:
            return None
        if path[0] != "/":
            path = os.path.abspath(path)
        encoded = path.encode(_FS_ENCODING, _FS_ERRORS)
        return cls(-1, True, path, _NOT_FOUND_YET, encoded, encoded)

    def writable(self) -> bool:
        """Whether the fd was opened for writing (a caller's may not be)."""
        return fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY

    def file_name_field(self) -> bytes:
        """The 64-byte ``lo_file_name`` (NUL-terminated, truncated like
        losetup); empty for an fd with no path to record (``fd N`` means
        nothing to anyone else)."""
        if self._encoded is not None:  # an absolute path loopcore opened
            return self._encoded[: LO_NAME_SIZE - 1]
        return file_name_field(self.name)

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "BackingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_backing(rc: int, found: CData, name: str) -> None:
    """Raise for a failed lc_backing_open/lc_backing_stat."""
    if rc < 0:
        raise backing_error(rc, found, name)


def backing_error(rc: int, found: CData, name: str) -> OSError:
    """The error for a backing file lc_backing_open (also inside lc_attach)
    or lc_backing_stat refused with ``rc``."""
    if rc == -errno.EINVAL and found.mode:
        return LoopError(errno.EINVAL, "backing file is not a regular file or block device",
                         name)
    return error_from_errno(-rc, name)


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


