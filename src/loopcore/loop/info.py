"""What a loop device is: the one record that describes it
(:class:`LoopInfo`, used by the scan, the API and the CLI), its flags'
bits and the constants of the kernel's loop driver.

:class:`Flags` (the enum) lives in :mod:`.flags` and is imported from
there on first use: ``loopcore.loop.info.Flags`` works as it always did,
and a process that only lists devices never imports :mod:`enum`.
"""
from __future__ import annotations

import os

from .. import _c
from ..errors import ValueError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, NamedTuple, Optional

    from .flags import Flags
else:
    from .._namedtuple import NamedTuple

__all__ = ["Flags", "FLAG_MASK", "READ_ONLY", "AUTOCLEAR", "PARTSCAN", "DIRECT_IO", "LoopInfo",
           "device_path", "partition_path", "LOOP_MAJOR", "LO_NAME_SIZE", "PAGE_SIZE",
           "MAX_BLOCK_SIZE", "check_block_size", "block_size_refused"]

LOOP_MAJOR = 7
LO_NAME_SIZE = 64  # lo_file_name: 63 bytes and a NUL
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# The largest logical block size any kernel takes (BLK_MAX_BLOCK_SIZE, 64
# KiB since Linux 6.15; the page size before).  Sizes above the page size
# are left to the running kernel to accept or refuse.
MAX_BLOCK_SIZE = 65536


def check_block_size(block_size: int, *, allow_zero: bool) -> None:
    """A logical block size: 0 (the kernel's default) where allowed, else a
    power of two from 512 to 64 KiB (the running kernel may take less)."""
    from .._validate import check_int  # here: a listing checks no argument

    check_int("block_size", block_size, maximum=MAX_BLOCK_SIZE)
    if block_size == 0 and allow_zero:
        return
    if block_size < 512 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two from 512 to {MAX_BLOCK_SIZE}, "
                         f"not {block_size}")


def block_size_refused(block_size: int, error: OSError) -> ValueError:
    """The ValueError for a block size the kernel refused (EINVAL): kernels
    before 6.15 take no block size above the page size."""
    return ValueError(f"block_size {block_size}: this kernel refuses it ({error.strerror}); "
                      f"every kernel takes powers of two from 512 to the page size, {PAGE_SIZE}")


#: the ``lo_flags`` bits as ints (:class:`Flags`' values, from the shim,
#: whose scan flags are these very bits): what code that tests a bit uses
READ_ONLY = _c.lib.LC_SCAN_RO
AUTOCLEAR = _c.lib.LC_SCAN_AUTOCLEAR
PARTSCAN = _c.lib.LC_SCAN_PARTSCAN
DIRECT_IO = _c.lib.LC_SCAN_DIO
#: every Flags bit: what of ``lo_flags`` a LoopInfo keeps
FLAG_MASK = READ_ONLY | AUTOCLEAR | PARTSCAN | DIRECT_IO


def __getattr__(name: str) -> object:
    """``Flags``, imported on first use (PEP 562)."""
    if name == "Flags":
        from .flags import Flags

        globals()["Flags"] = Flags  # found at once next time
        return Flags
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def device_path(number: int) -> str:
    """``/dev/loopN`` for device number N."""
    return f"/dev/loop{number}"


def partition_path(number: int, pno: int) -> str:
    """``/dev/loopNpM`` for partition M of device N."""
    return f"/dev/loop{number}p{pno}"


# Bits of LoopInfo.scan_flags (csrc/lc_scan.h's LC_SCAN_*): how much of the
# record the kernel could tell.
_BOUND = _c.lib.LC_SCAN_BOUND
_HAS_NODE = _c.lib.LC_SCAN_HAS_NODE
_HAS_STATUS = _c.lib.LC_SCAN_HAS_STATUS
_NAME_PARTIAL = _c.lib.LC_SCAN_NAME_PARTIAL
_FROM_SYSFS = _c.lib.LC_SCAN_FROM_SYSFS
#: the LC_SCAN_* bits LoopInfo.scan_flags keeps: what the record rests on
SCAN_DETAIL_BITS = _BOUND | _HAS_NODE | _HAS_STATUS | _NAME_PARTIAL | _FROM_SYSFS
#: scan_flags of a record read from an open, bound device
FROM_DEVICE = _BOUND | _HAS_NODE | _HAS_STATUS


