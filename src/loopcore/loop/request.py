"""One attach request: what :func:`~loopcore.loop.attach` or
:func:`~loopcore.loop.attach_many` was asked for, checked once, before any
syscall, and the C ``struct lc_attach_req`` it fills for ``lc_attach``
(the process has one, packed in one go for each call).

The settings hold for every backing file of the call; what differs per
file (its fd, its name, direct I/O where its file system refuses it) is
:func:`check_backing`'s and the bind's.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Dict, Optional, Union

from .. import _c, _retry
from .._log import get_logger
from .._validate import S64_MAX, check_int, check_number, check_timeout
from ..errors import PermissionError, TypeError, ValueError
from . import _calls
from .backing import BackingFile
from .control import control
from .info import Flags, check_block_size
from .locks import LOCK_EXCLUSIVE, LOCK_SHARED

if TYPE_CHECKING:
    from .._native import CData

# Public: LockArg (attach()'s lock= type).  AttachRequest and check_backing
# are the attach paths' own.
__all__ = ["LockArg"]

LockArg = Union[bool, str, None]
"""attach(lock=...): False/None (no lock), True or "exclusive", "shared"."""

log = get_logger("loop")

# Plain ints on the hot path: IntFlag arithmetic costs microseconds.
READ_ONLY, AUTOCLEAR, PARTSCAN, DIRECT_IO = (int(f) for f in Flags)
READ_SETTINGS = _c.lib.LC_ATTACH_READ_SETTINGS
_LOCK_DEVICE = _c.lib.LC_ATTACH_LOCK_DEVICE


# The process's one struct lc_attach_req, filled for each lc_attach or
# lc_attach_many call with control.lock held -- every bind holds it -- so
# no two threads fill it at once, and no call allocates one.  Its packing
# is derived from the cdef; fill() passes the fields in this order.
_C_REQUEST = _c.ffi.new("struct lc_attach_req *")
_C_REQUEST_BYTES = _c.ffi.buffer(_C_REQUEST)
_REQ_VIEW = _c.struct_view("struct lc_attach_req")
_REQ_FIELDS = ("backing_fd", "number", "options", "flags", "offset", "size_limit",
               "block_size", "first_attempt", "deadline_ns", "max_attempts", "sleep_base_us",
               "sleep_span_us", "file_name")
if _REQ_VIEW.names != _REQ_FIELDS:
    raise ImportError(f"struct lc_attach_req is {_REQ_VIEW.names}: AttachRequest.fill "
                      f"packs {_REQ_FIELDS}")
_pack_request = _REQ_VIEW.struct.pack_into


class AttachRequest:
    """An attach's settings, checked once: ``read_only``, ``flags``
    (lo_flags), ``offset`` and ``size_limit`` (bytes), ``block_size`` (0:
    the kernel's), ``number`` (-1: a free device), ``lock_mode`` (None,
    LOCK_EXCLUSIVE or LOCK_SHARED), ``legacy`` (None: the kernel decides),
    ``deadline_ns`` (time.monotonic_ns(), 0: none); ``options``,
    lc_attach's option bits that follow from them (and
    LC_ATTACH_CONTROL_HELD while a caller holds the control lock);
    ``created``, set once LOOP_CTL_ADD made the chosen device for this
    request."""

    __slots__ = ("read_only", "flags", "offset", "size_limit", "block_size", "number",
                 "lock_mode", "legacy", "deadline_ns", "options", "created")

    def __init__(self, read_only: bool = False, autoclear: bool = False,
                 partscan: bool = False, direct_io: bool = True, block_size: int = 0,
                 offset: int = 0, size_limit: int = 0, number: Optional[int] = None,
                 lock: LockArg = False, legacy: Optional[bool] = None,
                 timeout: Optional[float] = None) -> None:
        # Not a second check but a shortcut past check_int: the common
        # arguments (plain ints in range, no block size) pass one cheap
        # test; anything else gets the checks and their messages.
        if not (type(offset) is int and type(size_limit) is int and type(block_size) is int
                and 0 <= offset <= S64_MAX and 0 <= size_limit <= S64_MAX
                and not block_size):
            check_int("offset", offset)
            check_int("size_limit", size_limit)
            check_block_size(block_size, allow_zero=True)
        if timeout is not None:
            check_timeout(timeout)
        self.read_only = read_only
        self.flags = ((READ_ONLY if read_only else 0) | (AUTOCLEAR if autoclear else 0)
                      | (PARTSCAN if partscan else 0) | (DIRECT_IO if direct_io else 0))
        self.offset = offset
        self.size_limit = size_limit
        self.block_size = block_size
        self.number = -1 if number is None else check_number(number)
        self.lock_mode = None if lock is False or lock is None else _lock_mode(lock)
        self.legacy = legacy
        self.deadline_ns = 0 if timeout is None else _retry.deadline_after(timeout)
        # What lc_attach reads back: the settings only when an option's
        # outcome has to be checked (PARTSCAN and a block size, which Linux
        # 5.8 could ignore; the size with an offset or a size limit, as
        # util-linux).
        options = READ_SETTINGS if partscan or block_size or offset or size_limit else 0
        # partscan: the device lock from before the bind until the
        # partitions' nodes are checked (check_bound drops it unless asked)
        self.options = (options | _LOCK_DEVICE) if self.lock_mode or partscan else options
        self.created = False

    def use_legacy(self) -> bool:
        """Whether to bind with LOOP_SET_FD (pre-5.8): as asked, else when
        the environment forces it or the kernel lacks LOOP_CONFIGURE."""
        if self.legacy is not None:
            return bool(self.legacy)
        return control.legacy_default()

    def fill(self, backing_fd: int, options: int, flags: int, file_name: bytes,
             first_attempt: int = 0) -> CData:
        """The process's ``struct lc_attach_req``, filled for one C call
        with this request's settings, the call's own (lc_attach_many: a
        backing fd of -1 and no name; lc_attach of a path: a backing fd of
        -1) and the retry policy as ``_calls`` has it now (tests shrink
        it).  Only with control.lock held."""
        _pack_request(_C_REQUEST_BYTES, 0, backing_fd, self.number, options, flags, self.offset,
                      self.size_limit, self.block_size, first_attempt, self.deadline_ns,
                      _calls.ATTACH_ATTEMPTS, _calls.ATTACH_SLEEP_BASE_US,
                      _calls.ATTACH_SLEEP_SPAN_US, file_name)
        return _C_REQUEST


# attach()'s requests with every setting but read_only, autoclear and
# direct_io at its default, one per lo_flags, made once and shared: only
# a chosen number, reuse=True and make_nodes change a request, and such an
# attach makes its own.
_PLAIN: Dict[int, AttachRequest] = {}


def plain_request(read_only: bool, autoclear: bool, direct_io: bool) -> AttachRequest:
    """The shared request of ``attach(path, read_only=, autoclear=,
    direct_io=)`` with nothing else asked for (the caller checks that);
    never to be changed."""
    flags = ((READ_ONLY if read_only else 0) | (AUTOCLEAR if autoclear else 0)
             | (DIRECT_IO if direct_io else 0))
    request = _PLAIN.get(flags)
    if request is None:
        request = _PLAIN[flags] = AttachRequest(bool(read_only), bool(autoclear), False,
                                                bool(direct_io))
    return request


def offset_past_end(name: str, offset: int, size: int) -> ValueError:
    """An offset at or past the end of the backing file (lc_attach checks
    one it opened itself: LC_STEP_OFFSET)."""
    return ValueError(f"{name}: offset {offset} is at or past the end ({size} bytes)")


def _lock_mode(lock: LockArg) -> Optional[str]:
    if lock is None or lock is False:
        return None
    if lock is True or lock == LOCK_EXCLUSIVE:
        return LOCK_EXCLUSIVE
    if lock == LOCK_SHARED:
        return LOCK_SHARED
    if isinstance(lock, str):
        raise ValueError(f"lock must be True, False, \"exclusive\" or \"shared\", not {lock!r}")
    raise TypeError(f"lock must be a bool or \"exclusive\"/\"shared\", not "
                    f"{type(lock).__name__}")


def check_backing(request: AttachRequest, bf: BackingFile) -> int:
    """The checks of one backing file against the request, before its
    bind; returns the lo_flags to bind it with (buffered where its file
    system claims direct I/O it cannot do)."""
    offset = request.offset
    if offset and offset >= bf.size:
        raise offset_past_end(bf.name, offset, bf.size)
    if not request.read_only and not bf.owned and not bf.writable():
        raise PermissionError(errno.EACCES,
                              "backing is open read-only; pass read_only=True", bf.name)
    flags = request.flags
    if flags & DIRECT_IO and bf.direct_io_refused:
        # overlayfs over a file system without O_DIRECT: the kernel would
        # say yes, then fail every I/O
        log.debug("%s: direct I/O refused below overlayfs: buffered", bf.name)
        flags &= ~DIRECT_IO
    return flags
