"""The request table: for each request type on a log, how its payload is
decoded, which operation of the log it runs, how the result is encoded,
and the fixed size of a successful reply.

Adding a request is one row here (and the operation on
:class:`~.log.DirtyLog`).  CTR and DTR are not rows: they make and unmake
logs, which is the server's job (:mod:`.server`).

A decoder turns the payload into the operation's arguments (or raises
:class:`~.log.RequestFailed` with EINVAL); an encoder turns what the
operation returns into the reply payload.  The fixed reply size is the
kernel's reply capacity for the type (``fill_pkg`` fails a larger reply
with -ENOSPC) and what an error reply is padded to (see :mod:`.protocol`);
None for a reply of no fixed size (STATUS_*: a string).
"""
from __future__ import annotations

import errno
import struct
from operator import attrgetter
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from .log import DirtyLog, RequestFailed
from .protocol import RT

__all__ = ["Handling", "REQUESTS", "error_padding"]

_U64 = struct.Struct("=Q")
_S64 = struct.Struct("=q")
_S64_U64 = struct.Struct("=qQ")   # (flag, region) pairs
_U64_S64 = struct.Struct("=Qq")   # SET_REGION_SYNC: (region, in_sync)


class Handling(NamedTuple):
    """One row of the table."""

    decode: Callable[[bytes], Tuple[Any, ...]]
    operate: Callable[..., Any]     # ``operate(log, *decode(payload))``
    encode: Callable[[Any], bytes]
    reply_size: Optional[int]


# --- decoders: payload -> the operation's arguments ---------------------------------

def _nothing(data: bytes) -> Tuple[()]:
    return ()


def _one_u64(data: bytes) -> Tuple[int]:
    if len(data) != _U64.size:
        raise RequestFailed(errno.EINVAL, f"payload of {len(data)} bytes, expected a u64")
    return _U64.unpack(data)


def _u64_list(data: bytes) -> Tuple[Tuple[int, ...]]:
    if len(data) % _U64.size:
        raise RequestFailed(errno.EINVAL, f"payload of {len(data)} bytes is not a list of u64")
    return (struct.unpack(f"={len(data) // _U64.size}Q", data),)


def _region_sync(data: bytes) -> Tuple[int, int]:
    if len(data) != _U64_S64.size:
        raise RequestFailed(errno.EINVAL, f"payload of {len(data)} bytes, expected "
                                          f"{_U64_S64.size}")
    region, in_sync = _U64_S64.unpack(data)
    return region, in_sync


# --- encoders: result -> reply payload -------------------------------------------------

def _void(result: None) -> bytes:
    return b""


def _string(result: str) -> bytes:
    return result.encode() + b"\0"


def _pair(result: Tuple[int, int]) -> bytes:
    return _S64_U64.pack(*result)


REQUESTS: Dict[int, Handling] = {
    RT.PRESUSPEND: Handling(_nothing, DirtyLog.presuspend, _void, 0),
    RT.POSTSUSPEND: Handling(_nothing, DirtyLog.postsuspend, _void, 0),
    RT.RESUME: Handling(_nothing, DirtyLog.resume, _void, 0),
    RT.GET_REGION_SIZE: Handling(_nothing, attrgetter("args.region_size"), _U64.pack, _U64.size),
    RT.IS_CLEAN: Handling(_one_u64, DirtyLog.is_clean, _S64.pack, _S64.size),
    RT.IN_SYNC: Handling(_one_u64, DirtyLog.in_sync, _S64.pack, _S64.size),
    RT.FLUSH: Handling(_u64_list, DirtyLog.flush, _void, 0),
    RT.MARK_REGION: Handling(_u64_list, DirtyLog.mark, _void, 0),
    RT.CLEAR_REGION: Handling(_u64_list, DirtyLog.clear, _void, 0),
    RT.GET_RESYNC_WORK: Handling(_nothing, DirtyLog.get_resync_work, _pair, _S64_U64.size),
    RT.SET_REGION_SYNC: Handling(_region_sync, DirtyLog.set_region_sync, _void, 0),
    RT.GET_SYNC_COUNT: Handling(_nothing, attrgetter("sync_count"), _U64.pack, _U64.size),
    RT.STATUS_INFO: Handling(_nothing, DirtyLog.status_info, _string, None),
    RT.STATUS_TABLE: Handling(_nothing, DirtyLog.status_table, _string, None),
    RT.IS_REMOTE_RECOVERING: Handling(_one_u64, DirtyLog.is_remote_recovering, _pair,
                                      _S64_U64.size),
}


def error_padding(request_type: int) -> bytes:
    """The zeros an error reply to ``request_type`` carries: its fixed reply
    size (none for CTR, DTR, STATUS_* and unknown types)."""
    row = REQUESTS.get(request_type)
    return bytes(row.reply_size or 0) if row is not None else b""
