"""The contracts of loopcore's three byte parsers, as fuzz targets.

Each target takes one input (bytes) and fails (an ``AssertionError`` or an
exception that is not loopcore's refusal) when the parser breaks its
contract on it; a valid input and a refused one both pass.  The property
tests (``tests/test_properties_*.py``) check the same contracts with
hypothesis's generators; the coverage-guided fuzzer (``scripts/fuzz``,
atheris) feeds these targets mutated bytes; ``tests/test_fuzz_corpus.py``
replays the committed seeds and findings (``tests/fuzz-corpus/TARGET/``)
in ``make test``, without atheris.

- :func:`partition_table`: the GPT/MBR/extended reader on an image of any
  bytes: a table or None or :class:`PartitionTableError`, every partition
  inside the device with a number the kernel's parsers give (1-255), and a
  bounded amount read.  Input: one mode byte (bit 0: 4096-byte sectors;
  bit 1: the disk size from the next six bytes, else the image's length),
  six size bytes, then the image.
- :func:`dmlog_datagrams`: the dirty-log server on a sequence of datagrams
  (each a 2-byte little-endian length, then that many bytes), as it serves
  them (its C request loop first, Python for the rest): every one is
  answered with a reply the kernel's framing takes, or dropped; no
  exception escapes; afterwards a fresh log still comes up and answers.
- :func:`dm_text`: dm table, parameter and status text (UTF-8; invalid
  bytes become lone surrogates): parsed or refused with a loopcore
  ``ValueError`` (``DmParseError`` is one); what parses formats back to
  text that parses to the same value.  Input: one selector byte (a
  parameter type, a status type or the whole table), then the text.
"""
from __future__ import annotations

import os
import struct
from typing import Callable, Dict, List, Optional, Tuple

from loopcore import PartitionTableError, dm, errors
from loopcore.dm.targets import PARAMS_TYPES, STATUS_TYPES
from loopcore.dmlog import DirtyLogServer, disklog
from loopcore.dmlog import protocol as P
from loopcore.loop import partition_table as PT

__all__ = ["TARGETS", "partition_table", "dmlog_datagrams", "dm_text", "check_reading",
           "answer_checked", "check_still_serving", "parses_or_refuses", "encode_datagrams",
           "encode_image", "DM_SELECTORS"]

# --- partition tables ---------------------------------------------------------------------

# every read the reader makes, at most this many bytes in all (its entry
# array limit, a header and a few sectors per EBR link)
READ_BUDGET = PT._MAX_GPT_ARRAY * 2 + 64 * 65536 + PT._MAX_EMPTY_LINKS * 512 * 300
_SIZE = struct.Struct("<Q")


class CountingDisk:
    """A disk image in memory that counts what is read from it."""

    def __init__(self, image: bytes, size: int) -> None:
        self.image, self.size, self.read_bytes = bytes(image), size, 0

    def read(self, offset: int, length: int) -> bytes:
        assert offset >= 0 and length >= 0
        self.read_bytes += length
        assert self.read_bytes <= READ_BUDGET, "unbounded reading"
        return self.image[offset:offset + length] if offset < self.size else b""


def check_reading(image: bytes, sector: int, size: int) -> str:
    """The reader's contract on ``image`` as a ``size``-byte disk; what it
    found (for hypothesis's statistics)."""
    disk = CountingDisk(image, size)
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    original = PT._reader
    PT._reader = lambda _fd: disk.read
    try:
        table = PT.read_table(fd, size, sector)
    except PartitionTableError:
        return "PartitionTableError"
    finally:
        PT._reader = original
        os.close(fd)
    if table is None:
        return "no table"
    assert table.sector_size == sector
    numbers = [p.number for p in table.partitions]
    assert len(set(numbers)) == len(numbers)
    for part in table.partitions:
        assert 1 <= part.number < PT.MAX_PARTITIONS
        assert part.start >= 0 and part.size > 0
        assert part.start + part.size <= size, part
        # whole sectors: the start in the table's, the size in the kernel's
        # (a partition cut at the end of the disk ends at its capacity)
        assert part.start % sector == 0 and part.size % 512 == 0
    return f"{table.label} with {'some' if table.partitions else 'no'} partitions"


def encode_image(image: bytes, *, sector: int = 512, size: Optional[int] = None) -> bytes:
    """A :func:`partition_table` input: ``image`` as a disk of ``size``
    bytes (its own length when None) with ``sector``-byte sectors."""
    mode = (1 if sector == 4096 else 0) | (2 if size is not None else 0)
    return bytes([mode]) + _SIZE.pack(size or 0)[:6] + bytes(image)


def partition_table(data: bytes) -> None:
    """The partition table reader's contract on one fuzz input."""
    if len(data) < 7:
        return
    sector = 4096 if data[0] & 1 else 512
    image = data[7:]
    size = _SIZE.unpack(data[1:7] + b"\0\0")[0] if data[0] & 2 else len(image)
    check_reading(image, sector, size)


