"""The dm-log-userspace wire format: datagrams, request types, replies.

The kernel's ``dm-log-userspace`` module forwards every dirty-log call of a
dm-mirror to userspace over the netlink connector (``NETLINK_CONNECTOR``,
connector id ``CN_IDX_DM = 7`` / ``CN_VAL_DM_USERSPACE_LOG = 1``).  One
datagram holds one message, laid out as::

    struct nlmsghdr         type NLMSG_DONE
    struct cn_msg           id CN_IDX_DM:CN_VAL_DM_USERSPACE_LOG
    struct dm_ulog_request  the request header (160 bytes)
    data[data_size]

The three structs are declared once, in the C shim's ``lc_dmlog.h`` (checked
there against the uapi headers); their packing here is derived from that
declaration.  They follow each other without padding, so the request
starts at byte 36 and its u64 is not 8-byte aligned: everything is
unpacked with ``unpack_from``.

Replies follow the rules the kernel's ``fill_pkg`` enforces:

- the header is echoed with ``error`` set and ``data_size`` exactly the
  length of the reply payload.  Each request type has a reply *capacity*
  (the kernel's buffer for the reply: the fixed reply size of the request
  table, :mod:`.requests`; :data:`CTR_REPLY_CAPACITY` for CTR; the rest of
  the dm status buffer for STATUS_*): a ``data_size`` above it makes the
  kernel fail the request with -ENOSPC ("Insufficient space to receive package"), so a
  request that returns nothing must be answered with ``data_size = 0`` and
  never echoed with its own payload;
- the kernel matches a reply on ``dm_ulog_request.seq`` only; ``cn_msg.len``
  must be ``160 + data_size`` and ``nlmsg_len`` at least ``36 + cn_msg.len``
  (shorter messages are dropped);
- a reply goes to the kernel: netlink address (pid 0, groups 0).

Error replies are padded to the request type's *fixed* reply size
(the request table's ``reply_size``).  The kernel's reply capacity is a
value-result variable that it does not reset when it retries a request
after reconnecting to a restarted server: an unpadded -ESRCH reply leaves
it at 0, and the retried GET_RESYNC_WORK/IN_SYNC ... then fails with
-ENOSPC (for IN_SYNC that means writes to the primary leg only).  Padding
keeps the capacity intact; the kernel copies (and ignores) the zeros.
"""
from __future__ import annotations

import enum
import struct
from operator import itemgetter
from typing import NamedTuple, Optional

from .._c import ffi, struct_view

__all__ = [
    "NETLINK_CONNECTOR", "SOL_NETLINK", "NETLINK_ADD_MEMBERSHIP", "CN_IDX_DM",
    "CN_VAL_DM_USERSPACE_LOG", "NLMSG_DONE", "REQUEST_VERSION", "MAX_PAYLOAD",
    "CTR_REPLY_CAPACITY", "NLMSGHDR", "CN_MSG", "ULOG_REQUEST", "HEADERS", "HEADER_FIELDS",
    "HEADER_SIZE", "REQUEST_OFFSET", "UUID_LEN", "RequestType", "Request", "ProtocolError",
    "parse_datagram", "build_request", "build_reply", "build_ack", "parse_reply", "Reply",
]

# linux/connector.h, linux/netlink.h
NETLINK_CONNECTOR = 11
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
CN_IDX_DM = 7
CN_VAL_DM_USERSPACE_LOG = 1
NLMSG_DONE = 3

#: DM_ULOG_REQUEST_VERSION: kernels from 3.14 on send 3 in every request.
REQUEST_VERSION = 3

#: The kernel preallocates 512 bytes per message: 512 - 20 (cn_msg) - 160
#: (request) is the largest payload it can send (it refuses larger ones).
MAX_PAYLOAD = 332

#: The reply room of a CTR on a table load (DM_NAME_LEN; 0 on the kernel's
#: reconnect path).
CTR_REPLY_CAPACITY = 128

_VIEWS = (("nl", struct_view("struct lc_nlmsghdr")), ("cn", struct_view("struct lc_cn_msg")),
          ("req", struct_view("struct lc_ulog_request")))
