"""One dirty log: its arguments, its bitmaps, and what each request does.

The model is the kernel's own single-node ``core``/``disk`` log
(dm-log.c), answered over dm-log-userspace:

- two bitmaps of one bit per region: *clean* (nothing written since the
  legs were last known equal; what the disk log stores, 1 = clean) and
  *sync* (the legs hold the same data; what IN_SYNC answers), 64-bit
  padded like the on-disk bitmap: 2^20 regions cost 256 KiB.  A third
  bitmap of one bit per page of the on-disk log, *pending*, marks the
  pages that hold clean bits not yet allowed on disk; the rest of the
  state is a few integers.  All of it lives in C memory (:mod:`.cstate`):
  the bitmaps are memoryviews of it, the counters its fields, and the C
  request loop answers the I/O path's requests from the same state (this
  module is the reference it is tested against, and answers everything
  that writes the store);
- MARK (or, with ``integrated_flush``, the marks a FLUSH carries) clears
  clean bits, and the new dirty state is written and ``fdatasync``'ed before
  the request is answered: the kernel writes to the region only after that
  answer, so a crash never leaves a written region marked clean;
- CLEAR sets clean bits in memory only (and only for regions in sync, so an
  out-of-sync region stays dirty on disk and is resynced after a restart)
  and marks their page pending.  A pending page is written only after the
  legs' caches were flushed (the order the kernel's disk log keeps): at
  the next FLUSH, or before, when a MARK writes the same page, which then
  flushes the legs first.  Clean bits are never held back until
  suspend: after a full sync the kernel stops asking for resync work, so a
  restarted server that read stale dirty bits would answer IN_SYNC 0 and
  the kernel would then write those regions to one leg only;
- GET_RESYNC_WORK hands out the next out-of-sync region and the same one
  again until SET_REGION_SYNC arrives (the kernel resends a request with a
  new seq after 15 s, so every handler is idempotent);
- RESUME (re)reads the disk log as the kernel's ``disk_resume`` does, and
  writes it back; POSTSUSPEND writes everything.  A restarted server
  (the kernel's reconnect) takes the dirty regions for out of sync, unless
  a marker in the state directory says the sync had been full: the kernel
  then asks for no more resync work, and every region is in sync.

A ``clustered-core`` log keeps the same bitmap in a state file (not
``fdatasync``'ed) when the server has a state directory: a core log lives
as long as the mirror, and the file lets a restarted server pick it up
instead of starting from nothing.
"""
from __future__ import annotations

import os
from typing import Iterable, NamedTuple, Optional, Set, Tuple

from .._log import get_logger
from . import legs as _legs
from .bitmap import clear_bit, full, nbytes, next_zero, popcount, set_bit, test
from .cstate import CField, new_state
from .ctr import MAX_REGIONS, LogArgs, parse_ctr
from .disklog import BITMAP_OFFSET, LogStore, decode_bitmap, encode_image, parse_header

__all__ = ["LogArgs", "parse_ctr", "DirtyLog", "LogView", "MAX_REGIONS", "RequestFailed"]

_log = get_logger("dmlog")


