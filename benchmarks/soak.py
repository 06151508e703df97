"""A soak: N worker processes for M minutes doing random loop-device work,
kill -9 of random workers, and an invariant check between rounds.

Run it as ``benchmarks/soak --procs N --minutes M`` (as root, from the
repository root; ``python -m benchmarks.soak`` is the same).  Everything
happens on backing files under one private directory; only devices bound
to those files are ever touched (other processes on the machine keep
theirs).

Rounds.  The checker (this process) tells every worker to run a round of
random operations: attach (autoclear or not, buffered or direct I/O, with
or without the device lock), detach, detach with ``wait=``, close of an
autoclear device, writes through a device, bursts (``attach_many`` +
``detach_many``), reuse (``reuse=True`` must hand back the device already
bound to the file), locks (exclusive and shared), partitions (an MBR in
every file, ``add_partitions()`` under the lock, a write through a
partition).  A worker announces each operation before it starts it; to
kill one mid-round the checker picks an operation number and sends
SIGKILL when the worker announces it, so kills land inside operations
(inside the C calls) without any timer.  At the end of a round each live
worker unlocks what it holds and reports, at the barrier, the devices it
holds and its open fds.

Invariants, checked after every round (each failure is a violation):

- a killed worker's autoclear devices are gone; its other leftovers are
  found by ``loopcore list`` and removed by ``loopcore detach DEV...``
  (the command line, as a user would), and nothing is bound to its files
  afterwards (nor partitions left on those devices);
- every device bound to a file under the directory is one a live worker
  holds, on that file, and every device a worker holds is bound there;
- no fd leak: a live worker's open fds (bar loopcore's process-long
  /dev/loop-control fd) are its fds at start plus one per device held;
- every acknowledged write is in the backing file: a worker writes a
  4 KiB pattern through a device (or a partition), fsyncs the device, and
  only then appends the write to its journal (one ``write()`` per line:
  a kill cannot lose it); the checker reads the backing files.  Each
  block is written once, so a newer unacknowledged write never replaces
  an acknowledged one.

Workers never exit on an operation's error: they report it (a violation)
and carry on.  At the end the workers stop (detaching what they hold),
and every journal is verified once more, against the files with nothing
bound.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

BLOCK = 4096
FILE_BYTES = 64 << 20          # sparse
FILES_PER_WORKER = 4
# The MBR every backing file carries: two primary partitions (1 MiB each).
PART_START = (1 << 20, 3 << 20)
PART_SIZE = 1 << 20
# How long a device released by autoclear or a deferred detach may take
# to unbind (woken by uevents; normally it is unbound at once).
RELEASE_WAIT_S = 10.0
OPS = ("attach", "detach", "detach-wait", "close-autoclear", "write", "burst", "reuse",
       "lock", "partitions")
# Relative weights of the operations, in OPS' order.
WEIGHTS = (6, 3, 1, 1, 6, 2, 2, 2, 1)


# --- the shared facts: files, patterns, journals ---------------------------------

def worker_dir(root: Path, wid: int) -> Path:
    return root / f"w{wid}"


def backing_path(root: Path, wid: int, index: int) -> Path:
    return worker_dir(root, wid) / f"f{index}.img"


def pattern(wid: int, index: int, offset: int, seq: int) -> bytes:
    """The 4 KiB a worker writes at ``offset`` of file ``index``."""
    return struct.pack("=4Q", wid, index, offset, seq) * (BLOCK // 32)


def mbr() -> bytes:
    """A DOS partition table with PART_START's two partitions."""
    table = bytearray(512)
    for slot, start in enumerate(PART_START):
        entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0",
                            start // 512, PART_SIZE // 512)
        table[446 + 16 * slot:446 + 16 * (slot + 1)] = entry
    table[510:512] = b"\x55\xaa"
    return bytes(table)


def read_journal(path: Path) -> List[Tuple[int, int, int]]:
    """(file index, offset, seq) per acknowledged write; a line a kill cut
    short was never acknowledged."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # the part after the last newline is unfinished
    return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in lines)]


def fd_count() -> int:
    """Open fds of this process, bar loopcore's process-long /dev/loop-control fd."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "/dev/loop-control":
                count += 1
        except FileNotFoundError:
            pass  # the fd listdir used
    return count


# --- the worker ------------------------------------------------------------------

