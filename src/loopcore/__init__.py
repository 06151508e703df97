"""loopcore: Linux loop devices (and device-mapper) from Python, with a small C core.

>>> import loopcore
>>> with loopcore.attach("disk.img", read_only=True) as dev:
...     print(dev.path, dev.info().size_bytes)

Every exception it raises is a :class:`loopcore.Error` (and the builtin
you would expect: ``FileNotFoundError``, ``ValueError`` ...).
"""
from ._version import __version__
from .errors import (
    DeviceBusyError,
    DiskseqMismatchError,
    DmBusyError,
    DmError,
    DmParseError,
    Error,
    LoopBusyError,
    LoopError,
    LoopOverlapError,
    NoFreeDeviceError,
    NotALoopDeviceError,
    PartitionTableError,
)
from .loop import (
    DeviceLock,
    Flags,
    LoopControl,
    LoopDevice,
    LoopInfo,
    Partition,
    PartitionTable,
    attach,
    attach_many,
    detach,
    detach_many,
    find,
    kernel_supports_configure,
    list_devices,
    open,
)

__all__ = [
    "__version__",
    "DeviceBusyError",
    "DeviceLock",
    "DiskseqMismatchError",
    "DmBusyError",
    "DmError",
    "DmParseError",
    "Error",
    "Flags",
    "LoopBusyError",
    "LoopControl",
    "LoopDevice",
    "LoopError",
    "LoopInfo",
    "LoopOverlapError",
    "NoFreeDeviceError",
    "NotALoopDeviceError",
    "Partition",
    "PartitionTable",
    "PartitionTableError",
    "attach",
    "attach_many",
    "detach",
    "detach_many",
    "find",
    "kernel_supports_configure",
    "list_devices",
    "open",
]