# --- dm-log-userspace datagrams ---------------------------------------------------------------

_LENGTH = struct.Struct("<H")


def encode_datagrams(datagrams: List[bytes]) -> bytes:
    """A :func:`dmlog_datagrams` input holding ``datagrams`` in order."""
    return b"".join(_LENGTH.pack(len(d)) + d for d in datagrams)


def _split_datagrams(data: bytes) -> List[bytes]:
    out, at = [], 0
    while at + _LENGTH.size <= len(data):
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        out.append(data[at:at + length])
        at += length
    return out


def answer_checked(srv: DirtyLogServer, datagram: bytes) -> None:
    """One datagram through the server as it serves (the C request loop's
    parser and answers first, then Python's): answered with a reply the
    kernel's framing rules take (same sequence number, error 0 or
    negative), or dropped."""
    answer = srv._answer_as_served(datagram)
    if answer is None:
        return
    reply = P.parse_reply(answer)       # the kernel's framing rules
    assert reply.error <= 0
    try:
        request: Optional[P.Request] = P.parse_datagram(datagram)
    except P.ProtocolError as exc:
        # malformed, but its header names the request: an error answer
        assert exc.request is not None, "an answer to a datagram with no request in it"
        assert reply.error < 0
        request = exc.request
    assert reply.seq == request.seq


def check_still_serving(srv: DirtyLogServer) -> None:
    """After whatever came before, a fresh log comes up and answers."""
    ctr = b"1024 clustered-core 64"
    for rtype, data in ((P.RT.CTR, ctr), (P.RT.RESUME, b""), (P.RT.GET_REGION_SIZE, b"")):
        answer = srv.handle_datagram(P.build_request(rtype, 7, b"LVM-fresh", 9, data))
        assert answer is not None
        reply = P.parse_reply(answer)
        assert reply.error == 0 and reply.seq == 7
    srv.handle_datagram(P.build_request(P.RT.DTR, 8, b"LVM-fresh", 9))


def _nowhere(device: str) -> str:
    # a disk log's device is never a real one here ("7:0" would be /dev/loop0)
    return "/nonexistent/loopcore-fuzz/log"


def dmlog_datagrams(data: bytes) -> None:
    """The dirty-log server's contract on one fuzz input (a datagram
    sequence)."""
    original = disklog.resolve_device
    disklog.resolve_device = _nowhere   # type: ignore[assignment]
    srv = DirtyLogServer(lock_file=None, state_dir=None)
    try:
        for datagram in _split_datagrams(data):
            answer_checked(srv, datagram)
        check_still_serving(srv)
    finally:
        for log in list(srv._logs.values()):
            log.close()
        disklog.resolve_device = original   # type: ignore[assignment]


# --- dm text ----------------------------------------------------------------------------------

def parses_or_refuses(call: Callable[[], object]) -> Optional[object]:
    """What ``call`` returns, or None when it refuses with a loopcore
    ``ValueError`` (``DmParseError`` is one); anything else propagates."""
    try:
        return call()
    except errors.ValueError:
        return None


#: what the selector byte of a :func:`dm_text` input picks (modulo its length)
DM_SELECTORS: Tuple[Tuple[str, str], ...] = (
    (("table", ""),) + tuple(("params", t) for t in sorted(PARAMS_TYPES))
    + tuple(("status", t) for t in sorted(STATUS_TYPES)))


def _check_params(target_type: str, text: str) -> None:
    params = parses_or_refuses(lambda: dm.parse_params(target_type, text))
    parses_or_refuses(lambda: dm.mask_keys([dm.Target(0, 8, target_type, text)]))
    if params is not None:
        again = dm.parse_params(target_type, str(params))
        assert again == params, (text, str(params))


def _check_table(text: str) -> None:
    table = parses_or_refuses(lambda: dm.Table.parse(text))
    if table is not None:
        assert isinstance(table, dm.Table)
        assert dm.Table.parse(str(table)) == table, text


def dm_text(data: bytes) -> None:
    """The dm text parsers' contract on one fuzz input."""
    if not data:
        return
    kind, target_type = DM_SELECTORS[data[0] % len(DM_SELECTORS)]
    text = data[1:].decode("utf-8", "surrogateescape")
    if kind == "table":
        _check_table(text)
    elif kind == "params":
        _check_params(target_type, text)
    else:
        parses_or_refuses(lambda: dm.parse_status(target_type, text))


#: every target by the name its corpus directory and ``scripts/fuzz`` use
TARGETS: Dict[str, Callable[[bytes], None]] = {
    "partition_table": partition_table,
    "dmlog_datagrams": dmlog_datagrams,
    "dm_text": dm_text,
}
