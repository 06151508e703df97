"""loopcore's exceptions: one family.

Every exception loopcore raises is a :class:`loopcore.Error` and, at the
same time, the builtin a Python programmer expects (the way PyNaCl's are):

- bad arguments: :class:`ValueError` / :class:`TypeError` (subclasses of
  the builtins of the same name);
- failed system calls: an ``OSError`` with ``errno`` and ``filename`` set,
  of the builtin subclass Python has for the errno (``FileNotFoundError``,
  ``PermissionError``, ``TimeoutError`` ...: loopcore's subclasses of
  them, generated below), otherwise :class:`LoopError` (loop devices) or
  :class:`DmError` (device-mapper), with :class:`DeviceBusyError` for
  EBUSY that outlasted the retries of either.

So ``except loopcore.Error`` catches everything loopcore raises, and
``except FileNotFoundError`` or ``except ValueError`` still work.
"""
from __future__ import annotations

import builtins
import errno as _errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up time)
    from typing import Any, Callable, Dict, Optional, Type, TypeVar, Union

    PathArg = Union[str, bytes, "os.PathLike[str]", int, None]
    F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "Error",
    "ValueError",
    "TypeError",
    "LoopError",
    "DmError",
    "DeviceBusyError",
    "LoopBusyError",
    "DmBusyError",
    "DmParseError",
    "NoFreeDeviceError",
    "NotALoopDeviceError",
    "DiskseqMismatchError",
    "LoopOverlapError",
    "PartitionTableError",
    "error_from_errno",
    "converted",
    "translate",
]


class Error(Exception):
    """Base of every exception loopcore raises."""


class ValueError(Error, builtins.ValueError):  # noqa: A001 - PyNaCl's convention
    """An argument has the right type and a wrong value."""


class TypeError(Error, builtins.TypeError):  # noqa: A001
    """An argument has the wrong type."""


class LoopError(Error, builtins.OSError):
    """A loop device call failed with an errno Python has no subclass for."""


class DmError(Error, builtins.OSError):
    """A device-mapper call failed with an errno Python has no subclass for."""


class DeviceBusyError(Error, builtins.OSError):
    """EBUSY outlasted the retries: the device (or every candidate) was busy."""


class LoopBusyError(LoopError, DeviceBusyError):
    """A loop device (or every free one) stayed busy."""


class DmBusyError(DmError, DeviceBusyError):
    """A device-mapper device stayed busy (open, mounted)."""


class DmParseError(ValueError):
    """A device-mapper table or status text that loopcore cannot read: an
    unknown target type, or text not in the form the kernel writes."""


class NoFreeDeviceError(LoopError):
    """The kernel could not find or allocate a free loop device."""


class NotALoopDeviceError(LoopError):
    """The path names something that is not a loop device."""


class DiskseqMismatchError(LoopError):
    """The device node now holds another disk than the one asked for: its
    diskseq differs (the device was detached, and maybe reused, meanwhile).

    errno is ESTALE, the stale-handle errno: a (path, diskseq) pair is a
    handle on one binding, and ENXIO already means "not bound" elsewhere in
    loopcore, so the two stay apart.
    """


class LoopOverlapError(LoopBusyError):
    """``attach(..., reuse=True)``: a device already covers bytes of the
    requested range of the backing file, set up differently (another
    offset, size limit or block size).  errno EBUSY; ``filename2`` names
    that device.  Two devices over the same bytes would cache them twice."""


class PartitionTableError(LoopError):
    """The partition table cannot be used: a protective MBR without a
    valid GPT, a table written for another sector size, entries past the
    end of the device.  errno EINVAL."""


# loopcore's member of each builtin OSError subclass: what error_from_errno
# gives for the errnos Python maps to them.


class BlockingIOError(Error, builtins.BlockingIOError):  # noqa: A001
    """BlockingIOError, raised by loopcore."""


class ChildProcessError(Error, builtins.ChildProcessError):  # noqa: A001
    """ChildProcessError, raised by loopcore."""


class ConnectionError(Error, builtins.ConnectionError):  # noqa: A001
    """ConnectionError, raised by loopcore."""


class BrokenPipeError(Error, builtins.BrokenPipeError):  # noqa: A001
    """BrokenPipeError, raised by loopcore."""


class ConnectionAbortedError(Error, builtins.ConnectionAbortedError):  # noqa: A001
    """ConnectionAbortedError, raised by loopcore."""


class ConnectionRefusedError(Error, builtins.ConnectionRefusedError):  # noqa: A001
    """ConnectionRefusedError, raised by loopcore."""


class ConnectionResetError(Error, builtins.ConnectionResetError):  # noqa: A001
    """ConnectionResetError, raised by loopcore."""