class RequestFailed(Exception):
    """A request to answer with ``-errno`` (and a log line: ``str()``)."""

    def __init__(self, errno_value: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_value


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

    # the counters live in the C state (``c``), where the C request loop
    # answers from them too
    region_count = CField("region_count")
    page = CField("page")               # bytes per page of the on-disk log (0: no store)
    sync_count = CField("sync_count")
    recovering = CField("recovering")   # the region handed out for recovery (-1: none)
    search = CField("search")           # where GET_RESYNC_WORK looks next
    low = CField("low")                 # every region below is in sync
    flush_failed = CField("flush_failed")  # a leg flush failed: no clean bits until resume
    _was_complete = CField("was_complete")

    def __init__(self, uuid: bytes, luid: int, args: LogArgs, *, store: Optional[LogStore],
                 reconnected: bool = False, synced_marker: Optional[str] = None) -> None:
        self.uuid = uuid
        self.luid = luid
        self.args = args
        self.store = store
        self.reconnected = reconnected
        #: a file that exists while every region has been in sync since the
        #: table's last resume (None: not kept; see :meth:`resume`)
        self.synced_marker = synced_marker
        count = args.region_count
        self.c, self.clean, self.sync, self.pending = new_state(
            uuid, luid, count, nbytes(count),
            nbytes(-(-store.size // store.page)) if store is not None else 0,
            store.page if store is not None else 0)
        self.state = "constructed"
        self.failed = False        # log device I/O failed: status 'D'
        self.halted = False        # PRESUSPEND seen
        if args.sync == "nosync":
            self.clean[:] = self.sync[:] = full(count)
        self.sync_count = count if args.sync == "nosync" else 0
        # only a durable log flushes the legs: a core log's state file does
        # not survive a power loss anyway
        self._legs: Optional[_legs.LegFlusher] = \
            _leg_flusher(store.devnum) if store is not None and store.durable else None
        self._was_complete = self.sync_count == count

    @property
    def state(self) -> str:
        """constructed (no RESUME yet), resumed or suspended."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        self._state = value
        # the C loop leaves every request that would write the store to Python
        self.c.persist = self.store is not None and value != "constructed"

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

    def _page_of(self, region: int) -> int:
        return (BITMAP_OFFSET + (region >> 3)) // self.page

    # --- persistence -----------------------------------------------------------------

    def _write(self, pages: Optional[Set[int]], with_pending: bool = False) -> None:
        """Write ``pages`` of the on-disk log (None: all of it; with
        ``with_pending``: and every pending page) and, for a disk log,
        fdatasync.  A pending page among them is written only after the
        legs' caches were flushed.  A failure marks the log device failed
        and is raised as a RequestFailed(EIO)."""
        store = self.store
        if store is None or self.state == "constructed":
            # nothing was read yet: writing the bitmap the CTR made up could
            # overwrite a log the table's RESUME is about to read
            return
        pending = self.pending
        if any(pending) and (with_pending or pages is None
                             or any(test(pending, p) for p in pages)):
            # the legs' flush makes every pending clean bit safe: all of
            # them go to disk now, or a later FLUSH would find none to write
            if pages is not None:
                pages |= {p for p in range(len(pending) * 8) if test(pending, p)}
            pending[:] = bytes(len(pending))
            if not self._flush_legs():
                pages = None
        page = store.page
        if pages is None:
            # everything, in pieces of 16 pages: a 2^20-region log is 129 KiB
            # on disk, and no piece needs a large buffer
            step = 16 * page
            starts = list(range(0, store.size, step))
        else:
            step = page
            starts = sorted(p * page for p in pages)
        if not starts:
            return
        try:
            store.write((s, encode_image(self.clean, self.region_count, s,
                                         min(s + step, store.size))) for s in starts)
        except OSError as exc:
            self.failed = True
            raise RequestFailed(5, f"{self.name}: writing the log to {store.path} failed: "
                                   f"{exc}") from exc

    def _flush_legs(self) -> bool:
        """Flush the legs' caches.  If they cannot be flushed nobody knows
        which regions are clean: every region becomes dirty (the kernel's
        disk log does the same) and stays so until the next resume (False)."""
        if self._legs is None:
            return True
        try:
            self._legs()
        except OSError as exc:
            _log.error("%s: flushing the mirror legs failed (%s): every region "
                       "is dirty until the next resume", self.name, exc)
            self.flush_failed = True
            self.clean[:] = bytes(len(self.clean))
            return False
        return True

    def persist_all(self) -> None:
        """Everything on disk (POSTSUSPEND, DTR of a live log, shutdown)."""
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
        self.state = "resumed"
        self.recovering, self.search, self.low, self.halted = -1, 0, 0, False
        self.pending[:] = bytes(len(self.pending))
        self.flush_failed = False
        if self._legs is not None:
            self._legs.reset()
        if self.store is not None and (self.store.durable or self.reconnected):
            self._load(trust_disk=self.reconnected)
            if self.reconnected and self._synced():
                # A restart while the kernel lives, after a full sync: the
                # kernel stopped asking for resync work (its hint says all
                # in sync), so a region dirty on disk (a write was in flight)
                # is in sync, as the kernel wrote it to every leg.  Answered
                # out of sync it would never be recovered, and later writes
                # to it would go to the primary leg only.
                self.sync[:] = full(self.region_count)
            else:
                self.sync[:] = self.clean
        # else a core log resumed after a suspend: the bitmaps stay as they are
        self.reconnected = False
        self.sync_count = popcount(self.sync)
        self._was_complete = self.sync_count == self.region_count
        self.mark_synced(self._was_complete)
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
        self.clean[:] = decode_bitmap(raw, nr, count,
                                      uncovered_clean=self.args.sync == "nosync")

    def mark(self, regions: Iterable[int]) -> None:
        """MARK_REGION (or a FLUSH's marks): dirty on disk before the answer."""
        pages = self._dirty(regions)
        if pages:
            self._write(pages)

    def _dirty(self, regions: Iterable[int]) -> Set[int]:
        """Mark ``regions`` dirty in memory; the pages of those that were
        clean, which must be written before the answer."""
        pages = set()
        clean = self.clean
        for r in regions:
            self._check(r)
            if test(clean, r):
                clear_bit(clean, r)
                if self.page:
                    pages.add(self._page_of(r))
        return pages

    def clear(self, regions: Iterable[int]) -> None:
        """CLEAR_REGION: clean in memory; on disk once the legs are flushed."""
        if self.flush_failed:
            return
        for r in regions:
            self._check(r)
            if test(self.sync, r) and not test(self.clean, r):
                set_bit(self.clean, r)
                if self.page:
                    set_bit(self.pending, self._page_of(r))

    def flush(self, marks: Iterable[int] = ()) -> None:
        """FLUSH: apply the marks it carries (integrated_flush), then persist
        the dirty bits and, after flushing the legs, the clean ones: one
        write for both."""
        pages = self._dirty(marks)
        if pages or any(self.pending):
            self._write(pages, with_pending=True)

    def is_clean(self, region: int) -> int:
        """IS_CLEAN: exactly 0 or 1."""
        return int(test(self.clean, self._check(region)))

    def in_sync(self, region: int) -> int:
        """IN_SYNC: exactly 0 or 1, never an error for a region of the log
        (an error makes the kernel write to the primary leg only)."""
        return int(test(self.sync, self._check(region)))

    def get_resync_work(self) -> Tuple[int, int]:
        """GET_RESYNC_WORK: (1, region) to recover, or (0, 0)."""
        if self.recovering >= 0:
            return 1, self.recovering
        r = next_zero(self.sync, self.search, self.region_count)
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
            self.recovering = -1
        if in_sync:
            if not test(self.sync, r):
                set_bit(self.sync, r)
                self.sync_count += 1
                if self.sync_count == self.region_count and not self._was_complete:
                    self._was_complete = True
                    self.mark_synced(True)   # before any answer tells the kernel
                    _log.info("%s: resync finished, %d/%d regions in sync", self.name,
                              self.sync_count, self.region_count)
        else:
            if test(self.sync, r):
                clear_bit(self.sync, r)
                self.sync_count -= 1
                self.low = min(self.low, r)
                self._was_complete = False
                self.mark_synced(False)
            pages = self._dirty([r])
            if pages:
                self._write(pages)

    def _synced(self) -> bool:
        return self.synced_marker is not None and os.path.exists(self.synced_marker)

    def mark_synced(self, synced: bool) -> None:
        """Keep (or drop) the marker that every region has been in sync
        since the table's last resume: a restarted server reads it
        (:meth:`resume`).  It needs to outlive the server, not a reboot
        (the kernel's state does not either): no fsync."""
        path = self.synced_marker
        if path is None or synced == os.path.exists(path):
            return
        try:
            if synced:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            else:
                os.unlink(path)
        except OSError as exc:
            _log.warning("%s: marker %s: %s", self.name, path, exc)

    def first_out_of_sync(self) -> int:
        """The lowest region not in sync (region_count if none)."""
        self.low = next_zero(self.sync, self.low, self.region_count)
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
        self.recovering = -1
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
