"""Types of ``loopcore._native``, the cffi extension built by ``_build.py``.

``lib`` holds the functions and enum constants of ``csrc/lc_*.h`` (the
cdef); keep the two in step.  Every function returns an int: a
non-negative value on success or -errno.  C integers are Python ints;
``const char *`` takes bytes; other pointers take cdata from ``ffi``.
"""

from typing import Any

from _typeshed import ReadableBuffer

class CData:
    """A cffi cdata object: pointer, array or struct.  Its fields and items
    are the C struct's, untyped here."""

    def __getattr__(self, name: str) -> Any: ...
    def __setattr__(self, name: str, value: Any) -> None: ...
    def __getitem__(self, index: Any) -> Any: ...
    def __setitem__(self, index: Any, value: Any) -> None: ...
    def __add__(self, offset: int) -> "CData": ...

class _Buffer:
    """What ``ffi.buffer`` returns: the raw bytes of a cdata."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: slice) -> bytes: ...
    def __setitem__(self, index: slice, value: ReadableBuffer) -> None: ...

class _FFI:
    NULL: CData
    def new(self, cdecl: str, init: Any = ..., /) -> CData: ...
    def cast(self, cdecl: str, value: CData | int, /) -> CData: ...
    def sizeof(self, cdecl_or_cdata: str | CData, /) -> int: ...
    def typeof(self, cdecl: str, /) -> Any: ...
    def buffer(self, cdata: CData, size: int = ..., /) -> _Buffer: ...
    def from_buffer(
        self, cdecl: str, python_buffer: ReadableBuffer, require_writable: bool = ..., /
    ) -> CData: ...

class _Lib:
    # lc_loop.h: enum lc_attach_step
    LC_STEP_NONE: int
    LC_STEP_LOCK: int
    LC_STEP_GET_FREE: int
    LC_STEP_OPEN: int
    LC_STEP_BIND: int
    LC_STEP_READ_BACK: int
    LC_STEP_BACKOFF: int
    LC_STEP_WRITE_BACK: int
    LC_STEP_UNBIND: int
    LC_STEP_ADD: int
    LC_STEP_DEVICE_LOCK: int

    # lc_loop.h: enum lc_attach_option (lc_attach's options bits)
    LC_ATTACH_LOCK_DEVICE: int
    LC_ATTACH_CONTROL_HELD: int
    LC_ATTACH_READ_SETTINGS: int
    LC_ATTACH_READ_DEVNUM: int
    LC_NAME_FIELD: int

    # lc_loop.h: enum lc_blkpg_op
    LC_BLKPG_ADD: int
    LC_BLKPG_DEL: int

    # lc_scan.h: lc_scan_rec.flags bits
    LC_SCAN_RO: int
    LC_SCAN_AUTOCLEAR: int
    LC_SCAN_PARTSCAN: int
    LC_SCAN_DIO: int
    LC_SCAN_BOUND: int
    LC_SCAN_HAS_DISKSEQ: int
    LC_SCAN_HAS_NODE: int
    LC_SCAN_HAS_STATUS: int
    LC_SCAN_HAS_DIO: int
    LC_SCAN_FROM_SYSFS: int
    LC_SCAN_NAME_PARTIAL: int

    # lc_scan.h: lc_scan_loops flags argument
    LC_SCAN_INCLUDE_UNBOUND: int
    LC_SCAN_NO_STATUS: int
    LC_SCAN_SYSFS: int

    # lc_dm.h
    def lc_dm_open(self, path: bytes | CData, /) -> int: ...
    def lc_dm_ioctl(self, fd: int, nr: int, buf: CData, /) -> int: ...

    # lc_loop.h: /dev/loop-control
    def lc_ctl_open(self) -> int: ...
    def lc_ctl_add(self, ctl_fd: int, number: int, /) -> int: ...
    def lc_ctl_remove(self, ctl_fd: int, number: int, /) -> int: ...
    def lc_ctl_get_free(self, ctl_fd: int, /) -> int: ...
    def lc_dev_open(self, number: int, read_only: int, /) -> int: ...

    # lc_loop.h: loop ioctls
    def lc_configure(self, dev_fd: int, config: CData, /) -> int: ...
    def lc_probe_configure(self, dev_fd: int, /) -> int: ...
    def lc_set_fd(self, dev_fd: int, backing_fd: int, /) -> int: ...
    def lc_clr_fd(self, dev_fd: int, /) -> int: ...
    def lc_set_status64(self, dev_fd: int, info: CData, /) -> int: ...
    def lc_get_status64(self, dev_fd: int, info: CData, /) -> int: ...
    def lc_change_fd(self, dev_fd: int, backing_fd: int, /) -> int: ...
    def lc_set_capacity(self, dev_fd: int, /) -> int: ...
    def lc_set_block_size(self, dev_fd: int, block_size: int, /) -> int: ...
    def lc_set_direct_io(self, dev_fd: int, enable: int, /) -> int: ...

    # lc_loop.h: block ioctls
    def lc_get_diskseq(self, fd: int, diskseq: CData, /) -> int: ...
    def lc_get_size64(self, fd: int, size_bytes: CData, /) -> int: ...
    def lc_get_sector_size(self, fd: int, sector_size: CData, /) -> int: ...
    def lc_get_read_only(self, fd: int, read_only: CData, /) -> int: ...
    def lc_set_read_only(self, fd: int, read_only: int, /) -> int: ...
    def lc_blkpg(self, fd: int, op: int, pno: int, start: int, length: int, /) -> int: ...

    # lc_loop.h: one-call paths
    def lc_attach(
        self,
        ctl_fd: int,
        backing_fd: int,
        number: int,
        options: int,
        use_configure: int,
        flags: int,
        offset: int,
        size_limit: int,
        block_size: int,
        file_name: bytes | CData,
        retry: CData,
        first_attempt: int,
        deadline_ns: int,
        result: CData,
        /,
    ) -> int: ...
    def lc_read_state(self, dev_fd: int, status: CData, result: CData, /) -> int: ...
    def lc_backing_open(
        self, path: bytes, read_only: int, probe_direct_io: int, out: CData, /
    ) -> int: ...
    def lc_backing_stat(self, fd: int, probe_direct_io: int, out: CData, /) -> int: ...
    def lc_attach_many(
        self,
        ctl_fd: int,
        backing_fds: CData,
        flags: CData,
        file_names: bytes | CData,
        count: int,
        options: int,
        block_size: int,
        retry: CData,
        first_attempt: int,
        deadline_ns: int,
        results: CData,
        done: CData,
        /,
    ) -> int: ...
    def lc_detach_many(
        self, dev_fds: CData, count: int, rcs: CData, failed_steps: CData, /
    ) -> int: ...
    def lc_direct_io_refused(self, backing_fd: int, /) -> int: ...
    def lc_flush(self, fd: int, /) -> int: ...
    def lc_detach_fd(self, dev_fd: int, failed_step: CData, /) -> int: ...

    # lc_scan.h
    def lc_scan_loops(self, buf: CData, bufsize: int, flags: int, needed: CData, /) -> int: ...

ffi: _FFI
lib: _Lib
