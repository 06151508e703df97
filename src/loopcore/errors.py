"""loopcore's exceptions.

Every error is an :class:`OSError` with ``errno`` and ``filename`` set.
Where Python has a builtin subclass for the errno (``FileNotFoundError``,
``PermissionError``, ``FileExistsError`` ...) that is what is raised; the
rest are :class:`LoopError` or one of its subclasses.
"""
from __future__ import annotations

import errno as _errno
import os
from typing import Optional, Union

__all__ = [
    "LoopError",
    "DeviceBusyError",
    "NoFreeDeviceError",
    "NotALoopDeviceError",
    "error_from_errno",
]

PathArg = Union[str, bytes, "os.PathLike[str]", int, None]


class LoopError(OSError):
    """Base of loopcore's own errors (errnos with no builtin subclass)."""


class DeviceBusyError(LoopError):
    """EBUSY outlasted the retries: the device (or every candidate) was busy."""


class NoFreeDeviceError(LoopError):
    """The kernel could not find or allocate a free loop device."""


class NotALoopDeviceError(LoopError):
    """The path names something that is not a loop device."""


def error_from_errno(err: int, filename: PathArg = None, message: Optional[str] = None) -> OSError:
    """Return the exception for ``err`` (a positive errno) about ``filename``.

    Builtin subclasses win (``OSError(ENOENT, ...)`` is a FileNotFoundError);
    EBUSY becomes :class:`DeviceBusyError`; anything else :class:`LoopError`.
    """
    message = message or os.strerror(err)
    if isinstance(filename, int):
        filename = f"/dev/loop{filename}"
    builtin = OSError(err, message, filename)
    if type(builtin) is not OSError:
        return builtin
    cls = DeviceBusyError if err == _errno.EBUSY else LoopError
    return cls(err, message, filename)
