"""One dirty log: its arguments, its bitmaps, and what each request does.

The model is the kernel's own single-node ``core``/``disk`` log
(dm-log.c), answered over dm-log-userspace:

- two bitmaps of one bit per region: *clean* (nothing written since the
  legs were last known equal; what the disk log stores, 1 = clean) and
  *sync* (the legs hold the same data; what IN_SYNC answers).  A
  ``bytearray`` each, 64-bit padded like the on-disk bitmap: 2^20 regions
  cost 256 KiB;
- MARK (or, with ``integrated_flush``, the marks a FLUSH carries) clears
  clean bits, and the new dirty state is written and ``fdatasync``'ed before
  the request is answered: the kernel writes to the region only after that
  answer, so a crash never leaves a written region marked clean;
- CLEAR sets clean bits in memory only (and only for regions in sync, so an
  out-of-sync region stays dirty on disk and is resynced after a restart);
  they are written at the next FLUSH, after the legs' caches were flushed
  (the order the kernel's disk log keeps), and never held back until
  suspend: after a full sync the kernel stops asking for resync work, so a
  restarted server that read stale dirty bits would answer IN_SYNC 0 and
  the kernel would then write those regions to one leg only;
- GET_RESYNC_WORK hands out the next out-of-sync region and the same one
  again until SET_REGION_SYNC arrives (the kernel resends a request with a
  new seq after 15 s, so every handler is idempotent);
- RESUME (re)reads the disk log as the kernel's ``disk_resume`` does, and
  writes it back; POSTSUSPEND writes everything.

A ``clustered-core`` log keeps the same bitmap in a state file (not
``fdatasync``'ed) when the server has a state directory: a core log lives
as long as the mirror, and the file lets a restarted server pick it up
instead of starting from nothing.
"""
from __future__ import annotations

import os
import re
from typing import Iterable, List, NamedTuple, Optional, Set, Tuple

from .. import errors
from .._log import get_logger
from . import legs as _legs
from .disklog import BITMAP_OFFSET, LogStore, bitmap_bytes, encode_header, parse_header

__all__ = ["LogArgs", "parse_ctr", "DirtyLog", "LogView", "MAX_REGIONS", "RequestFailed"]

_log = get_logger("dmlog")

#: Largest region count accepted (256 MiB per bitmap; a petabyte mirror of
#: 512 KiB regions).  The CTR string comes from the kernel, but a garbage
#: one must not make the server allocate without bound.
MAX_REGIONS = 1 << 31

_NOT_FF = re.compile(rb"[^\xff]")
_SYNC_WORDS = ("sync", "nosync")


