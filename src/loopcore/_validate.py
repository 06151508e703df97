"""Argument checks shared by every part of loopcore: one way to say
"an int, not a bool, in this range", raising before any syscall.

Wrong type: :class:`loopcore.errors.TypeError`; right type, wrong value:
:class:`loopcore.errors.ValueError` (both also the builtins).
"""
from __future__ import annotations

from .errors import TypeError, ValueError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["INT_MAX", "S64_MAX", "U64_MAX", "check_int", "check_number", "check_fd",
           "check_timeout"]

INT_MAX = (1 << 31) - 1   # a C int: device numbers, fds
U64_MAX = (1 << 64) - 1
S64_MAX = (1 << 63) - 1   # offsets and sizes: the kernel's loff_t


def check_int(name: str, value: object, *, minimum: int = 0, maximum: int = S64_MAX) -> int:
    """``value`` if it is an int (not a bool) from ``minimum`` to ``maximum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must not be below {minimum}, not {value}")
    if value > maximum:
        raise ValueError(f"{name} is too large: {value} (at most {maximum})")
    return value


def check_number(number: object) -> int:
    """A loop device number: the N of /dev/loopN (the LOOP_CTL_* ioctls
    take a C int, so a larger one would be an OverflowError out of cffi)."""
    return check_int("loop device number", number, maximum=INT_MAX)


def check_fd(fd: object) -> int:
    """A file descriptor: a C int, >= 0."""
    return check_int("file descriptor", fd, maximum=INT_MAX)


def check_timeout(timeout: Optional[float], name: str = "timeout") -> None:
    """None, or a number of seconds >= 0 (not NaN, not a bool)."""
    if timeout is None:
        return
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"{name} must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if not timeout >= 0:  # also NaN
        raise ValueError(f"{name} must not be negative, not {timeout}")
