"""The C request loop against the Python reference: the same request
streams, random (hypothesis) and recorded from the kernel, fed to a server
that answers everything in Python (``c_loop=False``) and to one whose C
loop answers what it owns; every reply must be the same bytes, and after
every request the logs' state (bitmaps, counters, the log device's and
state files' bytes, the legs' flushes) must be the same.

The two run one after the other on the same paths (a CTR's reply carries
the log device's path), the files reset between them.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import struct
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopcore import _c
from loopcore.dmlog import DirtyLogServer
from loopcore.dmlog import log as logmod
from loopcore.dmlog import protocol as P

from properties import examples

RT = P.RT
RECORDING = Path(__file__).parent / "data" / "dmlog-kernel-stream.jsonl.gz"
LOGDEV = "@LOGDEV@"   # the log device's path in a stream, filled in per run
SO_SNDBUFFORCE = 32    # <asm-generic/socket.h> (root: above wmem_max)


class Legs:
    """The leg flusher's stand-in: counts flushes, fails while told to."""

    def __init__(self, world: "World") -> None:
        self.world = world

    def __call__(self) -> None:
        self.world.flushes += 1
        if self.world.legs_fail:
            raise OSError(5, "injected leg flush failure")

    def reset(self) -> None:
        pass


class World:
    """The files and the leg flusher one run sees."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.logdev = tmp / "log.img"
        self.state_dir = tmp / "state"
        self.flushes = 0
        self.legs_fail = False

    def reset(self) -> None:
        self.logdev.write_bytes(bytes(8192))   # room for a log of 200 regions
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.flushes = 0
        self.legs_fail = False

    def files(self) -> Dict[str, bytes]:
        out = {"logdev": self.logdev.read_bytes()}
        if self.state_dir.exists():
            out.update((p.name, p.read_bytes()) for p in sorted(self.state_dir.iterdir()))
        return out


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path)
    monkeypatch.setattr(logmod, "_leg_flusher", lambda devnum: Legs(w))
    return w


def state(srv: DirtyLogServer, world: World) -> Tuple[Any, ...]:
    logs = tuple(sorted(
        (key, bytes(log.clean), bytes(log.sync), bytes(log.pending), log.sync_count,
         log.recovering, log.search, log.low, log.flush_failed, log._was_complete,
         log.state, log.failed, log.halted)
        for key, log in srv._logs.items()))
    return logs, world.files(), world.flushes


#: a step: a datagram, or ("legs", fail) to make the legs' flush fail or work
Step = Any


def run(world: World, steps: Sequence[Step], c_loop: bool) -> List[Tuple[Any, ...]]:
    """Each reply and the state after it, for one server."""
    world.reset()
    srv = DirtyLogServer(lock_file=None, state_dir=str(world.state_dir), c_loop=c_loop)
    out: List[Tuple[Any, ...]] = []
    try:
        for step in steps:
            if isinstance(step, tuple):
                world.legs_fail = step[1]
                continue
            datagram = step.replace(LOGDEV.encode(), str(world.logdev).encode())
            reply = srv._answer_as_served(datagram) if c_loop else srv.handle_datagram(datagram)
            out.append((reply, state(srv, world)))
        srv.persist_all()
        out.append((None, state(srv, world)))
    finally:
        for log in srv._logs.values():
            log.close()
    return out


def assert_same(world: World, steps: Sequence[Step]) -> int:
    """Replies and states equal step by step; the requests the C loop took."""
    reference = run(world, steps, c_loop=False)
    srv_steps = run(world, steps, c_loop=True)
    for i, (ref, got) in enumerate(zip(reference, srv_steps)):
        assert got[0] == ref[0], f"reply {i} differs"
        assert got[1] == ref[1], f"state after request {i} differs"
    assert len(reference) == len(srv_steps)
    return len(steps)


# --- random streams ---------------------------------------------------------------------

#: (uuid, luid, CTR string with {count}); region size 2: {count} regions
LOGS = [
    (b"LVM-core", 1, "{len} clustered-core 2"),
    (b"LVM-core-nosync", 2, "{len} clustered-core 2 nosync"),
    (b"LVM-disk", 3, "{len} clustered-disk " + LOGDEV + " 2"),
    (b"LVM-disk", 4, "{len} clustered-disk " + LOGDEV + " 2 nosync"),
]
IO_PATH = [RT.IN_SYNC, RT.IS_CLEAN, RT.MARK_REGION, RT.CLEAR_REGION, RT.FLUSH,
           RT.GET_RESYNC_WORK, RT.SET_REGION_SYNC, RT.GET_SYNC_COUNT, RT.IS_REMOTE_RECOVERING]
OTHERS = [RT.RESUME, RT.PRESUSPEND, RT.POSTSUSPEND, RT.STATUS_INFO, RT.GET_REGION_SIZE,
          RT.DTR, RT.CTR]


@st.composite
def streams(draw: st.DrawFn) -> List[Step]:
    count = draw(st.integers(1, 80))
    logs = draw(st.lists(st.sampled_from(LOGS), min_size=1, max_size=2,
                         unique_by=lambda log: log[1]))
    seq = 0
    steps: List[Step] = []

    def request(rtype: int, log: Tuple[bytes, int, str], data: bytes = b"",
                version: int = P.REQUEST_VERSION) -> bytes:
        nonlocal seq
        seq += 1
        return P.build_request(rtype, seq, log[0], log[1], data, version=version)

    def ctr(log: Tuple[bytes, int, str]) -> bytes:
        return request(RT.CTR, log, log[2].format(len=2 * count).encode())

    for log in logs:
        steps += [ctr(log), request(RT.RESUME, log)]
    # mostly a few regions (so that marks, clears and syncs meet), some
    # anywhere, some out of range
    region = st.integers(0, min(count - 1, 3)) | st.integers(0, count - 1) \
        | st.integers(count, count + 70)
    for _ in range(draw(st.integers(1, 60))):
        log = draw(st.sampled_from(logs))
        pick = draw(st.integers(0, 99))
        if pick < 3:
            steps.append(("legs", draw(st.booleans())))
            continue
        if pick < 10:
            rtype = draw(st.sampled_from(OTHERS))
            steps.append(ctr(log) if rtype == RT.CTR else request(rtype, log))
            continue
        rtype = draw(st.sampled_from(IO_PATH))
        if rtype in (RT.MARK_REGION, RT.CLEAR_REGION, RT.FLUSH):
            regions = draw(st.lists(region, min_size=0 if rtype == RT.FLUSH else 1,
                                    max_size=6))
            data = struct.pack(f"={len(regions)}Q", *regions)
        elif rtype == RT.SET_REGION_SYNC:
            data = struct.pack("=Qq", draw(region), draw(st.sampled_from([0, 1, -1, 2])))
        elif rtype in (RT.IN_SYNC, RT.IS_CLEAN, RT.IS_REMOTE_RECOVERING):
            data = struct.pack("=Q", draw(region))
        else:
            data = b""
        if draw(st.integers(0, 29)) == 0:
            data = draw(st.binary(max_size=20))     # a payload of the wrong size
        version = draw(st.sampled_from([P.REQUEST_VERSION] * 20 + [0, 1, 2, 4]))
        if draw(st.integers(0, 39)) == 0:
            log = (b"LVM-unknown", 9, "")           # a log the server does not hold
        steps.append(request(rtype, log, data, version))
    return steps


@examples(150)
@given(streams())
def test_random_streams_same_replies_and_state(world, steps):
    assert_same(world, steps)


def test_resync_then_writes_same_replies_and_state(world):
    """A whole resync and write pattern of a disk log and a core log (the
    paths hypothesis may take long to find: completion, pending pages)."""
    steps: List[Step] = []
    seq = 0

    def req(rtype: int, uuid: bytes, luid: int, data: bytes = b"") -> bytes:
        nonlocal seq
        seq += 1
        return P.build_request(rtype, seq, uuid, luid, data)

    for uuid, luid, ctr in ((b"c", 1, b"200 clustered-core 2"),
                            (b"d", 2, f"200 clustered-disk {LOGDEV} 2".encode())):
        steps += [req(RT.CTR, uuid, luid, ctr), req(RT.RESUME, uuid, luid)]
        for _ in range(101):
            steps.append(req(RT.GET_RESYNC_WORK, uuid, luid))
            steps.append(req(RT.GET_RESYNC_WORK, uuid, luid))
            steps.append(req(RT.SET_REGION_SYNC, uuid, luid, struct.pack("=Qq", _ % 100, 1)))
        for r in range(0, 100, 7):
            steps += [req(RT.IN_SYNC, uuid, luid, struct.pack("=Q", r)),
                      req(RT.MARK_REGION, uuid, luid, struct.pack("=Q", r)),
                      req(RT.MARK_REGION, uuid, luid, struct.pack("=Q", r)),
                      req(RT.CLEAR_REGION, uuid, luid, struct.pack("=Q", r)),
                      req(RT.FLUSH, uuid, luid),
                      req(RT.IS_REMOTE_RECOVERING, uuid, luid, struct.pack("=Q", r)),
                      req(RT.GET_SYNC_COUNT, uuid, luid)]
        steps += [req(RT.PRESUSPEND, uuid, luid), req(RT.POSTSUSPEND, uuid, luid),
                  req(RT.RESUME, uuid, luid), req(RT.DTR, uuid, luid)]
    assert_same(world, steps)


# --- the kernel's own stream ------------------------------------------------------------

def recorded_steps() -> List[Step]:
    """The recording (tests/vm/test_dmlog.py's test_record_kernel_stream
    made it from real dm-mirrors): one request a line, its log device's
    path replaced by a placeholder."""
    steps: List[Step] = []
    with gzip.open(RECORDING, "rt") as f:
        for line in f:
            r = json.loads(line)
            data = bytes.fromhex(r["data"])
            steps.append(P.build_request(r["type"], r["seq"], r["uuid"].encode(), r["luid"],
                                         data, version=r["version"]))
    return steps


def test_recorded_kernel_stream_same_replies_and_state(world):
    steps = recorded_steps()
    types = {P.parse_datagram(s).request_type for s in steps}
    # the recording covers the I/O path the C loop answers
    assert {RT.IN_SYNC, RT.MARK_REGION, RT.CLEAR_REGION, RT.FLUSH, RT.GET_RESYNC_WORK,
            RT.SET_REGION_SYNC, RT.GET_SYNC_COUNT} <= types
    assert assert_same(world, steps) == len(steps)


def test_c_loop_answers_the_io_path_itself(world):
    """The C loop takes the requests it owns (else the differential tests
    would compare Python with itself)."""
    world.reset()
    srv = DirtyLogServer(lock_file=None, state_dir=None)
    assert srv._table is not None
    for i, (rtype, data) in enumerate([(RT.CTR, b"64 clustered-core 2"), (RT.RESUME, b""),
                                       (RT.GET_RESYNC_WORK, b""),
                                       (RT.SET_REGION_SYNC, struct.pack("=Qq", 0, 1)),
                                       (RT.IN_SYNC, struct.pack("=Q", 0)),
                                       (RT.MARK_REGION, struct.pack("=Q", 0)),
                                       (RT.CLEAR_REGION, struct.pack("=Q", 0)),
                                       (RT.FLUSH, b""), (RT.GET_SYNC_COUNT, b"")]):
        srv._answer_as_served(P.build_request(rtype, i, b"u", 1, data))
    assert srv._table.answered == 7
    for log in srv._logs.values():
        log.close()


# --- through the socket: batches, hand-offs, stop ----------------------------------------

def test_served_burst_same_replies_as_the_reference(world):
    """A burst sent at once (the C loop receives it in batches) with
    requests for Python among it (CTR, a write to the disk log, an error):
    the same replies as the reference's, request by request."""
    steps: List[bytes] = []
    for i in range(200):
        uuid, luid = (b"c", 1) if i % 2 else (b"d", 2)
        kind = i // 2
        if kind == 0:
            ctr = b"128 clustered-core 2" if uuid == b"c" \
                else f"128 clustered-disk {LOGDEV} 2 nosync".encode()
            steps.append(P.build_request(RT.CTR, i, uuid, luid, ctr))
        elif kind == 1:
            steps.append(P.build_request(RT.RESUME, i, uuid, luid))
        elif kind % 5 == 0:
            steps.append(P.build_request(RT.MARK_REGION, i, uuid, luid,
                                         struct.pack("=Q", kind % 64)))
        elif kind % 7 == 0:
            steps.append(P.build_request(RT.IN_SYNC, i, uuid, luid, struct.pack("=Q", 999)))
        else:
            steps.append(P.build_request(RT.GET_RESYNC_WORK if kind % 2 else RT.IN_SYNC, i,
                                         uuid, luid, struct.pack("=Q", kind % 64)))
    reference = [r for r, _ in run(world, steps, c_loop=False)][:-1]
    world.reset()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    srv = DirtyLogServer(lock_file=None, state_dir=str(world.state_dir), sock=a)
    with srv:
        for s in steps:
            b.send(s.replace(LOGDEV.encode(), str(world.logdev).encode()))
        got: Dict[int, Optional[bytes]] = {}
        while len(got) < len(steps):
            raw = b.recv(4096)
            got[P.parse_reply(raw).seq] = raw
        assert srv._table is not None and srv._table.answered > 50
    a.close()
    b.close()
    assert [got[i] for i in range(len(steps))] == reference