class RequestFailed(Exception):
    """A request to answer with ``-errno`` (and a log line: ``str()``)."""

    def __init__(self, errno_value: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_value


class LogArgs(NamedTuple):
    """A parsed CTR string: ``<len> clustered-core <region_size> [sync|nosync]
    [block_on_error]`` or ``<len> clustered-disk <dev> <region_size> ...``."""

    length: int           # target length in sectors (the kernel prepends it)
    kind: str             # "clustered-core" or "clustered-disk"
    device: Optional[str]  # the log device as written in the table
    region_size: int      # sectors
    sync: str             # "default", "sync" or "nosync"
    block_on_error: bool  # a pre-2.6.22 leftover, accepted and ignored
    text: str             # the string without its NUL: what a duplicate CTR repeats

    @property
    def region_count(self) -> int:
        """``ceil(len / region_size)``, the kernel's formula."""
        return -(-self.length // self.region_size)


def parse_ctr(data: bytes) -> LogArgs:
    """The CTR payload, checked (errors.ValueError saying what is wrong).

    The first CTR of a table load has no terminating NUL; the one the kernel
    sends when it reconnects to a restarted server has one: both parse the
    same.  The region size must be a power of two from 2 to the target
    length: dm-region-hash uses it as a shift and the userspace log does not
    check it itself.
    """
    raw = data[:-1] if data.endswith(b"\0") else data
    if b"\0" in raw:
        raise errors.ValueError("CTR string contains NUL")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise errors.ValueError("CTR string is not ASCII") from None
    words = text.split()
    if len(words) < 3:
        raise errors.ValueError(f"CTR needs '<len> <type> <args>', got {text!r}")
    try:
        length = int(words[0], 10)
    except ValueError:
        raise errors.ValueError(f"CTR length {words[0]!r} is not a number") from None
    kind = words[1]
    if kind == "clustered-core":
        device, rest = None, words[2:]
    elif kind == "clustered-disk":
        if len(words) < 4:
            raise errors.ValueError(f"clustered-disk needs <dev> <region_size>: {text!r}")
        device, rest = words[2], words[3:]
    else:
        raise errors.ValueError(f"unknown log type {kind!r} (clustered-core or clustered-disk)")
    try:
        region_size = int(rest[0], 10)
    except ValueError:
        raise errors.ValueError(f"region size {rest[0]!r} is not a number") from None
    sync, block_on_error = "default", False
    for word in rest[1:]:
        if word in _SYNC_WORDS and sync == "default":
            sync = word
        elif word == "block_on_error" and not block_on_error:
            block_on_error = True
        else:
            raise errors.ValueError(f"unexpected log argument {word!r} in {text!r}")
    if length < 1:
        raise errors.ValueError(f"target length {length} must be positive")
    if region_size < 2 or region_size & (region_size - 1) or region_size > length:
        raise errors.ValueError(f"region size {region_size} must be a power of two "
                                f"from 2 to the target length {length}")
    args = LogArgs(length, kind, device, region_size, sync, block_on_error, " ".join(words))
    if args.region_count > MAX_REGIONS:
        raise errors.ValueError(f"{args.region_count} regions (at most {MAX_REGIONS})")
    return args


def resolve_device(device: str) -> str:
    """A path to open for the table's log device: a path as is, ``MAJ:MIN``
    through sysfs's DEVNAME (``/dev/loop2``) or ``/dev/block/MAJ:MIN``."""
    m = re.fullmatch(r"(\d+):(\d+)", device)
    if not m:
        return device
    try:
        with open(f"/sys/dev/block/{m[1]}:{m[2]}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    path = "/dev/" + line.strip().split("=", 1)[1]
                    if os.path.exists(path):
                        return path
    except OSError:
        pass
    return f"/dev/block/{m[1]}:{m[2]}"


# --- bitsets: bytearrays, bit r = bit (r & 7) of byte (r >> 3) ------------------------

def _test(bits: bytearray, r: int) -> bool:
    return bool(bits[r >> 3] >> (r & 7) & 1)


def _set(bits: bytearray, r: int) -> None:
    bits[r >> 3] |= 1 << (r & 7)


def _clear(bits: bytearray, r: int) -> None:
    bits[r >> 3] &= ~(1 << (r & 7)) & 0xFF


def _next_zero(bits: bytearray, start: int, limit: int) -> int:
    """The first zero bit at or after ``start``; ``limit`` if none before it."""
    i = start >> 3
    if i >= len(bits):
        return limit
    byte = bits[i] | ((1 << (start & 7)) - 1)
    if byte == 0xFF:
        m = _NOT_FF.search(bits, i + 1)  # the scan runs in C
        if m is None:
            return limit
        i = m.start()
        byte = bits[i]
    return min(i * 8 + ((~byte & (byte + 1)).bit_length() - 1), limit)


_POPCOUNT = bytes(bin(i).count("1") for i in range(256))


def _popcount(bits: bytearray) -> int:
    # a byte-wise table: no transient copy larger than the bitmap itself
    return sum(bits.translate(_POPCOUNT))


def _full(region_count: int) -> bytearray:
    """A bitmap with every region's bit set and the padding clear."""
    bits = bytearray(b"\xff") * (region_count >> 3)
    if region_count & 7:
        bits.append((1 << (region_count & 7)) - 1)
    return bits.ljust(bitmap_bytes(region_count), b"\0")


class LogView(NamedTuple):
    """What :attr:`DirtyLogServer.logs` shows of one log (read-only)."""

    uuid: str
    luid: int
    kind: str
    region_size: int
    region_count: int
    sync_count: int
    log_device: Optional[str]
    state: str


class DirtyLog:
    """The state of one log, keyed by the server on (uuid, luid).

    ``store`` is the log device (clustered-disk) or the state file
    (clustered-core), or None.  ``reconnected``: made by the CTR the kernel
    sends to a restarted server, so the first RESUME trusts the persisted
    bits whatever ``sync``/``nosync`` say (they apply to a table load, and
    this is the same table, not a new one).
    """

    def __init__(self, uuid: bytes, luid: int, args: LogArgs, *, store: Optional[LogStore],
                 reconnected: bool = False) -> None:
        self.uuid = uuid
        self.luid = luid
        self.args = args
        self.store = store
        self.reconnected = reconnected
        self.region_count = args.region_count
        self.state = "constructed"
        self.failed = False        # log device I/O failed: status 'D'
        self.flush_failed = False  # a leg flush failed: no clean bits until resume
        self.halted = False        # PRESUSPEND seen
        fresh = _full(self.region_count) if args.sync == "nosync" \
            else bytearray(bitmap_bytes(self.region_count))
        self.clean = fresh
        self.sync = bytearray(fresh)
        self.sync_count = self.region_count if args.sync == "nosync" else 0
        self.pending_clean: Set[int] = set()  # clean in memory, not yet on disk
        self.recovering: Optional[int] = None
        self.search = 0            # where GET_RESYNC_WORK looks next
        self.low = 0               # every region below is in sync
        # only a durable log flushes the legs: a core log's state file does
        # not survive a power loss anyway
        self._legs: Optional[_legs.LegFlusher] = \
            _leg_flusher(store.devnum) if store is not None and store.durable else None
        self._was_complete = self.sync_count == self.region_count

    # --- naming ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The uuid for log lines (with the luid, which tells tables apart)."""
        return f"{self.uuid.decode('ascii', 'replace')}/{self.luid:#x}"

    def view(self) -> LogView:
        """A read-only snapshot for the server's ``logs``."""
        return LogView(self.uuid.decode("ascii", "replace"), self.luid, self.args.kind,
                       self.args.region_size, self.region_count, self.sync_count,
                       self.args.device, self.state)

    def _check(self, region: int) -> int:
        if not 0 <= region < self.region_count:
            raise RequestFailed(22, f"{self.name}: region {region} out of range "
                                    f"(0..{self.region_count - 1})")
        return region

    # --- persistence -----------------------------------------------------------------

    def _image(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the on-disk image: the header, then the clean
        bitmap without the clean bits not yet allowed on disk."""
        out = bytearray()
        if start < BITMAP_OFFSET:
            out += encode_header(self.region_count)[start:min(end, BITMAP_OFFSET)]
        b0, b1 = max(start, BITMAP_OFFSET) - BITMAP_OFFSET, end - BITMAP_OFFSET
        if b1 > b0:
            out += self.clean[b0:b1].ljust(b1 - b0, b"\0")
        for r in self.pending_clean:
            off = BITMAP_OFFSET + (r >> 3)
            if start <= off < end:
                out[off - start] &= ~(1 << (r & 7)) & 0xFF
        return bytes(out)

    def _write(self, regions: Optional[Iterable[int]]) -> None:
        """Write the pages holding ``regions`` (None: everything) and, for a
        disk log, fdatasync.  A failure marks the log device failed and is
        raised as a RequestFailed(EIO)."""
        store = self.store
        if store is None or self.state == "constructed":
            # nothing was read yet: writing the bitmap the CTR made up could
            # overwrite a log the table's RESUME is about to read
            return
        page = store.page
        if regions is None:
            # everything, in pieces of 16 pages: a 2^20-region log is 129 KiB
            # on disk, and no piece needs a large buffer
            step = 16 * page
            starts = list(range(0, store.size, step))
        else:
            starts = sorted({(BITMAP_OFFSET + (r >> 3)) // page * page for r in regions})
            step = page
        try:
            store.write((s, self._image(s, min(s + step, store.size))) for s in starts)
        except OSError as exc:
            self.failed = True
            raise RequestFailed(5, f"{self.name}: writing the log to {store.path} failed: "
                                   f"{exc}") from exc

    def _persist_clean(self, also: Iterable[int] = ()) -> None:
        """Write the pending clean bits (and the pages of ``also``) once the
        legs' caches are flushed.  If the legs cannot be flushed nobody knows
        which regions are clean: every region becomes dirty (the kernel's
        disk log does the same) and stays so until the next resume."""
        regions = set(also)
        if self.pending_clean:
            if self._legs is not None:
                try:
                    self._legs()
                except OSError as exc:
                    _log.error("%s: flushing the mirror legs failed (%s): every region "
                               "is dirty until the next resume", self.name, exc)
                    self.flush_failed = True
                    self.pending_clean.clear()
                    self.clean[:] = bytes(len(self.clean))
                    self._write(None)
                    return
            regions |= self.pending_clean
            self.pending_clean = set()
        if regions:
            self._write(regions)

    def persist_all(self) -> None:
        """Everything on disk (POSTSUSPEND, DTR of a live log, shutdown)."""
        if self.store is None:
            return
        if self.pending_clean:
            self._persist_clean()
        self._write(None)

    # --- requests --------------------------------------------------------------------

    def resume(self) -> None:
        """RESUME: read the persisted bitmap (a disk log on every resume after
        a suspend, as the kernel's ``disk_resume``; a core log only after a
        restart), then write it back with the current region count."""
        if self.state == "resumed":
            # A second RESUME with no suspend between comes from the kernel's
            # reconnect loop (each blocked thread sends CTR + RESUME):
            # re-reading now would lose what happened since the first one.
            return
        first = self.state == "constructed"
        self.state = "resumed"
        self.recovering, self.search, self.low, self.halted = None, 0, 0, False
        self.pending_clean.clear()
        self.flush_failed = False
        if self._legs is not None:
            self._legs.reset()
        if self.store is not None and (self.store.durable or self.reconnected):
            self._load(trust_disk=self.reconnected)
            self.sync = bytearray(self.clean)
        elif not first:
            # core log resumed after a suspend: the bitmaps stay as they are
            pass
        self.reconnected = False
        self.sync_count = _popcount(self.sync)
        self._was_complete = self.sync_count == self.region_count
        if self.store is not None:
            try:
                self._write(None)
            except RequestFailed as exc:
                _log.error("%s", exc)
        _log.info("%s: resumed, %d/%d regions in sync%s", self.name, self.sync_count,
                  self.region_count,
                  f" (from {self.store.path})" if self.store is not None else "")

    def _load(self, trust_disk: bool) -> None:
        assert self.store is not None
        count = self.region_count
        nr = 0
        try:
            raw = self.store.read()
        except OSError as exc:
            _log.error("%s: reading the log from %s failed (%s): every region is out "
                       "of sync", self.name, self.store.path, exc)
            self.failed = True
            raw = b""
        header = parse_header(raw) if len(raw) >= 16 else None
        if header is not None and header.valid and (trust_disk or self.args.sync == "default"):
            nr = min(header.nr_regions, count)
        elif header is not None and raw and not header.valid and self.store.durable:
            _log.info("%s: no valid log on %s: %s", self.name, self.store.path,
                      "full resync" if self.args.sync != "nosync" else "all in sync (nosync)")
        clean = bytearray(raw[BITMAP_OFFSET:BITMAP_OFFSET + (nr >> 3)])
        if nr & 7:
            clean.append(raw[BITMAP_OFFSET + (nr >> 3)] & ((1 << (nr & 7)) - 1))
        clean = clean.ljust(bitmap_bytes(count), b"\0")
        # regions the log did not cover (a new log, or the mirror grew):
        # set for nosync, cleared otherwise, as dm-log.c does
        if nr < count and self.args.sync == "nosync":
            full = _full(count)
            i = nr >> 3
            clean[i] |= full[i] & (0xFF << (nr & 7)) & 0xFF  # the byte shared with the log
            clean[i + 1:] = full[i + 1:]
        self.clean = clean

    def mark(self, regions: Iterable[int]) -> None:
        """MARK_REGION (or a FLUSH's marks): dirty on disk before the answer."""
        changed = self._dirty(regions)
        if changed:
            self._write(changed)

    def _dirty(self, regions: Iterable[int]) -> List[int]:
        """Mark ``regions`` dirty in memory (a pending clean bit is
        forgotten); the regions that were clean, whose bits must be
        written before the answer."""
        changed = []
        for r in regions:
            self._check(r)
            self.pending_clean.discard(r)
            if _test(self.clean, r):
                _clear(self.clean, r)
                changed.append(r)
        return changed

    def clear(self, regions: Iterable[int]) -> None:
        """CLEAR_REGION: clean in memory; on disk at the next FLUSH."""
        if self.flush_failed:
            return
        for r in regions:
            self._check(r)
            if _test(self.sync, r) and not _test(self.clean, r):
                _set(self.clean, r)
                self.pending_clean.add(r)

    def flush(self, marks: Iterable[int] = ()) -> None:
        """FLUSH: apply the marks it carries (integrated_flush), then persist
        the dirty bits and, after flushing the legs, the clean ones: one
        write for both."""
        changed = self._dirty(marks)
        if self.pending_clean:
            self._persist_clean(changed)
        elif changed:
            self._write(changed)

    def is_clean(self, region: int) -> int:
        """IS_CLEAN: exactly 0 or 1."""
        return int(_test(self.clean, self._check(region)))

    def in_sync(self, region: int) -> int:
        """IN_SYNC: exactly 0 or 1, never an error for a region of the log
        (an error makes the kernel write to the primary leg only)."""
        return int(_test(self.sync, self._check(region)))

    def get_resync_work(self) -> Tuple[int, int]:
        """GET_RESYNC_WORK: (1, region) to recover, or (0, 0)."""
        if self.recovering is not None:
            return 1, self.recovering
        r = _next_zero(self.sync, self.search, self.region_count)
        if r >= self.region_count:
            self.search = self.region_count
            return 0, 0
        self.search = r + 1
        self.recovering = r
        return 1, r

    def set_region_sync(self, region: int, in_sync: int) -> None:
        """SET_REGION_SYNC: the end of a recovery (or a failed leg write)."""
        r = self._check(region)
        if self.recovering == r:
            self.recovering = None
        if in_sync:
            if not _test(self.sync, r):
                _set(self.sync, r)
                self.sync_count += 1
                if self.sync_count == self.region_count and not self._was_complete:
                    self._was_complete = True
                    _log.info("%s: resync finished, %d/%d regions in sync", self.name,
                              self.sync_count, self.region_count)
        else:
            if _test(self.sync, r):
                _clear(self.sync, r)
                self.sync_count -= 1
                self.low = min(self.low, r)
                self._was_complete = False
            self.pending_clean.discard(r)
            if _test(self.clean, r):
                _clear(self.clean, r)
                self._write([r])

    def first_out_of_sync(self) -> int:
        """The lowest region not in sync (region_count if none)."""
        self.low = _next_zero(self.sync, self.low, self.region_count)
        return self.low

    def is_remote_recovering(self, region: int) -> Tuple[int, int]:
        """IS_REMOTE_RECOVERING on a single node: nobody else recovers, and
        the hint is the first region out of sync.  (A hint of region_count
        while regions are out of sync would make the kernel stop asking for
        resync work until the next resume.)"""
        self._check(region)
        return 0, self.first_out_of_sync()

    def status_info(self) -> str:
        """STATUS_INFO, in cmirrord's and the kernel's convention."""
        if self.args.kind == "clustered-core":
            return "1 clustered-core"
        devnum = self.store.devnum if self.store is not None else None
        dev = f"{os.major(devnum)}:{os.minor(devnum)}" if devnum is not None \
            else self.args.device
        return f"3 clustered-disk {dev} {'D' if self.failed else 'A'}"

    def status_table(self) -> str:
        """STATUS_TABLE (the kernel builds the table line itself and never
        asks; answered in cmirrord's format anyway)."""
        sync = "" if self.args.sync == "default" else self.args.sync + " "
        boe = "block_on_error " if self.args.block_on_error else ""
        if self.args.kind == "clustered-core":
            return f"clustered-core {self.args.region_size} {sync}{boe}"
        return f"clustered-disk {self.args.device} {self.args.region_size} {sync}{boe}"

    def presuspend(self) -> None:
        """PRESUSPEND: recovery has stopped in the kernel."""
        self.halted = True

    def postsuspend(self) -> None:
        """POSTSUSPEND: everything to disk; the next RESUME re-reads it."""
        self.state = "suspended"
        self.recovering = None
        self.persist_all()

    def close(self) -> None:
        """Close the log device or state file (and the legs)."""
        if self._legs is not None:
            self._legs.reset()
        if self.store is not None:
            self.store.close()


def _leg_flusher(log_devnum: Optional[int]) -> "_legs.LegFlusher":
    """The leg flusher of a disk log (tests replace this function)."""
    return _legs.LegFlusher(log_devnum)