class FileExistsError(Error, builtins.FileExistsError):  # noqa: A001
    """FileExistsError, raised by loopcore."""


class FileNotFoundError(Error, builtins.FileNotFoundError):  # noqa: A001
    """FileNotFoundError, raised by loopcore."""


class InterruptedError(Error, builtins.InterruptedError):  # noqa: A001
    """InterruptedError, raised by loopcore."""


class IsADirectoryError(Error, builtins.IsADirectoryError):  # noqa: A001
    """IsADirectoryError, raised by loopcore."""


class NotADirectoryError(Error, builtins.NotADirectoryError):  # noqa: A001
    """NotADirectoryError, raised by loopcore."""


class PermissionError(Error, builtins.PermissionError):  # noqa: A001
    """PermissionError, raised by loopcore."""


class ProcessLookupError(Error, builtins.ProcessLookupError):  # noqa: A001
    """ProcessLookupError, raised by loopcore."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001
    """TimeoutError, raised by loopcore."""


_MEMBERS: Dict[type, Type[builtins.OSError]] = {
    builtins.BlockingIOError: BlockingIOError,
    builtins.ChildProcessError: ChildProcessError,
    builtins.ConnectionError: ConnectionError,
    builtins.BrokenPipeError: BrokenPipeError,
    builtins.ConnectionAbortedError: ConnectionAbortedError,
    builtins.ConnectionRefusedError: ConnectionRefusedError,
    builtins.ConnectionResetError: ConnectionResetError,
    builtins.FileExistsError: FileExistsError,
    builtins.FileNotFoundError: FileNotFoundError,
    builtins.InterruptedError: InterruptedError,
    builtins.IsADirectoryError: IsADirectoryError,
    builtins.NotADirectoryError: NotADirectoryError,
    builtins.PermissionError: PermissionError,
    builtins.ProcessLookupError: ProcessLookupError,
    builtins.TimeoutError: TimeoutError,
}
__all__ += [cls.__name__ for cls in _MEMBERS.values()]


def error_from_errno(err: int, filename: PathArg = None, message: Optional[str] = None, *,
                     dm: bool = False) -> builtins.OSError:
    """The exception for ``err`` (a positive errno) about ``filename``.

    Builtin subclasses win (ENOENT gives loopcore's FileNotFoundError);
    EBUSY gives :class:`LoopBusyError` (:class:`DmBusyError` with ``dm``);
    anything else :class:`LoopError` (:class:`DmError`).  An int
    ``filename`` is a loop device number.
    """
    message = message or os.strerror(err)
    if isinstance(filename, int):
        filename = f"/dev/loop{filename}"
    builtin_class = type(builtins.OSError(err, message))
    member = _MEMBERS.get(builtin_class)
    if member is not None:
        return member(err, message, filename)
    if err == _errno.EBUSY:
        return (DmBusyError if dm else LoopBusyError)(err, message, filename)
    return (DmError if dm else LoopError)(err, message, filename)


def converted(exc: BaseException, *, dm: bool = False) -> BaseException:
    """``exc`` as a member of the family: itself if it is one already, the
    loopcore class for a builtin OSError, ValueError or TypeError (same
    arguments), else ``exc`` unchanged."""
    if isinstance(exc, Error):
        return exc
    if isinstance(exc, builtins.OSError) and exc.errno is not None:
        new = error_from_errno(exc.errno, exc.filename, exc.strerror, dm=dm)
        new.filename2 = exc.filename2
        return new
    if isinstance(exc, builtins.ValueError):
        return ValueError(*exc.args)
    if isinstance(exc, builtins.TypeError):
        return TypeError(*exc.args)
    return exc


def translate(func: F, *, dm: bool = False) -> F:
    """Decorator for public entry points: whatever escapes ``func`` as a
    builtin OSError, ValueError or TypeError leaves it as the matching
    member of the family (psutil's ``wrap_exceptions`` idea).  Free when
    nothing is raised.  ``translate(func, dm=True)`` is the device-mapper
    variant (:class:`DmError` where the loop one gives :class:`LoopError`)."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (builtins.OSError, builtins.ValueError, builtins.TypeError) as e:
            new = converted(e, dm=dm)
            if new is e:
                raise
            raise new.with_traceback(e.__traceback__) from None
    # functools.wraps' work, without importing functools (and collections)
    # into every process that lists devices
    for attribute in _WRAPPER_ASSIGNMENTS:
        try:
            setattr(wrapper, attribute, getattr(func, attribute))
        except AttributeError:
            pass
    wrapper.__dict__.update(func.__dict__)
    wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


#: what functools.wraps copies (functools.WRAPPER_ASSIGNMENTS)
_WRAPPER_ASSIGNMENTS = ("__module__", "__name__", "__qualname__", "__doc__", "__annotations__")
