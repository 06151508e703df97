"""Target builders: one function per target type, returning the
:class:`~loopcore.dm.Target` line for a table.

Adding a target type means adding its builder here: check the arguments
(ValueError/TypeError before any ioctl, as the kernel would refuse them
only after a device was made), format the parameter string the way the
kernel's documentation for the target writes it, name devices with
:func:`device_arg`.  If the parameters hold a key, also give the type a
masking rule in :mod:`loopcore.dm.table` (keys section) so that
``table()`` prints zeros and loads go with SECURE_DATA.
"""
from __future__ import annotations

import os
from typing import Sequence, Tuple, Union

from .. import errors
from .table import Target

__all__ = ["DeviceArg", "device_arg", "error", "linear", "striped", "zero"]

# A device for a table line: a path, a devnum, or an object with .devnum
# (a LoopDevice).
DeviceArg = Union[str, "os.PathLike[str]", int, object]


def device_arg(device: DeviceArg) -> str:
    """A device for a table line: "major:minor" for a devnum (int) or an
    object with a ``devnum`` (a LoopDevice), else the path as given.

    The kernel splits parameters on whitespace and libdevmapper passes
    backslashes literally, so a path with whitespace cannot be named:
    ValueError (pass the device or its devnum instead).
    """
    if isinstance(device, bool):
        raise errors.TypeError("device must be a path, a devnum or an object with .devnum")
    if isinstance(device, int):
        return f"{os.major(device)}:{os.minor(device)}"
    devnum = getattr(device, "devnum", None)
    if isinstance(devnum, int):
        return f"{os.major(devnum)}:{os.minor(devnum)}"
    if isinstance(device, (str, os.PathLike)):
        path = os.fspath(device)
        if not isinstance(path, str) or not path or any(c.isspace() for c in path) \
                or "\0" in path:
            raise errors.ValueError(f"device path {path!r} is empty or contains whitespace; "
                                    "pass the device number instead")
        return path
    raise errors.TypeError(f"device must be a path, a devnum or an object with .devnum, "
                           f"not {type(device).__name__}")


def sectors(name: str, value: int) -> int:
    """``value`` if it is a non-negative int (a count of 512-byte sectors)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.ValueError(f"{name} must be a non-negative int (sectors), got {value!r}")
    return value


def linear(start: int, length: int, device: DeviceArg, offset: int = 0) -> Target:
    """``start length linear <device> <offset>`` (sectors)."""
    return Target(start, length, "linear", f"{device_arg(device)} {sectors('offset', offset)}")


def striped(start: int, length: int, chunk_sectors: int,
            devices: Sequence[Union[DeviceArg, Tuple[DeviceArg, int]]]) -> Target:
    """``start length striped <n> <chunk> <dev> <offset> ...``.

    ``devices`` are devices or (device, offset) pairs; ``chunk_sectors``
    must be a power of two of at least 8 (4 KiB), and ``length`` a multiple
    of ``chunk_sectors * len(devices)``'s chunk (the kernel checks that too).
    """
    sectors("length", length)
    sectors("chunk_sectors", chunk_sectors)
    if chunk_sectors < 8 or chunk_sectors & (chunk_sectors - 1):
        raise errors.ValueError(f"chunk_sectors must be a power of two >= 8, "
                                f"got {chunk_sectors}")
    if not devices:
        raise errors.ValueError("striped needs at least one device")
    if length % chunk_sectors:
        raise errors.ValueError(f"length {length} is not a multiple of the chunk "
                                f"({chunk_sectors})")
    if (length // chunk_sectors) % len(devices):
        raise errors.ValueError(f"length {length} does not divide into {len(devices)} "
                                f"stripes of whole chunks")
    parts = [str(len(devices)), str(chunk_sectors)]
    for entry in devices:
        dev, off = entry if isinstance(entry, tuple) else (entry, 0)
        parts += [device_arg(dev), str(sectors("offset", off))]
    return Target(start, length, "striped", " ".join(parts))


def zero(start: int, length: int) -> Target:
    """A target that reads zeros and discards writes."""
    return Target(start, length, "zero")


def error(start: int, length: int) -> Target:
    """A target that fails every I/O."""
    return Target(start, length, "error")
