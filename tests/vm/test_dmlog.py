"""loopcore.dmlog against the real kernel (inside the qemu guest): dm-mirrors
with a ``userspace`` dirty log served by ``python -m loopcore.dmlog serve``
over loop devices.

The server runs as a subprocess so that a test can ``kill -9`` it.  The
legs are compared through their backing files (after ``sync`` and
``drop_caches``): reading ``/dev/loopN`` could return its own stale page
cache, since the mirror's writes bypass it.  A mirror's ``status`` needs
the server (GET_SYNC_COUNT and STATUS_INFO round trips), so no test asks
for it while the server is down.

Sizes: 32 MiB legs, region size 1024 sectors = 64 regions (256 regions
where a resync must last long enough to be interrupted).
"""
from __future__ import annotations

import itertools
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import pytest

from loopcore import dm
from loopcore.dm import mirror

from vmhelpers import PREFIX, Loop, dmsetup, read_dm, write_dm

S = 512
LEG = 32 << 20
SECTORS = LEG // S
RS = 1024
NREG = SECTORS // RS
LOCK = "/run/lct-dmlog.lock"   # one server at a time, whatever a test left behind
_count = itertools.count()


def random_fill() -> bytes:
    return os.urandom(1 << 20)


# --- the server as a process ------------------------------------------------------------

class Daemon:
    """``python -m loopcore.dmlog serve`` subprocesses, one at a time.  Its
    stderr comes through a pipe, copied line by line to a log file, so a
    test can wait for what the server says (:meth:`wait_for`)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.logs: List[Path] = []
        self.state = tmp / "dmlog-state"
        self._said = threading.Condition()
        self._reader: Optional[threading.Thread] = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, verbose: bool = False, timeout: float = 120) -> None:
        """Start a server and wait for its READY=1 on $NOTIFY_SOCKET (sent
        once it has joined the connector group and written its pidfile;
        Python under TCG takes seconds to start)."""
        assert not self.running
        n = len(self.logs)
        pidfile = self.tmp / f"dmlog{n}.pid"
        log = self.tmp / f"dmlog{n}.log"
        self.logs.append(log)
        argv = [sys.executable, "-m", "loopcore.dmlog", "serve", "--pidfile", str(pidfile),
                "--lock-file", LOCK, "--state-dir", str(self.state)] + (["-v"] if verbose else [])
        address = f"\0lct-dmlog-notify-{os.getpid()}-{n}"   # abstract: no path length limit
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(address)
            env = dict(os.environ, NOTIFY_SOCKET="@" + address[1:])
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         env=env)
            self._reader = threading.Thread(target=self._copy, args=(self.proc, log))
            self._reader.start()
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                notify.settimeout(1)   # the longest a dead server goes unnoticed
                try:
                    if notify.recv(4096).startswith(b"READY=1"):
                        assert pidfile.read_text().strip() == str(self.proc.pid)
                        return
                except socket.timeout:
                    continue
        self.kill9()
        pytest.fail(f"the server did not come up: {log.read_text()}")

    def _copy(self, proc: "subprocess.Popen[bytes]", log: Path) -> None:
        assert proc.stderr is not None
        with open(log, "wb") as out:
            for line in proc.stderr:
                out.write(line)
                out.flush()
                with self._said:
                    self._said.notify_all()
        with self._said:
            self._said.notify_all()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        """Wait until ``condition()`` holds, checking it each time the
        server says something."""
        with self._said:
            assert self._said.wait_for(condition, timeout), self.text()[-3000:]

    def _reaped(self) -> None:
        if self._reader is not None:
            self._reader.join()
            self._reader = None
        self.proc = None

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._reaped()

    def stop(self) -> int:
        """SIGTERM; the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reaped()
        return rc

    def text(self, which: int = -1) -> str:
        return self.logs[which].read_text(errors="replace")


