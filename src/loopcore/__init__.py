"""loopcore: Linux loop devices (and device-mapper) from Python, with a small C core.

>>> import loopcore
>>> with loopcore.attach("disk.img", read_only=True) as dev:
...     print(dev.path, dev.info().size_bytes)

Every exception it raises is a :class:`loopcore.Error` (and the builtin
you would expect: ``FileNotFoundError``, ``ValueError`` ...).

``import loopcore`` imports nothing but this file: each name below is
imported from its module on first use (:mod:`._lazy`).
"""
from ._lazy import export
from ._log import enable_if_requested
from ._version import __version__

enable_if_requested()

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .errors import DeviceBusyError as DeviceBusyError
    from .errors import DiskseqMismatchError as DiskseqMismatchError
    from .errors import DmBusyError as DmBusyError
    from .errors import DmError as DmError
    from .errors import DmParseError as DmParseError
    from .errors import Error as Error
    from .errors import LoopBusyError as LoopBusyError
    from .errors import LoopError as LoopError
    from .errors import LoopOverlapError as LoopOverlapError
    from .errors import NoFreeDeviceError as NoFreeDeviceError
    from .errors import NotALoopDeviceError as NotALoopDeviceError
    from .errors import PartitionTableError as PartitionTableError
    from .loop import DeviceLock as DeviceLock
    from .loop import Flags as Flags
    from .loop import LoopControl as LoopControl
    from .loop import LoopDevice as LoopDevice
    from .loop import LoopInfo as LoopInfo
    from .loop import Partition as Partition
    from .loop import PartitionTable as PartitionTable
    from .loop import attach as attach
    from .loop import attach_many as attach_many
    from .loop import detach as detach
    from .loop import detach_many as detach_many
    from .loop import find as find
    from .loop import kernel_supports_configure as kernel_supports_configure
    from .loop import list_devices as list_devices
    from .loop import open as open

__all__ = ["__version__"] + export(__name__, {
    ".errors": (
        "DeviceBusyError", "DiskseqMismatchError", "DmBusyError", "DmError", "DmParseError",
        "Error", "LoopBusyError", "LoopError", "LoopOverlapError", "NoFreeDeviceError",
        "NotALoopDeviceError", "PartitionTableError",
    ),
    ".loop": (
        "DeviceLock", "Flags", "LoopControl", "LoopDevice", "LoopInfo", "Partition",
        "PartitionTable", "attach", "attach_many", "detach", "detach_many", "find",
        "kernel_supports_configure", "list_devices", "open",
    ),
})