class LoopInfo(NamedTuple):
    """A loop device's state as the kernel reports it: one record for
    :meth:`LoopDevice.info`, :func:`list_devices`, :func:`find` and the CLI.

    ``backing_file`` is the full path from sysfs (``None`` when unbound;
    ending in " (deleted)" once the file is unlinked; the kernel's 63-byte
    ``lo_file_name`` for a path longer than sysfs shows, see
    ``backing_partial``); ``size_bytes`` is the device's size; ``diskseq``
    is ``None`` on kernels before 5.15.  ``backing_devnum`` and
    ``backing_inode`` are 0 where ``/dev/loopN`` could not be asked
    (``has_status``).  ``flags`` is a :class:`Flags`; the tuple itself may
    hold the bits as a plain int (the scan's records do: no enum is made
    until ``flags`` is read), which compares, hashes and pickles the same.
    """

    number: int
    path: str
    backing_file: Optional[str]
    backing_devnum: int
    backing_inode: int
    offset: int
    size_limit: int
    flags: Flags
    block_size: int
    size_bytes: int
    diskseq: Optional[int]
    major: int = LOOP_MAJOR
    minor: int = 0
    #: LC_SCAN_* bits (SCAN_DETAIL_BITS): bound, has a /dev node, answered
    #: GET_STATUS64, partial name, read from the sysfs files
    scan_flags: int = FROM_DEVICE
    #: why the node could not be asked (an errno), 0 if it was
    status_errno: int = 0

    @property
    def read_only(self) -> bool:
        return bool(_flag_bits(self) & READ_ONLY)

    @property
    def autoclear(self) -> bool:
        return bool(_flag_bits(self) & AUTOCLEAR)

    @property
    def partscan(self) -> bool:
        return bool(_flag_bits(self) & PARTSCAN)

    @property
    def direct_io(self) -> bool:
        return bool(_flag_bits(self) & DIRECT_IO)

    @property
    def bound(self) -> bool:
        return bool(self.scan_flags & _BOUND)

    @property
    def has_node(self) -> bool:
        """``/dev/loopN`` exists (and was opened)."""
        return bool(self.scan_flags & _HAS_NODE)

    @property
    def has_status(self) -> bool:
        """LOOP_GET_STATUS64 answered: backing device and inode are known."""
        return bool(self.scan_flags & _HAS_STATUS)

    @property
    def backing_partial(self) -> bool:
        """Bound, but sysfs could not show the backing path (longer than a
        page): ``backing_file`` is the kernel's ``lo_file_name``, ending in
        '*' where it may have been cut, or "" without a node."""
        return bool(self.scan_flags & _NAME_PARTIAL)

    @property
    def from_sysfs(self) -> bool:
        """The attributes were read from the sysfs files (no usable node)."""
        return bool(self.scan_flags & _FROM_SYSFS)

    @property
    def size_sectors(self) -> int:
        return self.size_bytes // 512

    @property
    def devnum(self) -> int:
        return os.makedev(self.major, self.minor)

    def __repr__(self) -> str:
        # as the tuple's own, with ``flags`` the Flags it reads as
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def _asdict(self) -> Dict[str, Any]:  # type: ignore[misc]  # the same, flags a Flags
        return {name: getattr(self, name) for name in self._fields}


_FLAGS_FIELD = LoopInfo._fields.index("flags")


def _flag_bits(info: LoopInfo) -> int:
    """A LoopInfo's flags as the int the tuple holds (no enum made)."""
    bits: int = info[_FLAGS_FIELD]  # type: ignore[assignment]  # the tuple holds an int
    return bits


def _flags(info: LoopInfo) -> Flags:
    from .flags import Flags  # enum: only when someone reads ``flags``

    return Flags(_flag_bits(info))


# The field's own accessor gives what the tuple holds; this one the Flags.
LoopInfo.flags = property(_flags, doc="lo_flags: a :class:`Flags`")  # type: ignore[assignment]
