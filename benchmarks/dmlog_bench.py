"""loopcore.dmlog measured: the dm-log-userspace server side by side with the
kernel's own dirty logs.

Two parts:

- ``--host`` (anywhere, no device-mapper): round trips per second against
  a fake kernel peer (a datagram socketpair; one request in flight, as a
  kmirrord thread waits for each answer, and 16 in flight, as several
  kernel threads wait at once), the C request loop and the Python
  reference side by side in interleaved rounds, each sleeping between
  requests and busy-polling; the reference's dispatch alone without
  sockets; and the server's memory with 2^20 regions (RSS growth of a
  fresh process, and tracemalloc's count of the log's allocations).  The
  16 in flight are kept by a peer that receives and sends with
  ``recvmmsg``/``sendmmsg`` (the kernel's cost per request is small too):
  a peer making one Python socket call per request, also measured, bounds
  the C loop's figure by its own cost;
- ``--vm`` (where device-mapper is: in the test VM through
  ``benchmarks/dmlog-bench``): the resync of a 256 MiB two-leg mirror with
  the kernel's ``core`` log and with ``userspace ... clustered-core`` (and
  ``disk`` vs ``clustered-disk``), on the same loop-device legs, then random
  4 KiB O_DIRECT writes through the synced mirror (IOPS).  Rounds are
  interleaved (A B C D, B C D A, ...) so drift cancels; the server runs as
  its own process (``python -m loopcore.dmlog serve``), as in production.

Prints a table and writes every sample as JSON (``--json``).
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any, Callable, Dict, List, Optional, Tuple

S = 512


# --- host: requests/s and memory ------------------------------------------------------------

def _request(rtype: int, seq: int, uuid: bytes, luid: int, data: bytes = b"") -> bytes:
    from loopcore.dmlog import protocol as P
    return P.build_request(rtype, seq, uuid, luid, data)


#: a fake kernel peer with this many requests in flight (the kernel has
#: several threads waiting for answers at once: kmirrord and each writer's
#: IN_SYNC), besides the one-at-a-time ping-pong
WINDOW = 16


#: the servers compared: (label, c_loop, busy_poll_us)
HOST_SERVERS = (("C loop", True, 0), ("Python reference", False, 0),
                ("C loop, busy-poll 1 ms", True, 1000),
                ("Python reference, busy-poll 1 ms", False, 1000))


def _serve_in_child(sock: socket.socket, c_loop: bool, busy_poll_us: int) -> int:
    """Fork a server on ``sock`` (its own process, as the kernel is: no GIL
    shared with the peer); its pid."""
    from loopcore.dmlog import DirtyLogServer
    pid = os.fork()
    if pid == 0:  # the server
        try:
            server = DirtyLogServer(lock_file=None, state_dir=None, sock=sock, c_loop=c_loop,
                                    busy_poll_us=busy_poll_us)
            signal.signal(signal.SIGTERM, lambda *_: server.stop())
            server.serve_forever()
        finally:
            os._exit(0)
    return pid


#: requests per burst of the burst peer: under the socketpair's queue of
#: 10 datagrams (net.unix.max_dgram_qlen), so neither side blocks on a full one
BURST = 8


class _MmsgPeer:
    """A fake kernel that sends with ``sendmmsg`` and receives with
    ``recvmmsg`` (libc through ctypes), cycling through ``requests``: a
    peer whose own cost per request is small next to the server's, as the
    kernel's is, so that the figure is the server's.  :meth:`burst` sends
    ``BURST`` requests and waits for every reply; :meth:`window` keeps
    ``WINDOW`` requests in flight, sending a new one for each reply as it
    comes (the replies taken together, the new requests sent together)."""

    def __init__(self, sock: socket.socket, requests: List[bytes]) -> None:
        import ctypes

        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        class MsgHdr(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                        ("iov", ctypes.POINTER(IoVec)), ("iovlen", ctypes.c_size_t),
                        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                        ("flags", ctypes.c_int)]

        class MMsgHdr(ctypes.Structure):
            _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]

        ring = len(requests)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = sock.fileno()
        self._keep = [ctypes.create_string_buffer(r, len(r)) for r in requests] + \
            [ctypes.create_string_buffer(4096) for _ in range(WINDOW)]
        self._iov = (IoVec * (ring + WINDOW))(*[IoVec(ctypes.addressof(b), len(b))
                                                for b in self._keep])
        self._send = (MMsgHdr * ring)()
        self._recv = (MMsgHdr * WINDOW)()
        for i in range(ring):
            self._send[i].hdr.iov = ctypes.pointer(self._iov[i])
            self._send[i].hdr.iovlen = 1
        for i in range(WINDOW):
            self._recv[i].hdr.iov = ctypes.pointer(self._iov[ring + i])
            self._recv[i].hdr.iovlen = 1
        self._ring = ring
        self._next = 0          # the next request of the ring to send
        self._in_flight = 0
        self._size = ctypes.sizeof(MMsgHdr)
        self._ctypes = ctypes

    def _send_next(self, count: int) -> None:
        ctypes = self._ctypes
        while count:
            n = min(count, self._ring - self._next)
            sent = self._libc.sendmmsg(self._fd, ctypes.byref(self._send,
                                                              self._next * self._size), n, 0)
            if sent <= 0:
                raise OSError(ctypes.get_errno(), "sendmmsg")
            self._next = (self._next + sent) % self._ring
            self._in_flight += sent
            count -= sent

    def _receive(self) -> int:
        n = self._libc.recvmmsg(self._fd, self._ctypes.byref(self._recv, 0),
                                min(self._in_flight, WINDOW), 0x10000, None)  # MSG_WAITFORONE
        if n <= 0:
            raise OSError(self._ctypes.get_errno(), "recvmmsg")
        self._in_flight -= n
        return int(n)

    def burst(self) -> int:
        """One burst sent and every reply to it received: ``BURST``."""
        self._send_next(BURST)
        while self._in_flight:
            self._receive()
        return BURST

    def window(self) -> int:
        """The replies that came, each replaced by a new request in flight:
        how many (the first call fills the window)."""
        if self._in_flight < WINDOW:
            self._send_next(WINDOW - self._in_flight)
        n = self._receive()
        self._send_next(n)
        return n

    def drain(self) -> None:
        """Every reply still in flight received."""
        while self._in_flight:
            self._receive()


def _cpu_ns(pid: int) -> int:
    """The CPU time of ``pid``'s main thread (where the server serves), in ns."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def _peer_rates(b: socket.socket, seconds: float,
                server_pid: int) -> Dict[str, Tuple[float, float]]:
    """(round trips/s, the server's CPU ns per request) of each mix against
    the server at the other end of ``b``.  The CPU time is what a loaded
    machine does not distort: the rate also counts the waits for a CPU."""
    from loopcore.dmlog import protocol as P
    seq = 0

    def ask(rtype: int, data: bytes = b"", uuid: bytes = b"bench") -> bytes:
        nonlocal seq
        seq += 1
        b.send(_request(rtype, seq, uuid, 1, data))
        return b.recv(4096)

    ask(P.RT.CTR, b"524288 clustered-core 1024")
    ask(P.RT.RESUME)
    in_sync = [_request(P.RT.IN_SYNC, i, b"bench", 1, struct.pack("=Q", i % 512))
               for i in range(4096)]

    def window(i: int) -> int:
        # WINDOW requests in flight, a new one sent as each answer comes,
        # one recv and one send of Python's socket per request
        if i == 0:
            for r in in_sync[:WINDOW]:
                b.send(r)
        b.recv(4096)
        b.send(in_sync[(i + WINDOW) % len(in_sync)])
        return 1

    def window_drain() -> None:
        for _ in range(WINDOW):
            b.recv(4096)

    def ask_count(per: int, fn: Callable[[int], object]) -> Callable[[int], int]:
        def run(i: int) -> int:
            fn(i)
            return per
        return run

    peer = _MmsgPeer(b, in_sync)
    # each mix: the requests it answers per call, and what drains it after
    mixes: Dict[str, Tuple[Callable[[int], int], Callable[[], None]]] = {
        "IN_SYNC (core log)": (ask_count(1, lambda i: ask(
            P.RT.IN_SYNC, struct.pack("=Q", i % 512))), lambda: None),
        "GET_SYNC_COUNT": (ask_count(1, lambda i: ask(P.RT.GET_SYNC_COUNT)), lambda: None),
        "MARK, CLEAR, FLUSH (core log)": (ask_count(3, lambda i: (
            ask(P.RT.MARK_REGION, struct.pack("=Q", i % 512)),
            ask(P.RT.CLEAR_REGION, struct.pack("=Q", i % 512)),
            ask(P.RT.FLUSH))), lambda: None),
        # the figure of the server under several waiting kernel threads: a
        # peer that Python's per-call cost does not bound (sendmmsg/recvmmsg)
        f"IN_SYNC (core log), {WINDOW} in flight": (lambda i: peer.window(), peer.drain),
        # the same window kept by Python's socket calls, one request at a time:
        # bound by the peer's own cost more than by the server's
        f"IN_SYNC (core log), {WINDOW} in flight, Python socket peer": (
            window, window_drain),
        f"IN_SYNC (core log), bursts of {BURST} (sendmmsg/recvmmsg peer)":
            (lambda i: peer.burst(), lambda: None),
    }
    out: Dict[str, Tuple[float, float]] = {}
    for label, (fn, drain) in mixes.items():
        n, calls, cpu0, t0 = 0, 0, _cpu_ns(server_pid), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += fn(calls)
            calls += 1
        elapsed = time.perf_counter() - t0
        drain()
        out[label] = (n / elapsed, (_cpu_ns(server_pid) - cpu0) / n)
    return out


