"""loopcore.dmlog against a fake kernel peer: no kernel module needed.

The peer talks to a real :class:`DirtyLogServer` over a datagram
socketpair, in the kernel's framing (nlmsghdr + cn_msg + dm_ulog_request),
and checks every reply the way the kernel's ``fill_pkg`` does: matched on
the request's seq, ``cn_msg.len == 160 + data_size``, and ``data_size`` no
larger than what the kernel reserved for that request type.  Disk logs are
read back with a reader written here from the format's description, not
with loopcore's.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import tracemalloc
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

import loopcore
from loopcore._c import ffi
from loopcore.dm import mirror
from loopcore.dmlog import DirtyLogServer
from loopcore.dmlog import log as logmod
from loopcore.dmlog import protocol as P
from loopcore.dmlog.disklog import LogStore

from conftest import connector_available

# request types, numbered as in linux/dm-log-userspace.h (typed out here,
# not taken from loopcore)
CTR, DTR, PRESUSPEND, POSTSUSPEND, RESUME, GET_REGION_SIZE, IS_CLEAN, IN_SYNC, FLUSH, \
    MARK, CLEAR, GET_RESYNC_WORK, SET_REGION_SYNC, GET_SYNC_COUNT, STATUS_INFO, \
    STATUS_TABLE, IS_REMOTE_RECOVERING = range(1, 18)

# what the kernel reserves for each reply (dm-log-userspace-base.c)
CAPACITY = {CTR: 128, GET_REGION_SIZE: 8, IS_CLEAN: 8, IN_SYNC: 8, GET_SYNC_COUNT: 8,
            GET_RESYNC_WORK: 16, IS_REMOTE_RECOVERING: 16, STATUS_INFO: 1024,
            STATUS_TABLE: 1024}
FIXED = {GET_REGION_SIZE: 8, IS_CLEAN: 8, IN_SYNC: 8, GET_SYNC_COUNT: 8,
         GET_RESYNC_WORK: 16, IS_REMOTE_RECOVERING: 16}
DATA_PATH = (IS_CLEAN, IN_SYNC, FLUSH, MARK, CLEAR, GET_RESYNC_WORK, SET_REGION_SYNC,
             GET_SYNC_COUNT, STATUS_INFO, IS_REMOTE_RECOVERING)

LEN = 65536          # sectors: a 32 MiB mirror
RS = 1024            # region size: 64 regions
NREG = LEN // RS


def u64(*values: int) -> bytes:
    return struct.pack(f"={len(values)}Q", *values)


def request(rtype: int, seq: int, uuid: bytes, luid: int, data: bytes = b"",
            version: int = 3) -> bytes:
    """A request datagram, framed as the kernel frames it (typed out here)."""
    body = struct.pack("=Q129s3xIiIII", luid, uuid, version, 0, seq, rtype, len(data)) + data
    cn = struct.pack("=IIIIHH", 7, 1, seq, 0, len(body), 0)
    return struct.pack("=IHHII", 16 + 20 + len(body), 3, 0, seq, 0) + cn + body


class Reply:
    def __init__(self, raw: bytes) -> None:
        nl_len, nl_type = struct.unpack_from("=IH", raw, 0)
        idx, val, cn_seq, ack, cn_len, _ = struct.unpack_from("=IIIIHH", raw, 16)
        assert (idx, val, nl_type) == (7, 1, 3)
        assert nl_len == len(raw) and nl_len >= 36 + cn_len
        self.ack = ack
        if cn_len == 0:  # the ACK form
            self.seq, self.error, self.data = cn_seq, -ack, b""
            return
        assert cn_len >= 160, "the kernel drops a reply with 0 < cn_msg.len < 160"
        (self.luid, uuid, self.version, self.error, self.seq, self.rtype,
         dsize) = struct.unpack_from("=Q129s3xIiIII", raw, 36)
        assert cn_len == 160 + dsize, "cn_msg.len must be 160 + data_size"
        self.data = raw[196:196 + dsize]
        assert len(self.data) == dsize


class Kernel:
    """The fake kernel: one global seq counter, replies matched on seq,
    capacities enforced as fill_pkg does (a reply larger than the capacity
    becomes -ENOSPC)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        sock.settimeout(10)

    def send_raw(self, raw: bytes) -> Optional[Reply]:
        self.sock.send(raw)
        try:
            return Reply(self.sock.recv(65536))
        except socket.timeout:
            return None

    def ask(self, rtype: int, data: bytes = b"", uuid: bytes = b"LVM-m1", luid: int = 0xFF00,
            version: int = 3, capacity: Optional[int] = None, seq: Optional[int] = None
            ) -> Reply:
        if seq is None:
            self.seq += 1
            seq = self.seq
        reply = self.send_raw(request(rtype, seq, uuid, luid, data, version))
        assert reply is not None, f"no reply to request type {rtype}"
        assert reply.seq == seq
        cap = CAPACITY.get(rtype, 0) if capacity is None else capacity
        assert len(reply.data) <= cap, \
            f"type {rtype}: data_size {len(reply.data)} > capacity {cap}: -ENOSPC in the kernel"
        if reply.error == 0 and rtype in FIXED:
            assert len(reply.data) == FIXED[rtype]
        return reply

    def ok(self, rtype: int, data: bytes = b"", **kw: object) -> bytes:
        reply = self.ask(rtype, data, **kw)  # type: ignore[arg-type]
        assert reply.error == 0, f"type {rtype}: error {reply.error}"
        return reply.data

    def s64(self, rtype: int, data: bytes = b"", **kw: object) -> int:
        value: int = struct.unpack("=q", self.ok(rtype, data, **kw))[0]
        return value

    def pair(self, rtype: int, data: bytes = b"", **kw: object) -> Tuple[int, int]:
        a, b = struct.unpack("=qQ", self.ok(rtype, data, **kw))
        return a, b

    def load(self, ctr: str, **kw: object) -> bytes:
        """A table load: CTR (no NUL), GET_REGION_SIZE, GET_SYNC_COUNT, RESUME."""
        data = self.ok(CTR, ctr.encode(), **kw)
        assert self.s64(GET_REGION_SIZE, **kw) == int(ctr.split()[-1] if ctr.split()[-1]
                                                     .isdigit() else ctr.split()[-2])
        self.ok(GET_SYNC_COUNT, **kw)
        self.ok(RESUME, **kw)
        return data

    def recover_all(self, **kw: object) -> List[int]:
        """What kmirrord does: get work, copy, SET_REGION_SYNC, CLEAR, FLUSH."""
        done = []
        while True:
            i, r = self.pair(GET_RESYNC_WORK, **kw)
            if not i:
                return done
            self.ok(SET_REGION_SYNC, struct.pack("=Qq", r, 1), **kw)
            self.ok(CLEAR, u64(r), **kw)
            self.ok(FLUSH, **kw)
            done.append(r)