NLMSGHDR, CN_MSG, ULOG_REQUEST = (view.struct for _, view in _VIEWS)
REQUEST_OFFSET = NLMSGHDR.size + CN_MSG.size      # 36
HEADER_SIZE = REQUEST_OFFSET + ULOG_REQUEST.size  # 196
#: DM_UUID_LEN without the NUL the field has room for
UUID_LEN = dict(ffi.typeof("struct lc_ulog_request").fields)["uuid"].type.length - 1

#: The three headers back to back in one struct: one unpack per datagram,
#: one pack per reply (the server's hot path).  HEADER_FIELDS names what
#: it yields, ``nl.nlmsg_len`` ... ``req.data_size``.
HEADERS = struct.Struct("=" + "".join(view.struct.format[1:] for _, view in _VIEWS))
HEADER_FIELDS = tuple(f"{prefix}.{name}" for prefix, view in _VIEWS for name in view.names)
_REQUEST_FIELDS = itemgetter(*map(HEADER_FIELDS.index, (
    "nl.nlmsg_len", "cn.idx", "cn.val", "cn.len", "req.luid", "req.uuid", "req.version",
    "req.seq", "req.request_type", "req.data_size")))
_REPLY_FIELDS = itemgetter(*map(HEADER_FIELDS.index, (
    "nl.nlmsg_len", "nl.nlmsg_type", "cn.idx", "cn.val", "cn.seq", "cn.ack", "cn.len",
    "req.error", "req.seq", "req.request_type", "req.data_size")))


class RequestType(enum.IntEnum):
    """``DM_ULOG_*`` request types (linux/dm-log-userspace.h)."""

    CTR = 1
    DTR = 2
    PRESUSPEND = 3
    POSTSUSPEND = 4
    RESUME = 5
    GET_REGION_SIZE = 6
    IS_CLEAN = 7
    IN_SYNC = 8
    FLUSH = 9
    MARK_REGION = 10
    CLEAR_REGION = 11
    GET_RESYNC_WORK = 12
    SET_REGION_SYNC = 13
    GET_SYNC_COUNT = 14
    STATUS_INFO = 15
    STATUS_TABLE = 16
    IS_REMOTE_RECOVERING = 17


RT = RequestType


class ProtocolError(Exception):
    """A datagram that is not a well-formed request.  ``request`` is the
    header when it could be read (an error reply can then be sent), else
    None (the datagram can only be dropped)."""

    def __init__(self, message: str, request: Optional["Request"] = None) -> None:
        super().__init__(message)
        self.request = request


class Request(NamedTuple):
    """One request from the kernel (the header fields and the payload)."""

    luid: int
    uuid: bytes           # without NUL padding
    version: int
    seq: int
    request_type: int     # the low 8 bits (DM_ULOG_REQUEST_TYPE)
    data: bytes

    @property
    def key(self) -> "tuple[bytes, int]":
        """What a log is known by: (uuid, luid).  The luid is the kernel's
        address of the log context, which differs between the live and the
        inactive table of one mirror."""
        return (self.uuid, self.luid)

    @property
    def type_name(self) -> str:
        """The request type's name (``MARK_REGION``), or ``type N``."""
        try:
            return RequestType(self.request_type).name
        except ValueError:
            return f"type {self.request_type}"


def parse_datagram(buf: bytes) -> Request:
    """The request in one datagram from the kernel.

    Raises :class:`ProtocolError` for anything else: too short for the
    headers (no reply possible), a connector id other than dm's, or a
    payload shorter than ``data_size`` or longer than the kernel can send
    (with the header, so that an error reply can go back).
    """
    size = len(buf)
    if size < HEADER_SIZE:
        raise ProtocolError(f"short datagram ({size} bytes, need {HEADER_SIZE})")
    nl_len, idx, val, cn_len, luid, uuid, version, seq, rtype, dsize = \
        _REQUEST_FIELDS(HEADERS.unpack_from(buf, 0))
    if idx != CN_IDX_DM or val != CN_VAL_DM_USERSPACE_LOG:
        raise ProtocolError(f"connector id {idx}:{val} is not dm-log-userspace's")
    uuid = uuid.split(b"\0", 1)[0]
    end = HEADER_SIZE + dsize
    if dsize <= MAX_PAYLOAD and end <= size and nl_len >= end and nl_len <= size \
            and cn_len >= ULOG_REQUEST.size + dsize and REQUEST_OFFSET + cn_len <= nl_len:
        # the common case: everything consistent
        return Request(luid, uuid, version, seq, rtype & 0xFF, bytes(buf[HEADER_SIZE:end]))
    req = Request(luid, uuid, version, seq, rtype & 0xFF, b"")
    if dsize > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {dsize} bytes (the kernel sends at most "
                            f"{MAX_PAYLOAD})", req)
    if end > size or ULOG_REQUEST.size + dsize > cn_len:
        raise ProtocolError(f"truncated payload ({dsize} bytes announced, "
                            f"{max(0, min(size, REQUEST_OFFSET + cn_len) - HEADER_SIZE)} "
                            f"present)", req)
    raise ProtocolError(f"inconsistent lengths (datagram {size}, nlmsg {nl_len}, "
                        f"cn_msg {cn_len}, data_size {dsize})", req)