def host_requests_per_second(seconds: float, rounds: int = 3) -> Dict[str, float]:
    """Round trips against a fake kernel peer (a datagram socketpair) for
    the C request loop and the Python reference, side by side in one run
    (medians of ``rounds`` interleaved rounds), sleeping between bursts
    and busy-polling; and the reference's dispatch function alone."""
    from loopcore.dmlog import DirtyLogServer
    from loopcore.dmlog import protocol as P

    out: Dict[str, float] = {}
    samples: Dict[str, Dict[str, List[float]]] = {impl: {} for impl, _, _ in HOST_SERVERS}
    cpu: Dict[str, Dict[str, List[float]]] = {impl: {} for impl, _, _ in HOST_SERVERS}
    for r in range(rounds):
        # interleaved, each round starting elsewhere, so drift cancels
        for impl, c_loop, spin in HOST_SERVERS[r % 2:] + HOST_SERVERS[:r % 2]:
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            pid = _serve_in_child(a, c_loop, spin)
            a.close()
            try:
                for label, (rate, ns) in _peer_rates(b, seconds, pid).items():
                    samples[impl].setdefault(label, []).append(rate)
                    cpu[impl].setdefault(label, []).append(ns)
            finally:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
                b.close()
    rates = {impl: {label: statistics.median(v) for label, v in by.items()}
             for impl, by in samples.items()}
    cpu_ns = {impl: {label: statistics.median(v) for label, v in by.items()}
              for impl, by in cpu.items()}
    for impl, by in rates.items():
        for label, rate in by.items():
            out[f"round trips/s, {impl}: {label}"] = rate
            out[f"server CPU ns per request, {impl}: {label}"] = cpu_ns[impl][label]
    # each C loop against the reference served the same way (the next entry)
    for (c_impl, _, _), (py_impl, _, _) in zip(HOST_SERVERS[::2], HOST_SERVERS[1::2]):
        for label in rates[c_impl]:
            out[f"{c_impl} / {py_impl}: {label}"] = \
                rates[c_impl][label] / rates[py_impl][label]
            out[f"server CPU per request, {py_impl} / {c_impl}: {label}"] = \
                cpu_ns[py_impl][label] / cpu_ns[c_impl][label]
    # the reference's dispatch function alone (parse, state, reply), no socket
    server = DirtyLogServer(lock_file=None, state_dir=None, c_loop=False,
                            sock=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    server.handle_datagram(_request(P.RT.CTR, 1, b"u", 1, b"524288 clustered-core 1024"))
    server.handle_datagram(_request(P.RT.RESUME, 2, b"u", 1))
    raw = [_request(P.RT.IN_SYNC, 3, b"u", 1, struct.pack("=Q", i)) for i in range(512)]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for r in raw:
            server.handle_datagram(r)
        n += len(raw)
    out["dispatch only/s (Python reference): IN_SYNC"] = n / (time.perf_counter() - t0)
    return out


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def host_memory_child() -> None:
    """In a fresh process, for a 2^20-region core log (with no store, and
    with a state file, as a server with ``--state-dir`` keeps it) and disk
    log (nosync: every byte of both bitmaps written, so that RSS counts
    them all): tracemalloc's retained and peak bytes plus the state in C
    memory, and the growth of RSS.  A small log made first pays what the
    process pays once (the logging module, imported by the first log line):
    what is counted is what each log keeps."""
    from loopcore._c import ffi
    from loopcore.dmlog import log as logmod
    from loopcore.dmlog.disklog import LogStore
    result: Dict[str, float] = {}
    keep = []
    with tempfile.TemporaryDirectory() as tmp:
        disk, state = os.path.join(tmp, "disk.img"), os.path.join(tmp, "core.log")
        with open(disk, "wb") as f:
            f.truncate(1 << 20)
        warm = logmod.DirtyLog(b"warm-up", 1, logmod.parse_ctr(b"1024 clustered-core 2"),
                               store=LogStore(os.path.join(tmp, "warm.log"), 512,
                                              durable=False, create=True))
        warm.resume()
        warm.persist_all()
        warm.close()
        for kind, ctr, store_of in (
                ("core log", f"{1 << 21} clustered-core 2 nosync", lambda n: None),
                ("core log with a state file", f"{1 << 21} clustered-core 2 nosync",
                 lambda n: LogStore(state, n, durable=False, create=True)),
                ("disk log", f"{1 << 21} clustered-disk {disk} 2 nosync",
                 lambda n: LogStore(disk, n))):
            args = logmod.parse_ctr(ctr.encode())
            before = _rss_kib()
            tracemalloc.start()
            log = logmod.DirtyLog(kind.encode(), 1, args, store=store_of(args.region_count))
            log.resume()
            for r in range(0, 1 << 20, 997):
                log.mark([r])
                log.clear([r])
            log.flush()
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            # the state in C memory (bitmaps, counters), which tracemalloc does not see
            c_bytes = sum(v.nbytes for v in (log.clean, log.sync, log.pending)) \
                + ffi.sizeof(log.c[0])
            current, peak = current + c_bytes, peak + c_bytes
            keep.append(log)
            result[f"{kind}, 2^20 regions: retained KiB (tracemalloc + C state)"] = \
                current / 1024
            result[f"{kind}, 2^20 regions: peak KiB (tracemalloc + C state)"] = peak / 1024
            result[f"{kind}, 2^20 regions: RSS growth KiB"] = _rss_kib() - before
        for log in keep:
            log.close()
    result["RSS KiB, whole process"] = _rss_kib()
    print(json.dumps(result))


def host_memory() -> Dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--memory-child"], capture_output=True,
                         text=True, check=True)
    values: Dict[str, float] = json.loads(out.stdout)
    return values


