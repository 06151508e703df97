"""loopcore: Linux loop devices (and device-mapper) from Python, with a small C core.

>>> import loopcore
>>> with loopcore.attach("disk.img", read_only=True) as dev:
...     print(dev.path, dev.info().size_bytes)
"""
from ._version import __version__
from .discovery import find, list_devices
from .errors import (
    DeviceBusyError,
    LoopError,
    NoFreeDeviceError,
    NotALoopDeviceError,
)
from .loop import (
    Flags,
    LoopControl,
    LoopDevice,
    LoopInfo,
    attach,
    detach,
    kernel_supports_configure,
    open,
)

__all__ = [
    "__version__",
    "DeviceBusyError",
    "Flags",
    "LoopControl",
    "LoopDevice",
    "LoopError",
    "LoopInfo",
    "NoFreeDeviceError",
    "NotALoopDeviceError",
    "attach",
    "detach",
    "find",
    "kernel_supports_configure",
    "list_devices",
    "open",
]