@pytest.mark.root  # SO_SNDBUFFORCE (CAP_NET_ADMIN): the backlog outgrows an unprivileged buffer
def test_a_backlog_is_taken_in_batches_back_to_back_then_python_gets_its_turn(world):
    """Requests queued faster than they are answered (several kernel threads
    waiting at once) are received again after each full batch, with no poll
    and no return to Python between batches; after LC_ULOG_STREAK batches
    the loop returns to Python all the same (its signal handlers, a stop),
    and a smaller batch, which emptied the socket, ends with a return before
    the sleep.  The replies are the reference's, in order."""
    lib = _c.lib
    # a seqpacket pair: no queue limit of 10 datagrams as a datagram pair has
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    srv = DirtyLogServer(lock_file=None, state_dir=None, sock=a)
    ref = DirtyLogServer(lock_file=None, state_dir=None, c_loop=False)
    try:
        setup = [P.build_request(RT.CTR, 1, b"u", 1, b"64 clustered-core 2 nosync"),
                 P.build_request(RT.RESUME, 2, b"u", 1)]
        for server in (srv, ref):
            for d in setup:
                server.handle_datagram(d)
        table = srv._table
        assert table is not None
        full = lib.LC_ULOG_STREAK * lib.LC_ULOG_BATCH
        steps = [P.build_request(RT.IN_SYNC, 3 + i, b"u", 1, struct.pack("=Q", i % 32))
                 for i in range(full + 5)]
        for d in steps:
            b.send(d)
        table.attach(a.fileno(), wake_r, False, 0, False)
        assert table.serve() == lib.LC_ULOG_IDLE
        assert table.answered == full
        assert table.serve() == lib.LC_ULOG_IDLE
        assert table.answered == full + 5
        assert [b.recv(4096) for _ in steps] == [ref.handle_datagram(d) for d in steps]
    finally:
        for server in (srv, ref):
            for log in server._logs.values():
                log.close()
        for fd in (wake_r, wake_w):
            os.close(fd)
        a.close()
        b.close()