def _message(seq: int, luid: int, uuid: bytes, version: int, error: int, rtype: int,
             payload: bytes, cn_seq: int) -> bytes:
    dsize = len(payload)
    clen = ULOG_REQUEST.size + dsize
    # in HEADER_FIELDS order: struct nlmsghdr, struct cn_msg, struct dm_ulog_request
    return HEADERS.pack(REQUEST_OFFSET + clen, NLMSG_DONE, 0, cn_seq, 0,
                        CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, cn_seq, 0, clen, 0,
                        luid, uuid, version, error, seq, rtype, dsize) + payload


def build_request(request_type: int, seq: int, uuid: bytes, luid: int, data: bytes = b"",
                  version: int = REQUEST_VERSION) -> bytes:
    """A datagram as the kernel sends it (for tests and benchmarks: a fake
    kernel peer)."""
    return _message(seq, luid, uuid, version, 0, request_type, data, seq)


def build_reply(req: Request, error: int = 0, payload: bytes = b"") -> bytes:
    """The reply to ``req``: ``error`` is 0 or a negative errno, ``payload``
    the reply data (its length becomes ``data_size``; for an error reply,
    the zeros that pad it to the type's fixed reply size)."""
    return _message(req.seq, req.luid, req.uuid, req.version, error, req.request_type,
                    payload, req.seq)


def build_ack(seq: int, errno_value: int) -> bytes:
    """The other reply form: ``cn_msg.len = 0``, ``cn_msg.seq`` the request's
    seq, ``cn_msg.ack`` a positive errno (0: success).  The kernel takes
    ``-ack`` as the error and no data; ``EAGAIN`` makes it resend at once."""
    return (NLMSGHDR.pack(REQUEST_OFFSET, NLMSG_DONE, 0, seq, 0)
            + CN_MSG.pack(CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, seq, errno_value, 0, 0))


class Reply(NamedTuple):
    """A reply as the kernel reads it (for tests: the fake kernel peer)."""

    seq: int
    error: int
    request_type: int
    data: bytes
    nlmsg_len: int
    cn_len: int
    cn_ack: int


def parse_reply(buf: bytes) -> Reply:
    """Parse a reply datagram, checking the framing rules the kernel
    applies (ValueError if a rule is broken)."""
    if len(buf) < REQUEST_OFFSET:
        raise ValueError(f"short reply ({len(buf)} bytes)")
    nl_len, nl_type, idx, val, cn_seq, ack, cn_len, error, seq, rtype, dsize = \
        _REPLY_FIELDS(HEADERS.unpack_from(buf.ljust(HEADER_SIZE, b"\0"), 0))
    if (idx, val) != (CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG) or nl_type != NLMSG_DONE:
        raise ValueError(f"bad reply header: id {idx}:{val}, nlmsg type {nl_type}")
    if nl_len != len(buf) or nl_len < REQUEST_OFFSET + cn_len:
        raise ValueError(f"bad lengths: datagram {len(buf)}, nlmsg {nl_len}, cn {cn_len}")
    if cn_len == 0:
        return Reply(cn_seq, -ack, 0, b"", nl_len, 0, ack)
    if cn_len < ULOG_REQUEST.size:
        raise ValueError(f"incomplete reply: cn_msg.len {cn_len}")
    if cn_len != ULOG_REQUEST.size + dsize:
        raise ValueError(f"cn_msg.len {cn_len} != {ULOG_REQUEST.size} + data_size {dsize}")
    return Reply(seq, error, rtype, bytes(buf[HEADER_SIZE:HEADER_SIZE + dsize]), nl_len,
                 cn_len, ack)

