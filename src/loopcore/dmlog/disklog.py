"""The kernel's disk-log format (dm-log.c's ``disk`` log), read and written.

Byte-compatible both ways with the kernel's own ``disk`` dirty log on the
same device, so a mirror can switch between ``disk`` and ``userspace ...
clustered-disk`` on one log device (LVM does that):

- a 16-byte header at byte 0: ``__le32 magic = 0x4D695272`` (the bytes
  ``72 52 69 4d``, "rRiM" on disk), ``__le32 version = 2``, ``__le64
  nr_regions``; bytes 16..1023 are unused (written as zeros here);
- the clean bitmap at byte 1024: bit ``r`` is bit ``r & 7`` of byte
  ``r >> 3`` (little-endian bit order), **1 means clean** (in sync); its
  size is the region count rounded up to 64 bits;
- the kernel reads and writes ``round_up(1024 + bitmap, logical block
  size)`` bytes in one I/O and refuses a smaller device.

Version 1 (host-endian, the same bytes on a little-endian host) is read as
2, as the kernel does; any other version, or a bad magic, is not a log.

:class:`LogStore` is where one log's bitmap lives: the log device of a
``clustered-disk`` log (``durable``: every write is followed by
``fdatasync``), or the state file that lets a ``clustered-core`` log
survive a restart of the server (not durable: a core log does not survive
a reboot anyway).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import stat
import struct
from typing import Iterable, NamedTuple, Optional, Tuple

from .. import _c, errors
from .._log import get_logger
from .bitmap import Bits, full
from .bitmap import nbytes as bitmap_bytes
from .ctr import LogArgs, resolve_device

__all__ = ["MAGIC", "VERSION", "BITMAP_OFFSET", "HEADER", "Header", "bitmap_bytes",
           "io_size", "encode_header", "parse_header", "encode_image", "decode_bitmap",
           "LogStore", "open_store", "remove_state_file", "state_path"]

_log = get_logger("dmlog")

MAGIC = 0x4D695272
VERSION = 2
BITMAP_OFFSET = 1024
HEADER = struct.Struct("<IIQ")


class Header(NamedTuple):
    """The decoded header; ``valid`` is False for a bad magic or version."""

    magic: int
    version: int
    nr_regions: int

    @property
    def valid(self) -> bool:
        """A log the kernel would accept (version 1 is read as 2)."""
        return self.magic == MAGIC and self.version in (1, VERSION)


def io_size(region_count: int, block_size: int = 512) -> int:
    """Bytes the kernel reads and writes: header area and bitmap, rounded
    up to the device's logical block size."""
    return -(-(BITMAP_OFFSET + bitmap_bytes(region_count)) // block_size) * block_size


def encode_header(nr_regions: int) -> bytes:
    """The 1024-byte header area for ``nr_regions`` (version 2)."""
    return HEADER.pack(MAGIC, VERSION, nr_regions).ljust(BITMAP_OFFSET, b"\0")


def parse_header(buf: bytes) -> Header:
    """The header at the start of ``buf`` (at least 16 bytes)."""
    return Header(*HEADER.unpack_from(buf, 0))


def encode_image(clean: Bits, region_count: int, start: int, end: int) -> bytes:
    """Bytes [start, end) of the on-disk log of the ``clean`` bitmap: the
    header area, then the bitmap."""
    out = bytearray()
    if start < BITMAP_OFFSET:
        out += encode_header(region_count)[start:min(end, BITMAP_OFFSET)]
    b0, b1 = max(start, BITMAP_OFFSET) - BITMAP_OFFSET, end - BITMAP_OFFSET
    if b1 > b0:
        out += bytes(clean[b0:b1]).ljust(b1 - b0, b"\0")
    return bytes(out)


def decode_bitmap(raw: bytes, covered: int, region_count: int, *,
                  uncovered_clean: bool) -> bytearray:
    """The clean bitmap of ``region_count`` regions from the on-disk log
    ``raw``, of which its first ``covered`` regions count; the regions the
    log did not cover (a new log, or the mirror grew) are set with
    ``uncovered_clean`` (nosync), cleared otherwise, as dm-log.c does."""
    nr = covered
    # one copy of the bitmap: a zeroed one, the log's bytes copied in view
    # to view (a bytearray's slice assignment would copy its source first)
    clean = bytearray(bitmap_bytes(region_count))
    with memoryview(raw) as src, memoryview(clean) as dst:
        part = src[BITMAP_OFFSET:BITMAP_OFFSET + (nr >> 3)]
        dst[:len(part)] = part
        part.release()
    if nr & 7:
        clean[nr >> 3] = raw[BITMAP_OFFSET + (nr >> 3)] & ((1 << (nr & 7)) - 1)
    if nr < region_count and uncovered_clean:
        every = full(region_count)
        i = nr >> 3
        clean[i] |= every[i] & (0xFF << (nr & 7)) & 0xFF  # the byte shared with the log
        with memoryview(every) as src, memoryview(clean) as dst:
            dst[i + 1:] = src[i + 1:]
    return clean


class LogStore:
    """An open log device (or state file) for one log of ``region_count``
    regions.  ``durable``: ``fdatasync`` after every write.  ``create``:
    make the file if missing (state files).  Raises OSError if it cannot be
    opened, ValueError if it is too small for the log (as the kernel's
    ``disk`` log refuses)."""

    def __init__(self, path: str, region_count: int, *, durable: bool = True,
                 create: bool = False) -> None:
        self.path = path
        self.region_count = region_count
        self.durable = durable
        self._page_buf: Optional[mmap.mmap] = None
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        self.fd = os.open(path, flags, 0o600)
        try:
            st = os.fstat(self.fd)
            self.is_block = stat.S_ISBLK(st.st_mode)
            if not self.is_block and not stat.S_ISREG(st.st_mode):
                raise errors.ValueError(f"{path} is neither a block device nor a file")
            self.devnum: Optional[int] = st.st_rdev if self.is_block else None
            self.block_size = self._sector_size() if self.is_block else 512
            self.size = io_size(region_count, self.block_size)
            #: writes go in pieces of this many bytes (aligned for O_DIRECT)
            self.page = max(4096, self.block_size)
            if self.is_block:
                have = self._device_size()
                if have < self.size:
                    raise errors.ValueError(f"log device {path} too small: {have} bytes, "
                                            f"the log needs {self.size}")
                # O_DIRECT on the device, as the kernel's disk log does its
                # I/O below the page cache: the mirror holds the device
                # open, so its page cache would outlive us and a later
                # buffered read could return our own stale copy instead of
                # what the kernel's ``disk`` log wrote meanwhile.
                fl = fcntl.fcntl(self.fd, fcntl.F_GETFL)
                fcntl.fcntl(self.fd, fcntl.F_SETFL, fl | os.O_DIRECT)
        except BaseException:
            os.close(self.fd)
            raise

    def _sector_size(self) -> int:
        out = _c.ffi.new("uint32_t *")
        _check(_c.lib.lc_get_sector_size(self.fd, out), self.path)
        return int(out[0])

    def _device_size(self) -> int:
        out = _c.ffi.new("uint64_t *")
        _check(_c.lib.lc_get_size64(self.fd, out), self.path)
        return int(out[0])

    def read(self) -> bytes:
        """The whole log area (header and bitmap); short for a short file
        (the rest reads as zeros: no valid header)."""
        if self.is_block:
            # O_DIRECT wants an aligned buffer: an anonymous mmap is
            buf = mmap.mmap(-1, self.size)
            try:
                n = os.preadv(self.fd, [buf], 0)
                return bytes(buf[:n]).ljust(self.size, b"\0")
            finally:
                buf.close()
        # read in place into a zeroed buffer (no pieces joined, no padding copy)
        out = bytearray(self.size)
        with memoryview(out) as view:
            got = 0
            while got < self.size:
                n = os.preadv(self.fd, [view[got:]], got)
                if n <= 0:
                    break
                got += n
        return bytes(out)

    def write(self, pieces: Iterable[Tuple[int, bytes]]) -> None:
        """Write ``(offset, bytes)`` pieces, then ``fdatasync`` if durable:
        nothing is answered to the kernel before the bits are on stable
        storage."""
        for offset, data in pieces:
            if self.is_block:
                self._write_direct(offset, data)
                continue
            view = memoryview(data)
            while view:
                n = os.pwrite(self.fd, view, offset)
                if n <= 0:
                    raise OSError(errno.EIO, "short write", self.path)
                view, offset = view[n:], offset + n
        if self.durable:
            os.fdatasync(self.fd)

    def _write_direct(self, offset: int, data: bytes) -> None:
        # O_DIRECT needs an aligned buffer: an anonymous mmap is.  One page
        # is kept for the common write (the page of a few regions); a
        # larger write (resume, suspend) gets its own for the moment.
        size = len(data)
        if size <= self.page:
            if self._page_buf is None:
                self._page_buf = mmap.mmap(-1, self.page)
            buf = self._page_buf
        else:
            buf = mmap.mmap(-1, size)
        view = memoryview(buf)
        part = view[:size]
        try:
            part[:] = data
            if os.pwritev(self.fd, [part], offset) != size:
                raise OSError(errno.EIO, "short write", self.path)
        finally:
            part.release()
            view.release()
            if buf is not self._page_buf:
                buf.close()

    def close(self) -> None:
        """Close the device (idempotent)."""
        if self._page_buf is not None:
            self._page_buf.close()
            self._page_buf = None
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _check(rc: int, path: str) -> None:
    """A shim call's ``-errno`` as the OSError the server answers with."""
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc), path)