def test_stop_is_prompt_while_busy_polling(world):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv = DirtyLogServer(lock_file=None, state_dir=None, sock=a, busy_poll_us=10 ** 9)
    srv.start()
    b.send(P.build_request(RT.CTR, 1, b"u", 1, b"64 clustered-core 2"))
    b.recv(4096)
    b.send(P.build_request(RT.RESUME, 2, b"u", 1))
    b.recv(4096)
    b.send(P.build_request(RT.IN_SYNC, 3, b"u", 1, struct.pack("=Q", 1)))
    assert P.parse_reply(b.recv(4096)).seq == 3
    # the spinning loop sees the wake-up: stop() returns (a hang fails the
    # test after a minute instead of blocking the suite)
    stopper = threading.Thread(target=srv.stop, daemon=True)
    stopper.start()
    stopper.join(60)
    assert not stopper.is_alive() and srv._thread is None
    a.close()
    b.close()


def test_recording_is_small():
    assert os.path.getsize(RECORDING) < 200_000


@pytest.mark.parametrize("c_loop", [True, False])
def test_sigterm_after_traffic_stops_serve_forever(c_loop):
    """serve_forever with a Python signal handler that stops it: a SIGTERM
    that comes once the requests are answered ends the process (the C loop
    goes back to Python before it sleeps, so the handler runs)."""
    import select
    import signal

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            srv = DirtyLogServer(lock_file=None, state_dir=None, sock=a, c_loop=c_loop)
            signal.signal(signal.SIGTERM, lambda *_: srv.stop())
            os.write(ready_w, b"1")
            srv.serve_forever()
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"1"
        b.send(P.build_request(RT.CTR, 1, b"u", 1, b"64 clustered-core 2"))
        b.recv(4096)
        for seq in range(2, 40):
            b.send(P.build_request(RT.IN_SYNC, seq, b"u", 1, struct.pack("=Q", seq % 32)))
            assert P.parse_reply(b.recv(4096)).seq == seq
        os.kill(pid, signal.SIGTERM)
        # woken by the child's exit; a hang fails the test after a minute
        # instead of blocking the suite
        pidfd = os.pidfd_open(pid)
        try:
            assert select.select([pidfd], [], [], 60)[0], "serve_forever ignored SIGTERM"
        finally:
            os.close(pidfd)
        os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(ready_r)
        a.close()
        b.close()