class KernelLog:
    """The kernel's messages from now on (``/dev/kmsg``, read as they come)."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.lseek(self.fd, 0, os.SEEK_END)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                assert left > 0, f"the kernel did not say {text!r}"
                if not select.select([self.fd], [], [], left)[0]:
                    continue
                try:
                    record = os.read(self.fd, 8192)
                except (BlockingIOError, BrokenPipeError):  # EPIPE: records overwritten
                    continue
                if text.encode() in record:
                    return
        finally:
            os.close(self.fd)


class Mirrors:
    """Mirrors made by a test; removed (with a server up, which a userspace
    log needs to suspend) after it."""

    def __init__(self, mapper: dm.DeviceMapper, daemon: Daemon) -> None:
        self.mapper = mapper
        self.daemon = daemon
        self.made: List[str] = []

    def create(self, target: dm.Target, tag: str = "mirror") -> str:
        name = f"{PREFIX}{tag}-{next(_count)}"
        self.made.append(name)
        self.mapper.create(name, table=[target])
        return name

    def remove(self, name: str) -> None:
        self.mapper.remove(name, retries=25, retry_delay=0.2)
        self.made.remove(name)

    def cleanup(self) -> None:
        present = {d.name for d in self.mapper.list_devices()}
        if any(n in present for n in self.made) and not self.daemon.running:
            self.daemon.start()
        for name in self.made:
            if name in present:
                self.mapper.remove(name, retries=25, retry_delay=0.2)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    if d.running:
        assert d.stop() == 0, d.text()


@pytest.fixture
def mirrors(mapper: dm.DeviceMapper, daemon: Daemon,
            loops: Callable[..., Loop]) -> Iterator[Mirrors]:
    # depends on loops and daemon: removed before the server stops and
    # before the loop devices are detached
    ms = Mirrors(mapper, daemon)
    yield ms
    ms.cleanup()


# --- helpers ---------------------------------------------------------------------------

def sync_state(mapper: dm.DeviceMapper, name: str) -> Tuple[int, int, str, str]:
    """(in sync, total, health chars, log status) from the mirror's status:
    ``2 7:0 7:1 15/64 1 AA 3 clustered-disk 7:2 A``."""
    fields = mapper.status(name)[0].params.split()
    nlegs = int(fields[0])
    done, total = map(int, fields[1 + nlegs].split("/"))
    health = fields[3 + nlegs]
    return done, total, health, " ".join(fields[4 + nlegs:])


def wait_synced(mapper: dm.DeviceMapper, name: str, timeout: float = 180) -> Tuple[int, str]:
    """Wait for the mirror's resync to complete: it raises a dm event then
    (dm-raid1's do_recovery), so this sleeps in poll() on the control fd,
    armed for the next event of any device, and looks again at each."""
    deadline = time.monotonic() + timeout
    while True:
        mapper.arm_poll()   # before the look: an event after it wakes the poll
        done, total, health, log = sync_state(mapper, name)
        if done == total:
            return total, log
        left = deadline - time.monotonic()
        assert left > 0, f"{name}: resync stuck at {done}/{total}"
        select.select([mapper.fileno()], [], [], left)


def wait_progress(mapper: dm.DeviceMapper, name: str, at_least: int,
                  timeout: float = 120) -> int:
    """Wait until ``at_least`` regions are in sync.  Resync progress raises
    no event (only its end does): this looks at the status in a loop."""
    deadline = time.monotonic() + timeout
    while True:
        done = sync_state(mapper, name)[0]
        if done >= at_least:
            return done
        assert time.monotonic() < deadline, f"{name}: no resync progress ({done})"
        time.sleep(0.02)


def legs_identical(*loops: Loop) -> bool:
    """Compare backing files after sync + drop_caches (not /dev/loopN)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    first = loops[0].backing.read_bytes()
    return all(loop.backing.read_bytes() == first for loop in loops[1:])


def dmesg_since(mark: int) -> str:
    out = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    return out[mark:]


def dmesg_mark() -> int:
    return len(subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout)


def devstr(loop: Loop) -> str:
    return f"{os.major(loop.devnum)}:{os.minor(loop.devnum)}"


# --- resync -----------------------------------------------------------------------------

def test_core_and_disk_log_mirrors_resync_at_once(mapper, daemon, mirrors, loops):
    """Two mirrors served at once, one with each log type: both reach N/N,
    the legs end identical, status and table read as the kernel prints them."""
    a, b = loops(LEG, random_fill()), loops(LEG)
    c, d, log = loops(LEG, random_fill()), loops(LEG), loops(1 << 20)
    daemon.start()
    core = mirrors.create(mirror(0, SECTORS, [a, b], RS, log="userspace", uuid="lct-core"))
    disk = mirrors.create(mirror(0, SECTORS, [c, d], RS, log="userspace", uuid="lct-disk",
                                 log_device=log))
    assert wait_synced(mapper, core) == (NREG, "1 clustered-core")
    assert wait_synced(mapper, disk) == (NREG, f"3 clustered-disk {devstr(log)} A")
    assert sync_state(mapper, disk)[2] == "AA"
    assert str(mapper.table(disk)[0]) == (
        f"0 {SECTORS} mirror userspace 4 lct-disk clustered-disk {devstr(log)} {RS} "
        f"2 {devstr(c)} 0 {devstr(d)} 0")
    # the CTR reply named the log device: the kernel holds it
    assert log.devnum in mapper.deps(disk)
    assert legs_identical(a, b) and legs_identical(c, d)
    # dmsetup reads the same
    out = dmsetup("status", disk).stdout
    assert f" {NREG}/{NREG} 1 AA 3 clustered-disk {devstr(log)} A" in out
    # the server's view
    text = daemon.text()
    assert text.count("resync finished") == 2 and "log created" in text
    mirrors.remove(core)
    mirrors.remove(disk)
    assert daemon.stop() == 0
    assert "log removed" in daemon.text()


def test_writes_during_resync(mapper, daemon, mirrors, loops):
    a, b, log = loops(LEG, random_fill()), loops(LEG), loops(1 << 20)
    daemon.start()
    name = mirrors.create(mirror(0, SECTORS, [a, b], RS, log="userspace", uuid="lct-w",
                                 log_device=log))
    writes = [(off, os.urandom(64 << 10)) for off in
              (0, 5 << 20, (17 << 20) + 4096, LEG - (64 << 10), 9 << 20)]
    for off, data in writes:
        write_dm(name, off, data)
    wait_synced(mapper, name)
    for off, data in writes:
        assert read_dm(name, off, len(data)) == data
    assert legs_identical(a, b)
    for off, data in writes:
        assert b.backing.read_bytes()[off:off + len(data)] == data


# --- restarts ---------------------------------------------------------------------------

def _kill_mid_resync(mapper: dm.DeviceMapper, daemon: Daemon, mirrors: Mirrors,
                     loops: Callable[..., Loop]) -> Tuple[str, Loop, Loop, Loop, int]:
    a, b, log = loops(LEG, random_fill()), loops(LEG), loops(1 << 20)
    daemon.start()
    rs = RS // 4   # 256 regions: a resync that lasts long enough to interrupt
    name = mirrors.create(mirror(0, SECTORS, [a, b], rs, log="userspace", uuid="lct-kill",
                                 log_device=log))
    done = wait_progress(mapper, name, 8)
    daemon.kill9()
    assert done < SECTORS // rs - 16, "the resync finished before the kill"
    return name, a, b, log, done


def _check_recovered(mapper: dm.DeviceMapper, daemon: Daemon, name: str, a: Loop, b: Loop,
                     mark: int) -> None:
    total, _ = wait_synced(mapper, name)
    out = dmsetup("status", name).stdout
    assert f" {total}/{total} 1 AA " in out, out
    assert legs_identical(a, b)
    text = daemon.text()
    assert "restart recovery" in text, text
    m = re.search(r"resumed, (\d+)/(\d+) regions in sync \(from ", text)
    assert m and 0 < int(m[1]) < int(m[2]), text  # resumed from the persisted bits
    kernel = dmesg_since(mark)
    assert "Insufficient space" not in kernel, kernel   # no -ENOSPC on the reconnect path
    assert "Reconnected to userspace log server" in kernel, kernel


def test_kill9_mid_resync_restart_finishes(mapper, daemon, mirrors, loops):
    """kill -9; the kernel's request times out (15 s) and finds no server;
    a server started later gets its reconnect (CTR with NUL, RESUME) and the
    retried request, and the resync finishes from the persisted bits."""
    mark = dmesg_mark()
    kernel = KernelLog()
    name, a, b, log, done = _kill_mid_resync(mapper, daemon, mirrors, loops)
    kernel.wait_for("Userspace log server not found", timeout=120)  # after its 15 s timeout
    daemon.start()
    _check_recovered(mapper, daemon, name, a, b, mark)


def test_kill9_new_server_up_before_the_resend(mapper, daemon, mirrors, loops):
    """The new server is already listening when the kernel resends: it answers
    the unknown log with -ESRCH padded to the reply size, the kernel
    reconnects, and its retry succeeds."""
    mark = dmesg_mark()
    name, a, b, log, done = _kill_mid_resync(mapper, daemon, mirrors, loops)
    daemon.start()
    _check_recovered(mapper, daemon, name, a, b, mark)
    # Two ways in, both ending in the reconnect checked above: the kill
    # caught a request in flight (the kernel times it out after 15 s), or
    # it fell between two requests and the next one reached the new server,
    # which answered the log it does not hold with -ESRCH.
    assert "Request timed out" in dmesg_since(mark) \
        or "-ESRCH (the kernel reconnects)" in daemon.text(), daemon.text()


def test_divergence_regression(mapper, daemon, mirrors, loops):
    """Full sync, kill -9, restart, write: the restarted server must answer
    IN_SYNC 1 (it reads clean bits persisted at each FLUSH, not only at
    suspend), or the kernel writes to the primary leg only and never
    resyncs (it stopped asking after the full sync)."""
    a, b, log = loops(LEG, random_fill()), loops(LEG), loops(1 << 20)
    daemon.start()
    name = mirrors.create(mirror(0, SECTORS, [a, b], RS, log="userspace", uuid="lct-div",
                                 log_device=log))
    wait_synced(mapper, name)
    daemon.kill9()
    daemon.start()
    data = os.urandom(512 << 10)
    write_dm(name, 7 << 20, data)
    write_dm(name, 20 << 20, data)
    assert legs_identical(a, b)
    assert b.backing.read_bytes()[7 << 20:(7 << 20) + len(data)] == data
    done, total, health, _ = sync_state(mapper, name)
    assert (done, total, health) == (NREG, NREG, "AA")
    assert "restart recovery" in daemon.text()


def test_table_reload_resumes_from_persisted_bits(mapper, daemon, mirrors, loops):
    a, b, log = loops(LEG, random_fill()), loops(LEG), loops(1 << 20)
    daemon.start()
    target = mirror(0, SECTORS, [a, b], RS // 4, log="userspace", uuid="lct-reload",
                    log_device=log)
    name = mirrors.create(target)
    wait_progress(mapper, name, 4)
    mapper.load(name, [target])        # CTR of a new luid, same log device
    mapper.resume(name)                # old: PRESUSPEND, POSTSUSPEND; new: RESUME; old: DTR
    before = sync_state(mapper, name)[0]
    daemon.wait_for(lambda: len(re.findall(r"resumed, ", daemon.text())) >= 2)
    resumed = re.findall(r"resumed, (\d+)/(\d+) regions", daemon.text())
    assert len(resumed) == 2 and 4 <= int(resumed[1][0]) <= before, daemon.text()
    wait_synced(mapper, name)
    assert legs_identical(a, b)
    # and a reload after the full sync needs no resync at all
    mapper.load(name, [target])
    mapper.resume(name)
    assert sync_state(mapper, name)[:2] == (SECTORS // (RS // 4),) * 2


# --- the disk format ------------------------------------------------------------------------

def test_kernel_disk_log_and_ours_read_each_other(mapper, daemon, mirrors, loops):
    a, b, log = loops(LEG, random_fill()), loops(LEG), loops(1 << 20)
    daemon.start()
    ours = mirror(0, SECTORS, [a, b], RS, log="userspace", uuid="lct-fmt", log_device=log)
    kernels = mirror(0, SECTORS, [a, b], RS, log="disk", log_device=log)
    name = mirrors.create(ours)
    wait_synced(mapper, name)
    mirrors.remove(name)
    raw = log.backing.read_bytes()
    assert raw[:16] == bytes.fromhex("7252694d02000000") + NREG.to_bytes(8, "little")
    assert raw[1024:1024 + NREG // 8] == b"\xff" * (NREG // 8)
    # the kernel's disk log takes our log as it is: in sync at once
    name = mirrors.create(kernels, "kdisk")
    assert sync_state(mapper, name)[:2] == (NREG, NREG)
    # a log the kernel wrote itself (a "sync" load: it resyncs everything
    # and writes its bitmap): ours reads N/N from it
    mirrors.remove(name)
    name = mirrors.create(mirror(0, SECTORS, [a, b], RS, log="disk", log_device=log,
                                 sync="sync"), "kdisk")
    wait_synced(mapper, name)
    mirrors.remove(name)
    name = mirrors.create(ours)
    assert sync_state(mapper, name)[:2] == (NREG, NREG)
    # the line was written before the RESUME was answered; its copy from
    # the server's stderr to the log file comes when the test's reader
    # thread gets to it
    daemon.wait_for(lambda: re.search(rf"resumed, {NREG}/{NREG} regions",
                                      daemon.text()) is not None)
    # a kernel log with dirty bits: clear half the bitmap as the kernel
    # would leave it after a crash, then ours resyncs exactly those
    mirrors.remove(name)
    with open(log.backing, "r+b") as f:
        f.seek(1024)
        f.write(b"\x00" * (NREG // 16))
    os.sync()
    name = mirrors.create(ours)
    assert sync_state(mapper, name)[0] >= NREG // 2
    wait_synced(mapper, name)
    assert legs_identical(a, b)


# --- integrated flush, bad CTRs ---------------------------------------------------------

def test_integrated_flush_marks_arrive_in_flush(mapper, daemon, mirrors, loops):
    a, b, log = loops(LEG, random_fill()), loops(LEG), loops(1 << 20)
    daemon.start(verbose=True)
    name = mirrors.create(mirror(0, SECTORS, [a, b], RS, log="userspace", uuid="lct-if",
                                 log_device=log, integrated_flush=True))
    wait_synced(mapper, name)
    assert "integrated_flush" in str(mapper.table(name))
    data = os.urandom(256 << 10)
    write_dm(name, 3 << 20, data)
    assert legs_identical(a, b)
    text = daemon.text()
    # FLUSH requests carried the marks (a non-empty payload), no MARK_REGION
    assert re.search(r"FLUSH seq \d+ data [0-9a-f]{16}", text), text[-3000:]
    assert "MARK_REGION" not in text
    # the kernel sends the bare FLUSH of the clears some seconds later:
    # the clean bits are on disk once the server has answered it
    daemon.wait_for(lambda: log.backing.read_bytes()[1024:1024 + NREG // 8]
                    == b"\xff" * (NREG // 8))


def test_bad_ctr_fails_the_table_load(mapper, daemon, mirrors, loops):
    """The server answers a bad CTR with an error ("Userspace log server
    failed to create log"), the table load fails, and it keeps serving."""
    a, b = loops(LEG), loops(LEG)
    daemon.start()
    mark = dmesg_mark()
    for log_args in ("3 lct-bad clustered-core 1000",          # not a power of two
                     "3 lct-bad clustered-bogus 1024",         # unknown log type
                     "4 lct-bad clustered-core 1024 maybe",    # unknown argument
                     "4 lct-bad clustered-disk /dev/nonexistent 1024"):
        table = f"userspace {log_args} 2 {devstr(a)} 0 {devstr(b)} 0"
        name = f"{PREFIX}badctr-{next(_count)}"
        with pytest.raises(OSError):
            mapper.create(name, table=[dm.Target(0, SECTORS, "mirror", table)])
        assert name not in {d.name for d in mapper.list_devices()}
    assert dmesg_since(mark).count("Userspace log server failed to create log") == 4
    assert daemon.text().count("answered -E") == 4
    good = mirrors.create(mirror(0, SECTORS, [a, b], RS, log="userspace", uuid="lct-ok",
                                 sync="nosync"))
    assert sync_state(mapper, good)[:2] == (NREG, NREG)


# --- the kernel's request stream, recorded --------------------------------------------

def test_record_kernel_stream(mapper, loops, tmp_path, request):
    """Serve a core-log and a disk-log mirror through their resync, writes,
    a suspend and resume and their removal with the Python reference,
    recording every request; the recording (one request a line, the log
    device's word of a CTR replaced by ``@LOGDEV@``) goes next to the
    test report as ``dmlog-kernel-stream.jsonl.gz``: committed as
    tests/data/, the host's differential test replays it through the C
    loop and the reference."""
    import gzip
    import json

    from loopcore.dmlog import DirtyLogServer
    from loopcore.dmlog import protocol as P

    a, b, c, d = loops(LEG, random_fill()), loops(LEG), loops(LEG, random_fill()), loops(LEG)
    log = loops(1 << 20)
    srv = DirtyLogServer(lock_file=LOCK, state_dir=str(tmp_path / "state"), c_loop=False)
    recorded: List[bytes] = []
    handle = srv.handle_datagram

    def record(data: bytes, sender: int = 0) -> Optional[bytes]:
        recorded.append(data)
        return handle(data, sender)

    srv.handle_datagram = record  # type: ignore[method-assign]
    names = [f"{PREFIX}rec-core", f"{PREFIX}rec-disk"]
    srv.start()
    try:
        mapper.create(names[0], table=[mirror(0, SECTORS, [a, b], RS, log="userspace",
                                              uuid="lct-rec-core")])
        mapper.create(names[1], table=[mirror(0, SECTORS, [c, d], RS, log="userspace",
                                              uuid="lct-rec-disk", log_device=log)])
        for name in names:
            wait_synced(mapper, name)
        for name in names:
            for off in (0, 5 << 20, (17 << 20) + 4096, LEG - (64 << 10), 5 << 20):
                write_dm(name, off, os.urandom(64 << 10))
            mapper.suspend(name)
            mapper.resume(name)
            write_dm(name, 9 << 20, os.urandom(4096))
        assert legs_identical(a, b) and legs_identical(c, d)
    finally:
        for name in names:
            if name in {dev.name for dev in mapper.list_devices()}:
                mapper.remove(name, retries=25, retry_delay=0.2)
        srv.stop()
    lines = []
    for raw in recorded:
        req = P.parse_datagram(raw)
        data = req.data
        if req.request_type == P.RT.CTR:
            words = data.split(b" ")
            if b"clustered-disk" in words:
                words[words.index(b"clustered-disk") + 1] = b"@LOGDEV@"
            data = b" ".join(words)
        lines.append(json.dumps({"type": req.request_type, "seq": req.seq,
                                 "uuid": req.uuid.decode(), "luid": req.luid,
                                 "version": req.version, "data": data.hex()}))
    types = {json.loads(line)["type"] for line in lines}
    assert {P.RT.CTR, P.RT.RESUME, P.RT.IN_SYNC, P.RT.MARK_REGION, P.RT.CLEAR_REGION,
            P.RT.FLUSH, P.RT.GET_RESYNC_WORK, P.RT.SET_REGION_SYNC, P.RT.DTR} <= types, types
    xml = request.config.option.xmlpath
    out = Path(xml).parent if xml else tmp_path
    with gzip.open(out / "dmlog-kernel-stream.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