def open_store(args: LogArgs, key: Tuple[bytes, int], state_dir: Optional[str],
               reconnect: bool) -> Optional[LogStore]:
    """Where the log made by a CTR keeps its bitmap: its log device, else a
    state file in ``state_dir`` named after ``key`` (uuid, luid), else
    nowhere (None).  The log device's errors are raised (the CTR fails); a
    state file that cannot be made is only logged (a restart of the server
    then resyncs the log fully)."""
    if args.device is not None:
        return LogStore(resolve_device(args.device), args.region_count, durable=True)
    if state_dir is None:
        return None
    path = state_path(state_dir, key, "core")
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        if not reconnect:
            # a new table: whatever a luid of the same value left is stale
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return LogStore(path, args.region_count, durable=False, create=True)
    except (OSError, ValueError) as exc:
        _log.warning("no state file for core log %s/%#x (%s): a restart of the server "
                     "will resync it fully", key[0].decode("ascii", "replace"), key[1], exc)
        return None


def state_path(state_dir: str, key: Tuple[bytes, int], kind: str) -> str:
    """The file of kind ``kind`` of the log ``key`` (uuid, luid) in
    ``state_dir``: ``core`` (a core log's bitmap) or ``synced`` (the
    marker of :meth:`~.log.DirtyLog.resume`)."""
    digest = hashlib.sha256(key[0]).hexdigest()[:24]
    return os.path.join(state_dir, f"{kind}-{digest}-{key[1]:016x}.log")


def remove_state_file(store: LogStore) -> None:
    """Remove a core log's state file (its table is gone)."""
    try:
        os.unlink(store.path)
    except OSError:
        pass