class Worker:
    """One worker process: random operations on its own files, told when by
    the checker on stdin, reporting on stdout."""

    def __init__(self, root: Path, wid: int, seed: int) -> None:
        import loopcore
        self.lc = loopcore
        self.root, self.wid = root, wid
        self.rng = random.Random(seed)
        self.paths = [str(backing_path(root, wid, i)) for i in range(FILES_PER_WORKER)]
        self.held: Dict[int, object] = {}           # file index -> LoopDevice
        self.next_block = [1] * FILES_PER_WORKER     # block 0 holds the MBR
        self.next_part_block = [[0, 0] for _ in range(FILES_PER_WORKER)]
        self.seq = 0
        self.counts: Counter[str] = Counter()
        worker_dir(root, wid).mkdir()
        for path in self.paths:
            with open(path, "wb") as f:
                f.write(mbr())
                f.truncate(FILE_BYTES)
        self.journal = os.open(worker_dir(root, wid) / "journal",
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        # Open /dev/loop-control and whatever else loopcore keeps for the
        # process's life before the baseline is taken.
        self.lc.attach(self.paths[0]).detach()
        self.baseline = fd_count()

    def say(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def free(self) -> List[int]:
        return [i for i in range(FILES_PER_WORKER) if i not in self.held]

    def ack(self, index: int, offset: int, seq: int) -> None:
        os.write(self.journal, f"{index} {offset} {seq}\n".encode())

    def write_through(self, node: str, index: int, node_offset: int, file_offset: int) -> None:
        """Write a block through ``node``, fsync it, then acknowledge it."""
        self.seq += 1
        fd = os.open(node, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, pattern(self.wid, index, file_offset, self.seq), node_offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.ack(index, file_offset, self.seq)

    def write_block(self, index: int, dev: object) -> bool:
        block = self.next_block[index]
        if (block + 1) * BLOCK > PART_START[0]:
            block = max(block, (PART_START[1] + PART_SIZE) // BLOCK)
        if (block + 1) * BLOCK > FILE_BYTES:
            return False  # this file is full
        self.next_block[index] = block + 1
        self.write_through(dev.path, index, block * BLOCK, block * BLOCK)
        return True

    def run_round(self, ops: int) -> None:
        for k in range(1, ops + 1):
            kind = self.rng.choices(OPS, WEIGHTS)[0]
            self.say(f"op {k} {kind}")
            try:
                if getattr(self, "op_" + kind.replace("-", "_"))():
                    self.counts[kind] += 1
            except Exception as e:  # a violation: report, carry on
                self.say(f"error {kind}: {type(e).__name__}: {e}".replace("\n", " "))
        for dev in self.held.values():
            dev.unlock()
        held = {i: dev.number for i, dev in self.held.items()}
        self.say("barrier " + json.dumps({"fds": fd_count(), "held": held,
                                          "counts": self.counts}))
        self.counts = Counter()  # reported: the next barrier reports the next round's

    # Each op_* returns True if it did its operation (False: nothing to do).
    def op_attach(self) -> bool:
        free = self.free()
        if not free:
            return False
        index = self.rng.choice(free)
        self.held[index] = self.lc.attach(
            self.paths[index], autoclear=self.rng.random() < 0.5,
            direct_io=self.rng.random() < 0.5,
            lock=self.rng.choice((False, False, True, "shared")))
        return True

    def _pop_held(self, autoclear: Optional[bool] = None) -> Optional[object]:
        choices = [i for i, d in self.held.items()
                   if autoclear is None or d.info().autoclear == autoclear]
        return self.held.pop(self.rng.choice(choices)) if choices else None

    def op_detach(self) -> bool:
        dev = self._pop_held()
        if dev is None:
            return False
        if not dev.detach():
            self.counts["deferred"] += 1  # another process had it open: not ours to judge
        return True

    def op_detach_wait(self) -> bool:
        dev = self._pop_held()
        if dev is None:
            return False
        if not dev.detach(wait=RELEASE_WAIT_S):
            raise AssertionError("detach(wait=) returned False")
        return True

    def op_close_autoclear(self) -> bool:
        dev = self._pop_held(autoclear=True)
        if dev is None:
            return False
        dev.close()  # the kernel detaches it: checked at the barrier
        return True

    def op_write(self) -> bool:
        writable = list(self.held)
        if not writable:
            return False
        index = self.rng.choice(writable)
        return self.write_block(index, self.held[index])

    def op_burst(self) -> bool:
        free = self.free()
        if len(free) < 2:
            return False
        chosen = self.rng.sample(free, self.rng.randint(2, len(free)))
        devices = self.lc.attach_many([self.paths[i] for i in chosen],
                                      autoclear=self.rng.random() < 0.5)
        try:
            self.write_block(chosen[0], devices[0])
        finally:
            self.lc.detach_many(devices)
        return True

    def op_reuse(self) -> bool:
        if not self.held:
            return False
        index = self.rng.choice(list(self.held))
        dev = self.held[index]
        again = self.lc.attach(self.paths[index], reuse=True)
        try:
            if not again.reused or again.info().backing_file != self.paths[index]:
                raise AssertionError(f"reuse gave {again.path} (reused={again.reused}, "
                                     f"bound to {again.info().backing_file})")
            if again.number != dev.number:
                # A device this worker let go of while another process (a
                # listing elsewhere on the machine) had it open: the kernel
                # deferred its unbind, and it still maps the same bytes.
                self.counts["reuse-found-a-deferred-unbind"] += 1
        finally:
            again.close()
        return True

    def op_lock(self) -> bool:
        if not self.held:
            return False
        dev = self.held[self.rng.choice(list(self.held))]
        with dev.lock(exclusive=self.rng.random() < 0.5, timeout=RELEASE_WAIT_S):
            pass
        return True

    def op_partitions(self) -> bool:
        free = self.free()
        if not free:
            return False
        index = self.rng.choice(free)
        dev = self.lc.attach(self.paths[index], lock=True)
        try:
            parts = dev.add_partitions()
            if len(parts) != len(PART_START):
                raise AssertionError(f"add_partitions() gave {parts}")
            slot = self.rng.randrange(len(PART_START))
            block = self.next_part_block[index][slot]
            if (block + 1) * BLOCK <= PART_SIZE:
                self.next_part_block[index][slot] = block + 1
                self.write_through(parts[slot], index, block * BLOCK,
                                   PART_START[slot] + block * BLOCK)
        finally:
            dev.detach()
        return True

    def stop(self) -> None:
        for dev in self.held.values():
            dev.detach()
        self.held.clear()
        self.say("stopped " + json.dumps({"fds": fd_count(), "counts": self.counts}))


def worker_main(root: Path, wid: int, seed: int) -> None:
    worker = Worker(root, wid, seed)
    worker.say(f"ready {worker.baseline}")
    for line in sys.stdin:
        command = line.split()
        if command[0] == "round":
            worker.run_round(int(command[1]))
        elif command[0] == "stop":
            worker.stop()
            return


# --- the checker -----------------------------------------------------------------

@dataclass
class Live:
    """A worker process as the checker sees it."""
    wid: int
    proc: subprocess.Popen
    baseline: int = 0
    buffer: bytes = b""
    kill_at: int = 0             # SIGKILL when it announces this operation (0: never)
    killed: bool = False
    report: Optional[dict] = None


@dataclass
class Totals:
    """What a soak did and found."""
    operations: Counter = field(default_factory=Counter)
    rounds: int = 0
    kills: int = 0
    kills_during: Counter = field(default_factory=Counter)
    leftovers_cleaned: int = 0
    autoclear_released: int = 0
    invariant_checks: int = 0
    acknowledged_writes: int = 0
    violations: List[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"rounds": self.rounds, "operations": dict(sorted(self.operations.items())),
                "operations_total": sum(v for k, v in self.operations.items()
                                        if k in OPS),
                "kills": self.kills, "kills_during": dict(sorted(self.kills_during.items())),
                "leftovers_cleaned_by_cli": self.leftovers_cleaned,
                "autoclear_released_late": self.autoclear_released,
                "invariant_checks": self.invariant_checks,
                "acknowledged_writes_verified": self.acknowledged_writes,
                "violations": len(self.violations), "violation_list": self.violations}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loopcore", *args],
                          capture_output=True, text=True, timeout=120)


class Soak:
    """The checker: runs rounds, kills, checks."""

    def __init__(self, root: Path, procs: int, seed: int, ops_per_round: int,
                 kill_probability: float) -> None:
        import loopcore
        self.lc = loopcore
        self.root, self.procs, self.ops = root, procs, ops_per_round
        self.kill_probability = kill_probability
        self.rng = random.Random(seed)
        self.seed = seed
        self.release_wait = RELEASE_WAIT_S
        self.totals = Totals()
        self.workers: Dict[int, Live] = {}
        self.dead: List[int] = []                 # worker ids whose files are checked
        self.journal_seen: Dict[int, int] = {}    # wid -> acks verified so far
        self.next_wid = 0
        self.selector = selectors.DefaultSelector()

    # -- workers --
    def spawn(self) -> None:
        wid = self.next_wid
        self.next_wid += 1
        log = open(self.root / f"w{wid}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.soak", "--worker", str(wid),
             "--dir", str(self.root), "--seed", str(self.seed * 1000 + wid)],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        log.close()
        live = Live(wid, proc)
        self.workers[wid] = live
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self.selector.register(proc.stdout, selectors.EVENT_READ, live)
        line = self.wait_line(live)
        if line is None or not line.startswith("ready "):
            raise RuntimeError(f"worker {wid} did not start: {self.log_tail(wid)}")
        live.baseline = int(line.split()[1])

    def log_tail(self, wid: int) -> str:
        text = (self.root / f"w{wid}.log").read_text(errors="replace").strip()
        return " | ".join(text.splitlines()[-3:])

    def send(self, live: Live, line: str) -> None:
        assert live.proc.stdin is not None
        live.proc.stdin.write(line.encode() + b"\n")
        live.proc.stdin.flush()

    def lines(self, live: Live) -> Optional[List[str]]:
        """Complete lines the worker wrote; None at EOF (it died)."""
        assert live.proc.stdout is not None
        try:
            chunk = os.read(live.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        live.buffer += chunk
        *done, live.buffer = live.buffer.split(b"\n")
        return [d.decode() for d in done]

    def wait_line(self, live: Live) -> Optional[str]:
        """The worker's next line (blocking on its pipe): startup only."""
        while b"\n" not in live.buffer:
            assert live.proc.stdout is not None
            os.set_blocking(live.proc.stdout.fileno(), True)
            chunk = os.read(live.proc.stdout.fileno(), 65536)
            os.set_blocking(live.proc.stdout.fileno(), False)
            if not chunk:
                return None
            live.buffer += chunk
        line, live.buffer = live.buffer.split(b"\n", 1)
        return line.decode()

    def retire(self, live: Live) -> None:
        assert live.proc.stdout is not None and live.proc.stdin is not None
        self.selector.unregister(live.proc.stdout)
        live.proc.wait()
        live.proc.stdout.close()
        live.proc.stdin.close()
        del self.workers[live.wid]

    # -- a round --
    def run_round(self, force_kill: bool = False) -> None:
        """One round: every worker runs its operations, some are killed at a
        random one; then the killed ones' leftovers and the invariants."""
        self.totals.rounds += 1
        forced = self.rng.choice(list(self.workers)) if force_kill else None
        for live in self.workers.values():
            live.report = None
            live.kill_at = (self.rng.randint(1, self.ops) if live.wid == forced
                            or self.rng.random() < self.kill_probability else 0)
            self.send(live, f"round {self.ops}")
        pending = set(self.workers)
        while pending:
            for key, _ in self.selector.select():
                live = key.data
                got = self.lines(live)
                if got is None:  # EOF: killed by us, or died
                    if not live.killed:
                        self.violation(f"worker {live.wid} died: {self.log_tail(live.wid)}")
                    pending.discard(live.wid)
                    self.retire(live)
                    self.dead.append(live.wid)
                    continue
                for line in got:
                    self.on_line(live, line)
                if live.report is not None and not live.killed:
                    pending.discard(live.wid)  # a killed one is done at its EOF
        for wid in self.dead:
            self.clean_up_after(wid)
        self.dead = []
        self.check()
        while len(self.workers) < self.procs:
            self.spawn()

    def on_line(self, live: Live, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "op":
            number = int(rest.split()[0])
            if number == live.kill_at and not live.killed:
                live.proc.send_signal(signal.SIGKILL)
                live.killed = True
                self.totals.kills += 1
                self.totals.kills_during[rest.split()[1]] += 1
        elif kind == "error":
            self.violation(f"worker {live.wid}: {rest}")
        elif kind == "barrier":
            live.report = json.loads(rest)
        else:
            self.violation(f"worker {live.wid} said {line!r}")

    def violation(self, text: str) -> None:
        self.totals.violations.append(text)
        print("VIOLATION:", text, file=sys.stderr, flush=True)

    # -- invariants --
    def ours(self) -> Dict[int, str]:
        """{number: backing path} of every device bound to a file of ours."""
        prefix = str(self.root) + "/"
        return {info.number: info.backing_file for info in self.lc.list_devices()
                if info.backing_file is not None and info.backing_file.startswith(prefix)}

    def released(self, number: int, path: str) -> bool:
        """Whether /dev/loopN is unbound from ``path`` now or within
        RELEASE_WAIT_S (woken by the kernel's uevents)."""
        from loopcore import _retry
        from loopcore._uevents import KernelUevents

        def gone() -> bool:
            return self.ours().get(number) != path
        with KernelUevents() as events:
            return events.wait_until(gone, _retry.deadline_after(self.release_wait))

    def clean_up_after(self, wid: int) -> None:
        """A killed worker's devices: autoclear ones must be gone; the rest
        are found with ``loopcore list`` and removed with ``loopcore
        detach`` (the command line, as a user would), partitions and all."""
        self.totals.invariant_checks += 1
        prefix = str(worker_dir(self.root, wid)) + "/"
        listed = cli("list", "--json", "-O", "NAME,AUTOCLEAR,BACK-FILE")
        if listed.returncode != 0:
            self.violation(f"loopcore list: {listed.returncode} {listed.stderr}")
            return
        leftovers = []
        for row in json.loads(listed.stdout or '{"loopdevices": []}')["loopdevices"]:
            path, node = row["back-file"], row["name"]
            if not path or not path.startswith(prefix):
                continue
            number = int(node[len("/dev/loop"):])
            if row["autoclear"]:
                if self.released(number, path):
                    self.totals.autoclear_released += 1
                    continue
                self.violation(f"{node}: autoclear device of killed worker {wid} "
                               f"still bound to {path}")
            leftovers.append((node, number, path))
        if leftovers:
            gone = cli("detach", *(node for node, _, _ in leftovers))
            if gone.returncode != 0:
                self.violation(f"loopcore detach: {gone.returncode} {gone.stderr}")
        bound = self.ours()
        for node, number, path in leftovers:
            if bound.get(number) == path:
                self.violation(f"{node} still bound to {path} after loopcore detach")
                continue
            self.totals.leftovers_cleaned += 1
            try:
                left = [p for p in os.listdir(f"/sys/block/loop{number}")
                        if p.startswith(f"loop{number}p")]
            except FileNotFoundError:
                left = []  # the device itself is gone (someone removed it)
            if left and number not in bound:
                self.violation(f"{node}: partitions {left} left after loopcore detach")
        self.check_journal(wid)

    def check(self) -> None:
        """The invariants over every live worker and the directory."""
        self.totals.invariant_checks += 1
        held: Dict[int, str] = {}
        for live in self.workers.values():
            report = live.report
            assert report is not None
            self.totals.operations.update(report["counts"])
            report["counts"] = {}
            for index, number in report["held"].items():
                held[number] = str(backing_path(self.root, live.wid, int(index)))
            if report["fds"] != live.baseline + len(report["held"]):
                self.violation(f"worker {live.wid}: {report['fds']} fds, expected "
                               f"{live.baseline} + {len(report['held'])} held")
            self.check_journal(live.wid)
        bound = self.ours()
        for number, path in bound.items():
            if held.get(number) != path and not self.released(number, path):
                self.violation(f"/dev/loop{number} bound to {path}, held by no live worker")
            elif held.get(number) != path:
                self.totals.autoclear_released += 1
        for number, path in held.items():
            if bound.get(number) != path:
                self.violation(f"/dev/loop{number} held for {path} but bound to "
                               f"{bound.get(number)}")

    def check_journal(self, wid: int, everything: bool = False) -> None:
        """The acknowledged writes not verified yet (all with ``everything``)."""
        acks = read_journal(worker_dir(self.root, wid) / "journal")
        start = 0 if everything else self.journal_seen.get(wid, 0)
        handles: Dict[int, int] = {}
        try:
            for index, offset, seq in acks[start:]:
                if index not in handles:
                    handles[index] = os.open(backing_path(self.root, wid, index), os.O_RDONLY)
                if os.pread(handles[index], BLOCK, offset) != pattern(wid, index, offset, seq):
                    self.violation(f"worker {wid}: acknowledged write {seq} at {offset} "
                                   f"of f{index} is not in the file")
        finally:
            for fd in handles.values():
                os.close(fd)
        if not everything:
            self.totals.acknowledged_writes += len(acks) - start
        self.journal_seen[wid] = len(acks)

    def finish(self) -> None:
        """Stop the workers (they detach what they hold); check everything."""
        for live in list(self.workers.values()):
            self.send(live, "stop")
            line = self.wait_line(live)
            if line is None or not line.startswith("stopped "):
                self.violation(f"worker {live.wid} did not stop: {self.log_tail(live.wid)}")
            else:
                report = json.loads(line.split(" ", 1)[1])
                self.totals.operations.update(report["counts"])
                if report["fds"] != live.baseline:
                    self.violation(f"worker {live.wid}: {report['fds']} fds after stopping, "
                                   f"started with {live.baseline}")
            if live.proc.wait() != 0:
                self.violation(f"worker {live.wid} exited {live.proc.returncode}")
            self.retire(live)
        self.totals.invariant_checks += 1
        for number, path in self.ours().items():
            if not self.released(number, path):
                self.violation(f"/dev/loop{number} still bound to {path} at the end")
        for wid in range(self.next_wid):
            self.check_journal(wid, everything=True)

    def emergency_cleanup(self) -> None:
        """Whatever happened: kill the workers, detach every device bound to
        our files (ours only), so nothing is left behind."""
        for live in list(self.workers.values()):
            live.proc.kill()
            live.proc.wait()
        for number in self.ours():
            try:
                self.lc.detach(number)
            except OSError as e:
                print(f"soak: could not detach /dev/loop{number}: {e}", file=sys.stderr)


def run(procs: int, seconds: float, *, seed: Optional[int] = None, ops_per_round: int = 40,
        kill_probability: float = 0.3, directory: Optional[str] = None) -> Totals:
    """Soak for ``seconds``: ``procs`` workers, rounds of ``ops_per_round``
    operations each, each worker killed in a round with ``kill_probability``
    (the first round always kills one).  Returns the totals; the backing
    files are removed unless a violation was found."""
    seed = random.randrange(1 << 32) if seed is None else seed
    root = Path(tempfile.mkdtemp(prefix="loopcore-soak-", dir=directory))
    soak = Soak(root, procs, seed, ops_per_round, kill_probability)
    print(f"soak: {procs} workers, {seconds:.0f} s, seed {seed}, files under {root}",
          file=sys.stderr, flush=True)
    clean = False
    try:
        for _ in range(procs):
            soak.spawn()
        deadline = time.monotonic() + seconds
        soak.run_round(force_kill=True)  # at least one kill per run, whatever the dice say
        while time.monotonic() < deadline:
            soak.run_round()
        soak.finish()
        clean = True
    finally:
        if not clean:
            soak.emergency_cleanup()
        soak.selector.close()
    if not soak.totals.violations:
        import shutil
        shutil.rmtree(root)
    return soak.totals


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--procs", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (10)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed)")
    parser.add_argument("--ops-per-round", type=int, default=40)
    parser.add_argument("--kill-probability", type=float, default=0.3,
                        help="chance a worker is killed in a round (0.3)")
    parser.add_argument("--dir", default=None, help="where the private directory goes")
    parser.add_argument("--json", default=None, help="write the totals here too")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker_main(Path(args.dir), args.worker, args.seed)
        return 0
    # `kill PID` (a background job ignores SIGINT) ends it through run()'s
    # clean-up too: workers killed, our devices detached
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    totals = run(args.procs, args.minutes * 60, seed=args.seed,
                 ops_per_round=args.ops_per_round, kill_probability=args.kill_probability,
                 directory=args.dir)
    result = totals.as_dict()
    result["seconds"] = round(time.monotonic() - started, 1)
    result["procs"] = args.procs
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if totals.violations else 0


if __name__ == "__main__":
    sys.exit(main())