# --- VM: resync and IOPS ----------------------------------------------------------------------

class Server:
    """``python -m loopcore.dmlog serve`` as its own process."""

    def __init__(self, tmp: str, busy_poll_us: int = 0, c_loop: bool = True,
                 state_files: bool = True) -> None:
        self.busy_poll_us = busy_poll_us
        self.c_loop = c_loop
        self.state_files = state_files
        pidfile = os.path.join(tmp, "dmlog.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        self.err = open(os.path.join(tmp, "dmlog.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loopcore.dmlog", "serve", "--pidfile", pidfile,
             "--lock-file", os.path.join(tmp, "lock"),
             "--state-dir", os.path.join(tmp, "st") if state_files else "",
             "--busy-poll-us", str(busy_poll_us)] + ([] if c_loop else ["--reference-loop"]),
            stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err)
        deadline = time.monotonic() + 120
        while not os.path.exists(pidfile):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the dmlog server did not start")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """user + system time the server has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.err.close()


def _in_sync(mapper: Any, name: str) -> Tuple[int, int]:
    fields = mapper.status(name)[0].params.split()
    done, total = fields[1 + int(fields[0])].split("/")
    return int(done), int(total)


def _wait_synced(mapper: Any, name: str) -> None:
    event = 0
    while True:
        done, total = _in_sync(mapper, name)
        if done == total:
            return
        # the mirror raises an event when its resync finishes
        event = mapper.wait(name, event).event_nr


