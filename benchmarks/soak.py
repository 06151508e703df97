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
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .soak_worker import (
    BLOCK,
    OPS,
    RELEASE_WAIT_S,
    backing_path,
    pattern,
    read_journal,
    worker_dir,
    worker_main,
)

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
            # partitions of a device bound again meanwhile are its new
            # binder's (on a shared machine, another process's): only an
            # unbound device's count (loopN/loop exists only while bound)
            if left and number not in bound \
                    and not os.path.exists(f"/sys/block/loop{number}/loop"):
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