# --- an independent reader and writer of the kernel's disk-log format -------------

def read_disk_log(path: Path) -> Tuple[bytes, int, int, List[int]]:
    """(magic bytes, version, nr_regions, clean bits) as dm-log.c lays them out."""
    raw = path.read_bytes()
    magic = raw[:4]
    version, nr = struct.unpack_from("<IQ", raw, 4)
    bitmap = raw[1024:]
    bits = [(bitmap[r // 8] >> (r % 8)) & 1 for r in range(nr)]
    return magic, version, nr, bits


def write_disk_log(path: Path, clean: List[int], version: int = 2,
                   magic: bytes = b"rRiM") -> None:
    nbytes = (len(clean) + 63) // 64 * 8
    bitmap = bytearray(nbytes)
    for r, bit in enumerate(clean):
        if bit:
            bitmap[r // 8] |= 1 << (r % 8)
    header = magic + struct.pack("<IQ", version, len(clean))
    with open(path, "r+b") as f:
        f.write(header.ljust(1024, b"\xaa") + bytes(bitmap))  # junk in 16..1023, as the kernel


# --- fixtures ---------------------------------------------------------------------------

class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.flushes: List[Optional[int]] = []
        self.servers: List[Tuple[DirtyLogServer, socket.socket]] = []
        self.logdev = tmp / "log.img"
        self.logdev.write_bytes(bytes(1 << 20))

    def server(self, **kw: object) -> Kernel:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        srv = DirtyLogServer(lock_file=str(self.tmp / "lock"), state_dir=str(self.tmp / "state"),
                             sock=a, **kw)  # type: ignore[arg-type]
        srv.start()
        self.servers.append((srv, a))
        self.current = srv
        return Kernel(b)

    def kill(self) -> None:
        """The server's death without a clean stop: no final write."""
        srv, a = self.servers.pop()
        # what kill -9 would leave: nothing persisted at exit
        assert srv._transport is not None and srv._thread is not None
        srv._transport.wake()
        srv._thread.join()
        for log in srv._logs.values():
            log.close()
        srv._logs.clear()
        srv._release()
        a.close()

    def close(self) -> None:
        while self.servers:
            srv, a = self.servers.pop()
            srv.stop()
            a.close()


class SpyLegs:
    """Stands in for the leg flusher: records each flush (and can fail)."""

    def __init__(self, harness: Harness, devnum: Optional[int]) -> None:
        self.harness = harness
        self.devnum = devnum
        self.error: Optional[OSError] = None

    def __call__(self) -> None:
        if self.error is not None:
            raise self.error
        self.harness.flushes.append(self.devnum)

    def reset(self) -> None:
        pass


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    harness = Harness(tmp_path)
    monkeypatch.setattr(logmod, "_leg_flusher", lambda devnum: SpyLegs(harness, devnum))
    yield harness
    harness.close()


def disk_ctr(h: Harness, extra: str = "", rs: int = RS, length: int = LEN) -> str:
    return f"{length} clustered-disk {h.logdev} {rs}{' ' + extra if extra else ''}"


def restarted(h: Harness, ctr: str) -> Kernel:
    """Kill the server (kill -9: no final write), start another (which does
    not know the log yet) and send what the kernel sends it on
    reconnecting: the log's CTR (with its NUL) and RESUME."""
    h.kill()
    k = h.server()
    assert k.ask(IN_SYNC, u64(0)).error == -errno.ESRCH
    k.ok(CTR, ctr.encode() + b"\0", capacity=0)
    k.ok(RESUME)
    return k


def restarted_disk_log(h: Harness) -> Kernel:
    """:func:`restarted` with the disk log's CTR."""
    return restarted(h, disk_ctr(h))


# --- framing and the reply rules ---------------------------------------------------------

def test_request_layout_matches_the_uapi_struct():
    assert P.ULOG_REQUEST.size == 160 and P.HEADER_SIZE == 196 and P.REQUEST_OFFSET == 36
    raw = request(IN_SYNC, 77, b"uuid-x", 0xFF3985F381931600, u64(5))
    assert raw == P.build_request(IN_SYNC, 77, b"uuid-x", 0xFF3985F381931600, u64(5))
    req = P.parse_datagram(raw)
    assert (req.luid, req.uuid, req.version, req.seq, req.request_type, req.data) == \
        (0xFF3985F381931600, b"uuid-x", 3, 77, IN_SYNC, u64(5))
    # only the low 8 bits of request_type count
    raw = bytearray(raw)
    struct.pack_into("=I", raw, 36 + 152, 0x100 | IN_SYNC)
    assert P.parse_datagram(bytes(raw)).request_type == IN_SYNC


def test_every_request_type_and_payload_size(h):
    k = h.server()
    assert k.ok(CTR, disk_ctr(h).encode()) == str(h.logdev).encode() + b"\0"
    assert k.s64(GET_REGION_SIZE) == RS
    assert k.s64(GET_SYNC_COUNT) == 0          # before RESUME, as the kernel asks
    assert k.ok(RESUME) == b""
    assert k.s64(IS_CLEAN, u64(3)) == 0
    assert k.s64(IN_SYNC, u64(3)) == 0
    assert k.pair(GET_RESYNC_WORK) == (1, 0)
    assert k.ok(SET_REGION_SYNC, struct.pack("=Qq", 0, 1)) == b""
    assert k.ok(CLEAR, u64(0)) == b""
    assert k.ok(FLUSH) == b""
    assert k.s64(IS_CLEAN, u64(0)) == 1 and k.s64(IN_SYNC, u64(0)) == 1
    assert k.ok(MARK, u64(*range(32))) == b""  # the largest group the kernel sends
    assert k.s64(IS_CLEAN, u64(0)) == 0 and k.s64(IN_SYNC, u64(0)) == 1
    assert k.ok(FLUSH) == b""
    assert k.ok(CLEAR, u64(*range(32))) == b""
    assert k.s64(GET_SYNC_COUNT) == 1
    assert k.pair(IS_REMOTE_RECOVERING, u64(40)) == (0, 1)  # first region out of sync
    info = k.ok(STATUS_INFO)
    st = os.stat(h.logdev)
    assert info.endswith(b" A\0") and info.startswith(b"3 clustered-disk ")  # NUL included
    assert k.ok(STATUS_TABLE) == f"clustered-disk {h.logdev} {RS} ".encode() + b"\0"
    assert st.st_size == 1 << 20
    assert k.ok(PRESUSPEND) == b"" and k.ok(POSTSUSPEND) == b""
    assert k.ok(RESUME) == b""
    assert k.ok(DTR) == b""
    assert h.current.logs == ()


def test_core_log_and_status(h):
    k = h.server()
    assert k.load(f"{LEN} clustered-core {RS}") == b""   # no device string for a core log
    assert k.ok(STATUS_INFO) == b"1 clustered-core\0"
    (view,) = h.current.logs
    assert (view.uuid, view.luid, view.kind, view.region_size, view.region_count,
            view.sync_count, view.log_device, view.state) == \
        ("LVM-m1", 0xFF00, "clustered-core", RS, NREG, 0, None, "resumed")
    assert k.recover_all() == list(range(NREG))
    assert k.s64(GET_SYNC_COUNT) == NREG
    assert h.current.logs[0].sync_count == NREG
    # K4: the hint is region_count only once nothing is out of sync
    assert k.pair(IS_REMOTE_RECOVERING, u64(3)) == (0, NREG)
    assert h.flushes == []   # a core log never flushes the legs (nothing durable)


def test_reply_rules_exact_data_size_for_void_requests(h):
    """Requests that return nothing are answered with data_size 0 even
    though they carry a payload (an echo would be -ENOSPC)."""
    k = h.server()
    k.load(disk_ctr(h))
    for rtype, data in ((MARK, u64(1, 2, 3)), (CLEAR, u64(1)), (FLUSH, u64(4)),
                        (SET_REGION_SYNC, struct.pack("=Qq", 9, 1)), (PRESUSPEND, b""),
                        (POSTSUSPEND, b""), (RESUME, b"")):
        assert k.ask(rtype, data, capacity=0).data == b""


def test_ack_form():
    raw = P.build_ack(42, errno.EAGAIN)
    reply = Reply(raw)
    assert reply.seq == 42 and reply.error == -errno.EAGAIN and reply.data == b""
    assert len(raw) == 36


def test_mirror_builder_table_lines():
    a, b, c = os.makedev(7, 0), os.makedev(7, 1), os.makedev(7, 2)
    assert str(mirror(0, LEN, [a, b], RS, log="userspace", uuid="LVM-c1")) == \
        "0 65536 mirror userspace 3 LVM-c1 clustered-core 1024 2 7:0 0 7:1 0"
    assert str(mirror(0, LEN, [a, b], RS, log="userspace", uuid="LVM-m1", log_device=c)) == \
        "0 65536 mirror userspace 4 LVM-m1 clustered-disk 7:2 1024 2 7:0 0 7:1 0"
    assert str(mirror(0, LEN, [a, b], RS, log="userspace", uuid="LVM-m1", log_device=c,
                      sync="nosync", handle_errors=True)) == \
        "0 65536 mirror userspace 5 LVM-m1 clustered-disk 7:2 1024 nosync 2 7:0 0 7:1 0 " \
        "1 handle_errors"
    assert str(mirror(0, LEN, [a, b], RS, log="userspace", uuid="LVM-m3",
                      integrated_flush=True)) == \
        "0 65536 mirror userspace 4 LVM-m3 integrated_flush clustered-core 1024 2 7:0 0 7:1 0"
    assert str(mirror(0, LEN, [a, b], RS, log="disk", log_device=c)) == \
        "0 65536 mirror disk 2 7:2 1024 2 7:0 0 7:1 0"
    assert str(mirror(0, LEN, [a, (b, 8)], RS)) == "0 65536 mirror core 1 1024 2 7:0 0 7:1 8"
    assert isinstance(mirror(0, LEN, [a, b], RS), loopcore.dm.Target)
    with pytest.raises(ValueError):   # the reconnect CTR would not fit the kernel's buffer
        mirror(0, LEN, [a, b], RS, log="userspace", uuid="u", log_device="/dev/" + "x" * 320)
    for bad in (dict(region_size=1000), dict(region_size=1), dict(region_size=LEN * 2),
                dict(log="bogus"), dict(log="disk"), dict(log="userspace"),
                dict(log="userspace", uuid="has space"), dict(integrated_flush=True),
                dict(sync="maybe"), dict(keep_log=True), dict(legs=[a])):
        kw = dict(region_size=RS, legs=[a, b])
        kw.update(bad)
        with pytest.raises(loopcore.Error) as exc:
            mirror(0, LEN, **kw)  # type: ignore[arg-type]
        assert isinstance(exc.value, ValueError)


# --- idempotence under resends -------------------------------------------------------------

def test_resends_with_a_new_seq_are_idempotent(h):
    k = h.server()
    k.load(disk_ctr(h))
    # GET_RESYNC_WORK again before SET_REGION_SYNC: the same region
    assert k.pair(GET_RESYNC_WORK) == (1, 0)
    assert k.pair(GET_RESYNC_WORK) == (1, 0)
    k.ok(SET_REGION_SYNC, struct.pack("=Qq", 0, 1))
    k.ok(SET_REGION_SYNC, struct.pack("=Qq", 0, 1))
    assert k.s64(GET_SYNC_COUNT) == 1            # counted once
    assert k.pair(GET_RESYNC_WORK) == (1, 1)
    k.ok(CLEAR, u64(0))
    k.ok(CLEAR, u64(0))
    k.ok(FLUSH)
    k.ok(FLUSH)
    k.ok(MARK, u64(0))
    k.ok(MARK, u64(0))
    assert k.s64(IS_CLEAN, u64(0)) == 0
    # the same seq again (a late duplicate) gets an answer too
    seq = k.seq
    assert k.ask(GET_SYNC_COUNT, seq=seq).error == 0
    # a duplicate CTR with the same string, with or without NUL: success, no data
    assert k.ask(CTR, disk_ctr(h).encode(), capacity=0).data == b""
    assert k.ask(CTR, disk_ctr(h).encode() + b"\0", capacity=0).data == b""
    # ... but other arguments for a log held: refused
    assert k.ask(CTR, disk_ctr(h, "nosync").encode()).error == -errno.EINVAL
    # a second RESUME without suspend (another thread's reconnect) re-reads nothing
    k.ok(RESUME)
    assert k.s64(GET_SYNC_COUNT) == 1 and k.pair(GET_RESYNC_WORK) == (1, 1)


# --- malformed input ------------------------------------------------------------------------

def test_malformed_input_never_stops_the_server(h):
    k = h.server()
    k.load(disk_ctr(h))
    good = request(GET_SYNC_COUNT, 1000, b"LVM-m1", 0xFF00)
    # too short for the headers: dropped (no reply possible), server alive
    for raw in (b"", b"\0" * 10, good[:100], good[:195]):
        k.sock.send(raw)
    # wrong connector id: not ours, dropped
    other = bytearray(good)
    struct.pack_into("=I", other, 16, 1)
    k.sock.send(bytes(other))
    k.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        k.sock.recv(65536)
    k.sock.settimeout(10)
    assert k.s64(GET_SYNC_COUNT) == 0
    # payload shorter than data_size: -EINVAL with the header echoed
    raw = request(MARK, 2000, b"LVM-m1", 0xFF00, u64(1, 2))
    r = k.send_raw(raw[:-8])
    assert r is not None and r.seq == 2000 and r.error == -errno.EINVAL and r.data == b""
    # nlmsg_len larger than the datagram
    bad = bytearray(request(GET_SYNC_COUNT, 2001, b"LVM-m1", 0xFF00))
    struct.pack_into("=I", bad, 0, 4096)
    r = k.send_raw(bytes(bad))
    assert r is not None and r.error == -errno.EINVAL and len(r.data) == 8  # padded
    # oversized payload (the kernel never sends more than 332 bytes)
    r = k.ask(MARK, u64(*range(42)))
    assert r.error == -errno.EINVAL
    # wrong protocol version
    assert k.ask(GET_SYNC_COUNT, version=0).error == -errno.EINVAL
    assert k.ask(GET_SYNC_COUNT, version=99).error == -errno.EINVAL
    # unknown request types
    for rtype in (0, 18, 200):
        assert k.ask(rtype).error == -errno.EINVAL
    # payloads of the wrong shape
    assert k.ask(MARK, b"\1\2\3").error == -errno.EINVAL
    assert k.ask(IN_SYNC, b"").error == -errno.EINVAL
    assert k.ask(IN_SYNC, u64(1, 2)).error == -errno.EINVAL
    assert k.ask(SET_REGION_SYNC, u64(1)).error == -errno.EINVAL
    assert k.ask(IS_REMOTE_RECOVERING, b"x").error == -errno.EINVAL
    # regions out of range
    assert k.ask(MARK, u64(NREG)).error == -errno.EINVAL
    assert k.ask(IN_SYNC, u64(1 << 63)).error == -errno.EINVAL
    # garbage CTRs fail the table load; the other logs are unaffected
    for ctr in (b"", b"65536", b"65536 clustered-core", b"65536 clustered-disk 1024",
                b"65536 bogus-type 1024", b"x clustered-core 1024",
                b"65536 clustered-core 1000", b"65536 clustered-core 1",
                b"65536 clustered-core 131072", b"65536 clustered-core 1024 maybe",
                b"65536 clustered-core 1024 sync nosync", b"\xff\xfe clustered-core 2",
                b"65536 clustered-core 10\x0024", b"0 clustered-core 2",
                b"65536 clustered-disk /nonexistent/dev 1024",
                b"999999999999999999 clustered-core 2"):
        r = k.ask(CTR, ctr, uuid=b"LVM-bad", luid=7)
        assert r.error < 0 and r.data == b"", ctr
    assert k.ask(IN_SYNC, u64(0), uuid=b"LVM-bad", luid=7).error == -errno.ESRCH
    # a datagram from a netlink port other than the kernel's is dropped
    assert h.current.handle_datagram(good, sender=1234) is None
    # and the good log still answers
    assert k.s64(GET_SYNC_COUNT) == 0 and len(h.current.logs) == 1


def test_region_count_is_bounded(h):
    k = h.server()
    # a garbage length must not make the server allocate without bound
    assert k.ask(CTR, f"{1 << 40} clustered-disk {h.logdev} 2".encode()).error == -errno.EINVAL
    assert k.ask(CTR, f"{1 << 33} clustered-core 2".encode()).error == -errno.EINVAL


# --- the disk format ------------------------------------------------------------------------

def test_disk_log_written_in_the_kernels_format(h):
    k = h.server()
    k.load(disk_ctr(h))
    magic, version, nr, bits = read_disk_log(h.logdev)
    assert (magic, version, nr, bits) == (b"rRiM", 2, NREG, [0] * NREG)
    assert h.logdev.read_bytes()[:4] == bytes.fromhex("7252694d")
    k.recover_all()
    assert read_disk_log(h.logdev)[3] == [1] * NREG   # clean bits persisted at each FLUSH
    assert h.flushes and all(f is None for f in h.flushes)  # legs flushed (a file: no devnum)
    k.ok(MARK, u64(5, 63))
    # dirty on disk before MARK was answered
    assert read_disk_log(h.logdev)[3] == [0 if r in (5, 63) else 1 for r in range(NREG)]
    k.ok(CLEAR, u64(5))
    # clean bits wait for the next FLUSH (after the legs' flush)
    assert read_disk_log(h.logdev)[3][5] == 0
    before = len(h.flushes)
    k.ok(FLUSH)
    assert len(h.flushes) == before + 1
    assert read_disk_log(h.logdev)[3] == [0 if r == 63 else 1 for r in range(NREG)]
    # bits past the region count are clear (64-bit padding)
    raw = h.logdev.read_bytes()
    assert len(range(NREG)) % 64 == 0 and raw[1024 + NREG // 8] == 0
    k.ok(PRESUSPEND)
    k.ok(POSTSUSPEND)
    assert read_disk_log(h.logdev)[3][63] == 0


def test_disk_log_written_elsewhere_is_read(h):
    """A log in the kernel's format (as the kernel's disk log writes it)."""
    clean = [1] * NREG
    clean[3] = clean[40] = 0
    write_disk_log(h.logdev, clean)
    k = h.server()
    k.load(disk_ctr(h))
    assert k.s64(GET_SYNC_COUNT) == NREG - 2
    assert [k.s64(IN_SYNC, u64(r)) for r in (2, 3, 40, 63)] == [1, 0, 0, 1]
    assert k.pair(IS_REMOTE_RECOVERING, u64(50)) == (0, 3)
    assert k.recover_all() == [3, 40]
    assert k.s64(GET_SYNC_COUNT) == NREG


def test_disk_log_versions_and_sizes(h):
    k = h.server()
    # version 1 is the same bytes on a little-endian host: read
    write_disk_log(h.logdev, [1] * NREG, version=1)
    k.load(disk_ctr(h), luid=1)
    assert k.s64(GET_SYNC_COUNT, luid=1) == NREG
    assert read_disk_log(h.logdev)[1] == 2     # upgraded on the write-back
    k.ok(POSTSUSPEND, luid=1)
    k.ok(DTR, luid=1)
    # an unknown version or a bad magic: no log, full resync
    for kw in (dict(version=3), dict(magic=b"XXXX")):
        write_disk_log(h.logdev, [1] * NREG, **kw)  # type: ignore[arg-type]
        k.load(disk_ctr(h), luid=2)
        assert k.s64(GET_SYNC_COUNT, luid=2) == 0
        k.ok(POSTSUSPEND, luid=2)
        k.ok(DTR, luid=2)
    # the mirror grew: regions the log did not cover are out of sync ...
    write_disk_log(h.logdev, [1] * 10)
    k.load(disk_ctr(h), luid=3)
    assert k.s64(GET_SYNC_COUNT, luid=3) == 10
    k.ok(POSTSUSPEND, luid=3)
    k.ok(DTR, luid=3)
    # ... and for nosync in sync (nosync/sync discard the header, as the kernel does)
    write_disk_log(h.logdev, [0] * 10)
    k.load(disk_ctr(h, "nosync"), luid=4)
    assert k.s64(GET_SYNC_COUNT, luid=4) == NREG
    k.ok(POSTSUSPEND, luid=4)
    k.ok(DTR, luid=4)
    write_disk_log(h.logdev, [1] * NREG)
    k.load(disk_ctr(h, "sync"), luid=5)
    assert k.s64(GET_SYNC_COUNT, luid=5) == 0
    # an odd region count: 100 regions, bits 100..127 stay clear
    k.ok(POSTSUSPEND, luid=5)
    k.ok(DTR, luid=5)
    k.load(disk_ctr(h, "nosync", length=100 * RS - 5), luid=6)
    assert k.s64(GET_SYNC_COUNT, luid=6) == 100
    magic, version, nr, bits = read_disk_log(h.logdev)
    assert nr == 100 and bits == [1] * 100
    raw = h.logdev.read_bytes()
    assert raw[1024 + 12] == 0x0F and raw[1024 + 13:1024 + 16] == bytes(3)


def test_reconnect_trusts_the_disk_over_nosync(h):
    """A reconnect (CTR with NUL) is the same table: its bits come from the
    log even with nosync; only regions the log does not cover follow nosync."""
    write_disk_log(h.logdev, [0] * 3 + [1] * 7)       # a log of 10 regions
    k = h.server()
    k.ok(CTR, (disk_ctr(h, "nosync") + "\0").encode(), capacity=0)
    k.ok(RESUME)
    assert k.s64(GET_SYNC_COUNT) == NREG - 3
    assert [k.s64(IN_SYNC, u64(r)) for r in (0, 2, 3, 9, 10, 63)] == [0, 0, 1, 1, 1, 1]


def test_nothing_is_written_before_the_first_resume(h):
    clean = [1] * NREG
    clean[5] = 0
    write_disk_log(h.logdev, clean)
    k = h.server()
    k.ok(CTR, disk_ctr(h, "nosync").encode(), luid=9)   # e.g. a reload's inactive table
    k.ok(MARK, u64(1), luid=9)
    k.ok(CLEAR, u64(1), luid=9)
    k.ok(FLUSH, luid=9)
    assert read_disk_log(h.logdev)[3] == clean
    k.ok(DTR, luid=9)
    assert read_disk_log(h.logdev)[3] == clean


def test_integrated_flush_marks_are_applied_and_durable(h):
    k = h.server()
    k.load(disk_ctr(h, "nosync"))
    assert read_disk_log(h.logdev)[3] == [1] * NREG
    k.ok(FLUSH, u64(23, 24))              # marks carried by the FLUSH
    assert [k.s64(IS_CLEAN, u64(r)) for r in (22, 23, 24)] == [1, 0, 0]
    assert read_disk_log(h.logdev)[3][23:25] == [0, 0]
    k.ok(CLEAR, u64(23, 24))
    k.ok(FLUSH)                            # the bare FLUSH 3 s later
    assert read_disk_log(h.logdev)[3][23:25] == [1, 1]


def test_flush_failure_of_the_legs_makes_everything_dirty(h):
    k = h.server()
    k.load(disk_ctr(h, "nosync"))
    legs = h.current._logs[(b"LVM-m1", 0xFF00)]._legs
    assert isinstance(legs, SpyLegs)
    legs.error = OSError(errno.EIO, "leg flush failed")
    k.ok(MARK, u64(1))
    k.ok(CLEAR, u64(1))
    k.ok(FLUSH)
    assert read_disk_log(h.logdev)[3] == [0] * NREG
    k.ok(CLEAR, u64(2))   # refused silently until the next resume, as dm-log.c does
    assert k.s64(IS_CLEAN, u64(2)) == 0


def test_set_region_sync_zero_is_persisted_dirty(h):
    k = h.server()
    k.load(disk_ctr(h, "nosync"))
    k.ok(SET_REGION_SYNC, struct.pack("=Qq", 7, 0))   # a failed leg write
    assert k.s64(IN_SYNC, u64(7)) == 0 and k.s64(GET_SYNC_COUNT) == NREG - 1
    assert read_disk_log(h.logdev)[3][7] == 0
    assert k.pair(IS_REMOTE_RECOVERING, u64(9)) == (0, 7)


# --- restart semantics ------------------------------------------------------------------------

def test_unknown_logs_get_padded_esrch(h):
    k = h.server()
    for rtype in DATA_PATH + (PRESUSPEND, POSTSUSPEND, RESUME, GET_REGION_SIZE):
        data = {SET_REGION_SYNC: struct.pack("=Qq", 1, 1), IN_SYNC: u64(1), IS_CLEAN: u64(1),
                IS_REMOTE_RECOVERING: u64(1), MARK: u64(1), CLEAR: u64(1)}.get(rtype, b"")
        r = k.ask(rtype, data, uuid=b"gone", luid=1)
        assert r.error == -errno.ESRCH
        # padded to the fixed reply size, so that the capacity the kernel
        # keeps for its retry after reconnecting stays intact
        assert len(r.data) == FIXED.get(rtype, 0), rtype
    assert k.ask(DTR, uuid=b"gone", luid=1).error == 0


def test_restart_resumes_a_disk_log_from_its_persisted_bits(h):
    k = h.server()
    k.load(disk_ctr(h, "sync"))
    for _ in range(20):
        i, r = k.pair(GET_RESYNC_WORK)
        k.ok(SET_REGION_SYNC, struct.pack("=Qq", r, 1))
        k.ok(CLEAR, u64(r))
        k.ok(FLUSH)
    k.ok(MARK, u64(2))       # a write in flight at the kill
    i, r = k.pair(GET_RESYNC_WORK)
    assert (i, r) == (1, 20)
    h.kill()                  # no POSTSUSPEND, no final write
    k = h.server()
    # the kernel's retried request: ESRCH; then its reconnect: CTR with NUL
    # (capacity 0), RESUME, and the request again
    assert k.ask(GET_RESYNC_WORK).error == -errno.ESRCH
    assert k.ask(CTR, disk_ctr(h, "sync").encode() + b"\0", capacity=0).data == b""
    assert k.ask(CTR, disk_ctr(h, "sync").encode() + b"\0", capacity=0).error == 0  # thread 2
    k.ok(RESUME)
    # the persisted bits, not "sync" (this is the same table, not a new load)
    assert k.s64(GET_SYNC_COUNT) == 19   # region 2 was dirty
    assert k.s64(IN_SYNC, u64(2)) == 0 and k.s64(IN_SYNC, u64(5)) == 1
    assert k.recover_all() == [2] + list(range(20, NREG))
    assert k.s64(GET_SYNC_COUNT) == NREG


def test_a_mark_on_a_page_with_waiting_clean_bits_flushes_the_legs_first(h):
    """A MARK writes its page before it is answered; clean bits waiting on
    that page for the legs' flush may go with it only after that flush."""
    k = h.server()
    k.load(disk_ctr(h, "nosync"))
    k.ok(MARK, u64(5))
    k.ok(CLEAR, u64(5))                   # clean in memory, waits for a flush
    before = len(h.flushes)
    k.ok(MARK, u64(9))                    # the same page of the log
    assert len(h.flushes) == before + 1   # the legs first ...
    bits = read_disk_log(h.logdev)[3]
    assert (bits[5], bits[9]) == (1, 0)   # ... then both bits on disk
    k.ok(FLUSH)                           # nothing waits any more
    assert len(h.flushes) == before + 1


def test_divergence_regression_clean_bits_are_never_held_back(h):
    """Full sync, kill, restart: every region must read in sync, or the
    kernel (which stops asking for resync work after a full sync) writes
    to the primary leg only."""
    k = h.server()
    k.load(disk_ctr(h))
    k.recover_all()
    assert k.pair(IS_REMOTE_RECOVERING, u64(0)) == (0, NREG)
    # writes after the sync: mark, flush, (write), clear, flush
    for r in (3, 17, 50):
        k.ok(MARK, u64(r))
        k.ok(FLUSH)
        k.ok(CLEAR, u64(r))
        k.ok(FLUSH)
    k = restarted_disk_log(h)
    assert [k.s64(IN_SYNC, u64(r)) for r in range(NREG)] == [1] * NREG
    assert k.s64(GET_SYNC_COUNT) == NREG


def test_restart_of_a_core_log_uses_its_state_file(h):
    k = h.server()
    k.load(f"{LEN} clustered-core {RS}")
    k.recover_all()
    k.ok(MARK, u64(9))
    k = restarted(h, f"{LEN} clustered-core {RS}")
    # region 9 dirty from the state file; in sync, as the sync was full
    # (see test_restart_after_a_full_sync_keeps_written_regions_in_sync)
    assert k.s64(IS_CLEAN, u64(9)) == 0 and k.s64(IS_CLEAN, u64(8)) == 1
    assert k.s64(GET_SYNC_COUNT) == NREG and k.s64(IN_SYNC, u64(9)) == 1
    # a new table load (no NUL) starts fresh, and DTR removes the file
    k.ok(CTR, f"{LEN} clustered-core {RS}".encode(), luid=2)
    k.ok(RESUME, luid=2)
    assert k.s64(GET_SYNC_COUNT, luid=2) == 0
    k.ok(DTR)
    k.ok(DTR, luid=2)
    assert os.listdir(h.tmp / "state") == []


def test_restart_after_a_full_sync_keeps_written_regions_in_sync(h):
    """Full sync, a write in flight (its MARK on disk, no CLEAR yet), kill,
    restart: the region must read in sync.  The kernel stopped asking for
    resync work once told that all is in sync (its in_sync_hint), so an
    out-of-sync answer would never be recovered and the next write to the
    region would reach the primary leg only (tests/vm/test_crash_points_vm.py
    found it: a resync stuck at 127/128)."""
    k = h.server()
    k.load(disk_ctr(h))
    k.recover_all()
    assert k.pair(IS_REMOTE_RECOVERING, u64(0)) == (0, NREG)   # the kernel's hint: all
    k.ok(MARK, u64(17))
    k.ok(FLUSH)
    k = restarted_disk_log(h)
    assert k.s64(GET_SYNC_COUNT) == NREG and k.s64(IN_SYNC, u64(17)) == 1
    assert k.s64(IS_CLEAN, u64(17)) == 0 and k.pair(GET_RESYNC_WORK) == (0, 0)
    k.ok(CLEAR, u64(17))
    k.ok(FLUSH)
    assert read_disk_log(h.logdev)[3] == [1] * NREG
    # a region out of sync again (a failed leg write): a restart keeps it so
    k.ok(SET_REGION_SYNC, struct.pack("=Qq", 5, 0))
    k = restarted_disk_log(h)
    assert k.s64(GET_SYNC_COUNT) == NREG - 1 and k.s64(IN_SYNC, u64(5)) == 0
    # a new table (a CTR without NUL, same luid) does not inherit the marker
    k.ok(DTR)
    k.load(disk_ctr(h))
    assert k.s64(GET_SYNC_COUNT) == NREG - 1
    k = restarted_disk_log(h)
    assert k.s64(GET_SYNC_COUNT) == NREG - 1 and k.s64(IN_SYNC, u64(5)) == 0


def test_a_written_region_out_of_sync_after_a_full_sync_survives_a_restart(h):
    """SET_REGION_SYNC(0) of a region a write has dirtied (its clean bit
    already 0, nothing to write) ends the full sync: the serving loop hands
    it to Python, which drops the synced marker, so a restarted server
    still takes the region for out of sync (the C loop alone would answer
    it and leave the marker, and the region would read in sync)."""
    k = h.server()
    k.load(disk_ctr(h))
    k.recover_all()
    k.ok(MARK, u64(9))
    k.ok(FLUSH)
    k.ok(SET_REGION_SYNC, struct.pack("=Qq", 9, 0))   # a failed leg write
    k = restarted_disk_log(h)
    assert k.s64(GET_SYNC_COUNT) == NREG - 1 and k.s64(IN_SYNC, u64(9)) == 0


def test_table_reload_new_luid_resumes_from_persisted_bits(h):
    k = h.server()
    k.load(disk_ctr(h))
    for _ in range(10):
        i, r = k.pair(GET_RESYNC_WORK)
        k.ok(SET_REGION_SYNC, struct.pack("=Qq", r, 1))
        k.ok(CLEAR, u64(r))      # no FLUSH yet: POSTSUSPEND must write them
    new = dict(luid=0xAA00)
    k.ok(CTR, disk_ctr(h).encode(), **new)
    k.ok(GET_REGION_SIZE, **new)
    k.ok(PRESUSPEND)
    k.ok(POSTSUSPEND)
    k.ok(RESUME, **new)
    assert k.s64(GET_SYNC_COUNT, **new) == 10
    k.ok(DTR)                    # the old table goes after the new one resumed
    assert k.pair(GET_RESYNC_WORK, **new) == (1, 10)
    assert read_disk_log(h.logdev)[3][:11] == [1] * 10 + [0]


def test_stop_writes_every_log(h):
    k = h.server()
    k.load(disk_ctr(h))
    i, r = k.pair(GET_RESYNC_WORK)
    k.ok(SET_REGION_SYNC, struct.pack("=Qq", r, 1))
    k.ok(CLEAR, u64(r))
    assert read_disk_log(h.logdev)[3][0] == 0
    srv, a = h.servers.pop()
    srv.stop()
    a.close()
    assert read_disk_log(h.logdev)[3][0] == 1


def test_one_server_per_lock_file(h):
    h.server()
    with pytest.raises(loopcore.Error) as exc:
        DirtyLogServer(lock_file=str(h.tmp / "lock"), sock=socket.socket(socket.AF_UNIX,
                       socket.SOCK_DGRAM)).start()
    assert isinstance(exc.value, OSError) and exc.value.errno == errno.EBUSY
    assert str(os.getpid()) in str(exc.value)


def test_context_manager_and_serve_forever(h):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with DirtyLogServer(lock_file=None, state_dir=None, sock=a) as srv:
        assert srv.subscribed.is_set()
        k = Kernel(b)
        k.load(f"{LEN} clustered-core {RS}")
        assert len(srv.logs) == 1
    assert not srv.subscribed.is_set()
    import threading
    srv = DirtyLogServer(lock_file=None, state_dir=None, sock=a)
    t = threading.Thread(target=srv.serve_forever)
    t.start()
    assert srv.subscribed.wait(5)
    assert Kernel(b).ask(GET_SYNC_COUNT, uuid=b"x", luid=1).error == -errno.ESRCH
    srv.stop()
    t.join(5)
    assert not t.is_alive()
    a.close()
    b.close()


# --- compact memory -----------------------------------------------------------------------------

@pytest.mark.parametrize("state_file", [False, True], ids=["no-store", "state-file"])
def test_two_to_the_twenty_regions_cost_under_300_kib(h, tmp_path, state_file):
    """One owner of the bitmaps (C memory): Python keeps no copy of them,
    for the state file either."""
    args = logmod.parse_ctr(f"{1 << 21} clustered-core 2".encode())
    assert args.region_count == 1 << 20
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = LogStore(str(tmp_path / "core.log"), args.region_count, durable=False,
                         create=True) if state_file else None
        log = logmod.DirtyLog(b"big", 1, args, store=store)
        log.resume()
        for r in range(0, 1 << 20, 4096):
            log.mark([r])
            log.clear([r])
        log.get_resync_work()
        log.flush()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # and the state in C memory, which tracemalloc does not see
    used += sum(view.nbytes for view in (log.clean, log.sync, log.pending)) \
        + ffi.sizeof(log.c[0])
    assert used < 300 * 1024, f"{used} bytes for 2^20 regions"
    assert log.first_out_of_sync() == 0
    log.close()


def test_large_log_resync_search_finds_the_one_region_out_of_sync(h):
    """2^20 regions, one out of sync near the end: resync work and the
    remote-recovering hint both find it, and once it is in sync neither
    hands out anything.  (How fast: benchmarks/dmlog_bench.py.)"""
    k = h.server()
    n = 1 << 20
    k.load(f"{2 * n} clustered-core 2 nosync", uuid=b"big")
    k.ok(SET_REGION_SYNC, struct.pack("=Qq", n - 3, 0), uuid=b"big")
    assert k.pair(GET_RESYNC_WORK, uuid=b"big") == (1, n - 3)
    assert k.pair(IS_REMOTE_RECOVERING, u64(5), uuid=b"big") == (0, n - 3)
    k.ok(SET_REGION_SYNC, struct.pack("=Qq", n - 3, 1), uuid=b"big")
    assert k.pair(GET_RESYNC_WORK, uuid=b"big") == (0, 0)
    assert k.pair(IS_REMOTE_RECOVERING, u64(5), uuid=b"big") == (0, n)
    assert k.s64(GET_SYNC_COUNT, uuid=b"big") == n


# --- the real socket and the command -----------------------------------------------------------

@pytest.mark.root
def test_netlink_subscription_joins_group_7(tmp_path):
    if os.geteuid() != 0 or not connector_available():
        pytest.skip("needs root and the netlink connector")
    with DirtyLogServer(lock_file=str(tmp_path / "lock"), state_dir=None) as srv:
        assert srv._transport is not None
        sock = srv._transport.sock
        assert sock is not None
        # bind(0,0) + ADD_MEMBERSHIP 7: the group mask is bit 6 (group 7),
        # not 7 (which would be groups 1 to 3)
        assert sock.getsockname()[1] == 1 << 6
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 8 << 20


def test_dispatch_answers_every_request_of_a_burst(h):
    """The dispatch path answers each of 2000 requests once, with its own
    seq and the right answer.  (How many a second: benchmarks/dmlog_bench.py.)"""
    srv = DirtyLogServer(lock_file=None, state_dir=None, sock=socket.socket(socket.AF_UNIX,
                         socket.SOCK_DGRAM))
    srv.handle_datagram(request(CTR, 1, b"u", 1, f"{LEN} clustered-core {RS} nosync".encode()))
    srv.handle_datagram(request(RESUME, 2, b"u", 1))
    srv.handle_datagram(request(SET_REGION_SYNC, 3, b"u", 1, struct.pack("=Qq", 5, 0)))
    answers = {}
    for seq in range(10, 2010):
        raw = srv.handle_datagram(request(IN_SYNC, seq, b"u", 1, u64(seq % NREG)))
        assert raw is not None
        reply = Reply(raw)
        assert reply.seq not in answers and reply.error == 0
        answers[reply.seq] = struct.unpack("=q", reply.data)[0]
    assert sorted(answers) == list(range(10, 2010))
    assert all(v == (0 if seq % NREG == 5 else 1) for seq, v in answers.items())


def test_example_unit_ships_in_the_sdist():
    root = Path(__file__).resolve().parents[1]
    unit = (root / "contrib" / "loopcore-dmlog.service").read_text()
    assert "Type=notify" in unit and "loopcore.dmlog serve" in unit
    assert "graft contrib" in (root / "MANIFEST.in").read_text().splitlines()