def _random_writes(path: str, size: int, seconds: float, max_writes: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    buf.write(os.urandom(4096))
    rng = random.Random(1)
    n, t0 = 0, time.perf_counter()
    try:
        while n < max_writes and time.perf_counter() - t0 < seconds:
            os.pwritev(fd, [buf], rng.randrange(size // 4096) * 4096)
            n += 1
    finally:
        os.close(fd)
        buf.close()
    return n / (time.perf_counter() - t0)


def vm_bench(size_mib: int, region_sectors: int, rounds: int, write_seconds: float,
             variants: List[str]) -> Dict[str, Any]:
    import loopcore
    from loopcore import dm
    from loopcore.dm import mirror

    tmp = tempfile.mkdtemp(dir="/dev/shm")
    size = size_mib << 20
    sectors = size // S
    paths = {n: os.path.join(tmp, f"{n}.img") for n in ("a", "b", "log")}
    with open(paths["a"], "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    for n, sz in (("b", size), ("log", 1 << 20)):
        with open(paths[n], "wb") as f:
            f.truncate(sz)
    # buffered loop devices on tmpfs (tmpfs has no O_DIRECT)
    a, b, log = (loopcore.attach(paths[n], direct_io=False) for n in ("a", "b", "log"))
    server: Optional[Server] = None
    mapper = dm.DeviceMapper()
    core = mirror(0, sectors, [a, b], region_sectors, log="userspace", uuid="bench-core")
    disk = mirror(0, sectors, [a, b], region_sectors, log="userspace", uuid="bench-disk",
                  log_device=log, sync="sync")
    # variant -> (table, (busy_poll_us, C loop, state files) of the server, or None: no
    # server needed)
    tables: Dict[str, Tuple[Any, Optional[Tuple[int, bool, bool]]]] = {
        "kernel core": (mirror(0, sectors, [a, b], region_sectors, log="core"), None),
        "userspace clustered-core": (core, (0, True, True)),
        "userspace clustered-core, Python reference": (core, (0, False, True)),
        # a core log with no state file: no write for Python to make
        "userspace clustered-core, no state file": (core, (0, True, False)),
        "userspace clustered-core, busy-poll 2 ms": (core, (2000, True, True)),
        # marks ride on the FLUSH: one round trip before a write instead of two
        "userspace clustered-core, integrated_flush": (
            mirror(0, sectors, [a, b], region_sectors, log="userspace", uuid="bench-if",
                   integrated_flush=True), (0, True, True)),
        "kernel disk": (mirror(0, sectors, [a, b], region_sectors, log="disk",
                               log_device=log, sync="sync"), None),
        "userspace clustered-disk": (disk, (0, True, True)),
        "userspace clustered-disk, Python reference": (disk, (0, False, True)),
        "userspace clustered-disk, busy-poll 2 ms": (disk, (2000, True, True)),
    }
    order = [v for v in tables if v in variants]
    resync: Dict[str, List[float]] = {v: [] for v in order}
    iops: Dict[str, List[float]] = {v: [] for v in order}
    cpu: Dict[str, List[float]] = {v: [] for v in order}
    try:
        for r in range(rounds):
            for v in order[r % len(order):] + order[:r % len(order)]:
                table, spin = tables[v]
                if spin is not None and (server is None
                                         or (server.busy_poll_us, server.c_loop,
                                             server.state_files) != spin):
                    if server is not None:
                        server.stop()
                    server = Server(tmp, *spin)
                name = "lcbench-dmlog"
                os.sync()
                cpu0 = server.cpu_seconds() if spin is not None and server else 0.0
                t0 = time.perf_counter()
                mapper.create(name, table=[table])
                try:
                    _wait_synced(mapper, name)
                    resync[v].append(time.perf_counter() - t0)
                    iops[v].append(_random_writes(os.path.join(dm.DEV_DIR, name), size,
                                                  write_seconds, 100000))
                finally:
                    mapper.remove(name, retries=25, retry_delay=0.2)
                spent = time.perf_counter() - t0
                if spin is not None and server is not None:
                    cpu[v].append((server.cpu_seconds() - cpu0) / spent)
                print(f"  round {r + 1} {v}: resync {resync[v][-1]:.2f} s, "
                      f"{iops[v][-1]:.0f} IOPS"
                      + (f", server CPU {cpu[v][-1]:.0%}" if cpu[v] else ""), flush=True)
    finally:
        if server is not None:
            server.stop()
        mapper.close()
        for dev in (a, b, log):
            dev.detach()
        for p in paths.values():
            os.unlink(p)
        for rest in os.listdir(tmp):
            p = os.path.join(tmp, rest)
            if os.path.isfile(p):
                os.unlink(p)
        try:
            os.rmdir(tmp)
        except OSError:
            pass
    return {"size_mib": size_mib, "region_sectors": region_sectors,
            "regions": -(-sectors // region_sectors), "rounds": rounds,
            "cpus": os.cpu_count(), "resync_s": resync, "iops": iops,
            "server_cpu_share": cpu}


def _summary(res: Dict[str, Any]) -> List[str]:
    lines = [f"resync of a {res['size_mib']} MiB two-leg mirror, {res['regions']} regions of "
             f"{res['region_sectors']} sectors, {res['cpus']} CPUs (median of {res['rounds']}):"]
    med = {v: statistics.median(s) for v, s in res["resync_s"].items() if s}
    iops = {v: statistics.median(s) for v, s in res["iops"].items() if s}
    cpu = {v: statistics.median(s) for v, s in res.get("server_cpu_share", {}).items() if s}
    pairs = [(v, "kernel core" if "core" in v else "kernel disk") for v in med
             if v.startswith("userspace")]
    for ours, theirs in pairs:
        if theirs in med:
            lines.append(f"  {ours}: {med[ours]:.2f} s vs {theirs}: {med[theirs]:.2f} s "
                         f"= {med[ours] / med[theirs]:.2f}x the time")
    lines.append("random 4 KiB O_DIRECT writes after sync (one in flight):")
    for ours, theirs in pairs:
        if theirs in iops:
            lines.append(f"  {ours}: {iops[ours]:.0f} IOPS vs {theirs}: {iops[theirs]:.0f} "
                         f"IOPS = {iops[ours] / iops[theirs]:.2f}x"
                         + (f" (server CPU {cpu[ours]:.0%} of one CPU)" if ours in cpu else ""))
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", action="store_true", help="requests/s and memory (no dm needed)")
    ap.add_argument("--vm", action="store_true", help="resync and IOPS (needs device-mapper)")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=1.0, help="per requests/s mix and round")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--region-sectors", type=int, default=1024, help="512 KiB, lvm's default")
    ap.add_argument("--rounds", type=int, default=3, help="of each measure (host and VM)")
    ap.add_argument("--write-seconds", type=float, default=8.0)
    ap.add_argument("--variants", default="kernel core,userspace clustered-core,"
                    "userspace clustered-core, Python reference,"
                    "userspace clustered-core, no state file,"
                    "userspace clustered-core, busy-poll 2 ms,"
                    "userspace clustered-core, integrated_flush,kernel disk,"
                    "userspace clustered-disk,userspace clustered-disk, Python reference,"
                    "userspace clustered-disk, busy-poll 2 ms",
                    help="separated by commas without a space (names hold ', ')")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.memory_child:
        host_memory_child()
        return 0
    if not (args.host or args.vm):
        args.host = True
    results: Dict[str, Any] = {}
    if args.host:
        results["requests"] = host_requests_per_second(args.seconds, args.rounds)
        results["memory"] = host_memory()
        for k, v in {**results["requests"], **results["memory"]}.items():
            print(f"{k}: {v:,.2f}x" if " / " in k else f"{k}: {v:,.0f}")
    if args.vm:
        variants = [v.strip() for v in re.split(r",(?! )", args.variants)]
        results["vm"] = vm_bench(args.size_mib, args.region_sectors, args.rounds,
                                 args.write_seconds, variants)
        print("\n".join(_summary(results["vm"])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
