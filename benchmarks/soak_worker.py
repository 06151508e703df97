"""The soak's worker side (see :mod:`benchmarks.soak`): the facts the
worker and the checker share (backing files, patterns, journals, the
operations) and the worker process, which runs the rounds of random
loop-device work the checker asks for, announcing each operation first.
"""
from __future__ import annotations

import json
import os
import random
import struct
import sys
from collections import Counter
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
