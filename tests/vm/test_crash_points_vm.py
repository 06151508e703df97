"""A crash at every step, in the VM: device-mapper verbs and the
dm-log-userspace server SIGKILLed at their k-th system call (issue 19,
part 3; the loop half is tests/test_crash_points.py on the host).

The kill is tests/faults.py's crash mode: the code runs in a forked child
whose calls that change or reference outside state (open, close, ioctl,
write, fsync ...; :data:`faults.CRASH_SYSCALLS`) go to the parent, which
SIGKILLs the child at the k-th instead of letting it run.  An
uninterrupted run counts the calls first (``count_syscalls``); then
k = 1 .. that count, every one with ``LOOPCORE_CRASH_ALL=1``, a sample
(:func:`crash_points`) in the default run.

Device-mapper (``DeviceMapper.create`` with a table, ``remove``,
``rename``), with udev off (the client makes the nodes) and waiting for
udev (udevd runs in the guest, DM_DISABLE_UDEV unset): after each kill,
what is left is seen by ``loopcore dm ls`` and ``dm info`` and removed by
``loopcore dm remove`` (device and node); a node left for a device that
is gone (a kill between the ioctl and the node's unlink, udev off) is
counted and must go with ``loopcore dm mknodes``; no SysV semaphore (a
libdevmapper udev cookie) appears.

The dmlog server: a mirror with a userspace log (core or disk) served by
an in-process server.  Each round writes a pattern (O_DIRECT, fsync:
acknowledged), stops that server, and starts one in the child, which
serves normally (the kernel reconnects to it) until the request under
test arrives for the mirror's log: the calls are counted from there (its
handling and the reply).  A thread of the test makes the kernel send that
request: a write to a clean region (MARK_REGION), a second write
(the FLUSH that carries the first one's clear), a suspend (POSTSUSPEND).
After the kill an in-process server is started again; the kernel resends
(after its 15 s request timeout), the blocked write or suspend
completes, resync ends; then the legs must be identical, the mirror
healthy, and every acknowledged write (of every round so far) readable
from the mirror and from both legs.

The figures (crash points per operation, violations) go to the junit
report's properties and build/vm-tests/crash-points-vm.md.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import pytest
from test_dmlog import LOCK, legs_identical, sync_state, wait_synced

from loopcore import dm
from loopcore.dm import mirror
from loopcore.dmlog import DirtyLogServer
from loopcore.dmlog import protocol as P
from loopcore.dmlog.transport import RCVBUF, open_connector, take_lock

from faults import CRASH_SYSCALLS, ChildResult, count_syscalls, run_until_crash
from vmhelpers import (
    Loop,
    backing_bytes,
    loopcore_cli,
    read_direct,
    semaphores,
    udev_settle,
    write_direct,
)

ROOT = Path(__file__).resolve().parents[2]
TABLE_NAME = "crash-points-vm.md"
#: LOOPCORE_CRASH_ALL=1: every k of every operation (the closing figures)
CRASH_ALL = os.environ.get("LOOPCORE_CRASH_ALL") == "1"
DM_TIMEOUT = 60.0          # one child: qemu without KVM is slow
SERVER_TIMEOUT = 180.0     # the child server: reconnects, the kernel's 2 s retry loop
DRIVER_TIMEOUT = 180.0     # the blocked write/suspend: the kernel's 15 s resend and more

#: FIGURES[operation] = {"calls": n, "points": [k...], "violations": [...], ...}
FIGURES: Dict[str, Dict[str, Any]] = {}


def crash_points(calls: Sequence[Any], sample: Callable[[Sequence[Any]], List[int]]) -> List[int]:
    """The k to kill at: 1 .. len(calls) with LOOPCORE_CRASH_ALL=1, else ``sample(calls)``."""
    if CRASH_ALL:
        return list(range(1, len(calls) + 1))
    return sorted({k for k in sample(calls) if 1 <= k <= len(calls)})


@pytest.fixture(scope="module", autouse=True)
def figures_table(pytestconfig: pytest.Config):
    start = time.monotonic()
    yield
    if not FIGURES:
        return
    lines = [
        "# Crash points: device-mapper and the dmlog server",
        "",
        f"`tests/vm/test_crash_points_vm.py` in the VM (Linux {os.uname().release}), "
        f"{'every k (LOOPCORE_CRASH_ALL=1)' if CRASH_ALL else 'the default sample'}, "
        f"{time.monotonic() - start:.0f} s.",
        "",
        "| operation | calls counted | crash points tried | violations | notes |",
        "|---|---|---|---|---|",
    ]
    for op, f in FIGURES.items():
        lines.append(f"| {op} | {f['calls']} | {len(f['points'])} | {len(f['violations'])} "
                     f"| {f.get('notes', '')} |")
    for op, f in FIGURES.items():
        for v in f["violations"]:
            lines.append(f"- {op}: {v}")
    # beside the junit report: the one directory the guest may write
    xml = pytestconfig.getoption("xmlpath", None)
    table = (Path(xml).parent if xml else ROOT / "build" / "vm-tests") / TABLE_NAME
    try:
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text("\n".join(lines) + "\n")
    except OSError as exc:
        print(f"crash-points-vm: not written: {exc}")


def record(record_testsuite_property: Callable[[str, Any], None], op: str,
           calls: Sequence[Any], points: List[int], violations: List[str],
           notes: str = "") -> None:
    """The figures of one operation: in FIGURES (the table) and the junit report."""
    FIGURES[op] = {"calls": len(calls), "points": points, "violations": violations,
                   "notes": notes}
    record_testsuite_property(f"{op}: calls", " ".join(str(c) for c in calls))
    record_testsuite_property(f"{op}: crash points", f"{len(points)}"
                              f"{' (every k)' if CRASH_ALL else ''}")
    record_testsuite_property(f"{op}: violations", len(violations))
    if notes:
        record_testsuite_property(f"{op}: notes", notes)


def describe(result: ChildResult) -> str:
    if result.killed_at is not None:
        return f"killed at {result.killed_at}"
    if result.timed_out:
        return "timed out"
    if result.crashed:
        return f"crashed: {result.crashed}\n{result.output}"
    return "finished" + (f" with {result.error}" if result.error else "")


# --- device-mapper verbs -------------------------------------------------------------------

def listed(capsys: pytest.CaptureFixture, problems: List[str]) -> List[str]:
    rc, out, err = loopcore_cli(capsys, "dm", "ls")
    if rc != 0:
        problems.append(f"loopcore dm ls: exit {rc}: {err.strip()}")
    return [line.split("\t")[0] for line in out.splitlines()
            if line.strip() and line != "No devices found"]


def dm_leftovers(capsys: pytest.CaptureFixture, mapper: dm.DeviceMapper,
                 candidates: Sequence[str], sems: Set[Tuple[str, str]],
                 udev: bool) -> Tuple[List[str], int]:
    """Check and clear what a killed verb left of ``candidates``, the way a
    user would: ``loopcore dm ls``, ``info``, ``remove`` (and ``mknodes``
    for a node whose device is gone).  (problems, stale nodes found)."""
    problems: List[str] = []
    stale = 0
    if udev:
        udev_settle()   # udev may still be handling the killed verb's event
    shown = listed(capsys, problems)
    kernel = [d.name for d in mapper.list_devices()]
    if sorted(shown) != sorted(kernel):
        problems.append(f"dm ls shows {shown}, the kernel has {kernel}")
    for name in candidates:
        node = os.path.join(dm.DEV_DIR, name)
        if name in kernel:
            rc, out, err = loopcore_cli(capsys, "dm", "info", name)
            if rc != 0 or f"Name:              {name}" not in out:
                problems.append(f"dm info {name}: exit {rc}: {err.strip()} {out!r}")
            rc, out, err = loopcore_cli(capsys, "dm", "remove", name)
            if rc != 0:
                problems.append(f"dm remove {name}: exit {rc}: {err.strip()}")
            if udev:
                udev_settle()
            if name in listed(capsys, problems):
                problems.append(f"{name} still listed after dm remove")
            if os.path.lexists(node):
                problems.append(f"{node} left after dm remove")
        elif os.path.lexists(node):
            stale += 1
            rc, out, err = loopcore_cli(capsys, "dm", "mknodes")
            if rc != 0 or os.path.lexists(node):
                problems.append(f"{node} without a device, and dm mknodes (exit {rc}: "
                                f"{err.strip()}) did not remove it")
    if semaphores() != sems:
        problems.append(f"SysV semaphores changed: {sorted(semaphores())} (before: "
                        f"{sorted(sems)})")
    return problems, stale


def dm_sample(calls: Sequence[Any]) -> List[int]:
    """The default run: each device-mapper ioctl (the steps of the verb)."""
    return [i for i, call in enumerate(calls, 1)
            if call.name == "ioctl" and (call.args[1] >> 8) & 0xFF == 0xFD]


#: (verb, udev mode); the default run waits for udev in create only (remove
#: and rename wait the same way, and each kill there costs udev's settling)
DM_CASES = [(verb, mode) for verb in ("create", "remove", "rename") for mode in ("off", "wait")
            if CRASH_ALL or mode == "off" or verb == "create"]


@pytest.mark.parametrize("verb, udev_mode", DM_CASES, ids=[f"{v}-{m}" for v, m in DM_CASES])
def test_dm_verb_killed_at_each_call(verb, udev_mode, mapper, loops, names, monkeypatch,
                                     capsys, record_testsuite_property):
    if udev_mode == "wait":
        # the client in the child waits for udev; the CLI cooperates with it too
        monkeypatch.delenv("DM_DISABLE_UDEV", raising=False)
    udev = udev_mode == "wait"
    loop = loops(1 << 20)
    table = [dm.linear(0, 2048, loop.devnum)]
    sems = semaphores()
    stale_total = 0
    violations: List[str] = []

    def run(k: Optional[int]) -> ChildResult:
        nonlocal stale_total
        name = names(f"crash-{verb}")
        new = name + "-renamed"

        def setup(ctx):
            m = dm.DeviceMapper(udev=udev_mode)
            if verb != "create":
                m.create(name, table=table)
            ctx.state["m"] = m

        def code(ctx):
            m = ctx.state["m"]
            if verb == "create":
                m.create(name, table=table)
            elif verb == "remove":
                m.remove(name)
            else:
                m.rename(name, new)

        result = count_syscalls(code, setup=setup, timeout=DM_TIMEOUT) if k is None else \
            run_until_crash(code, k, setup=setup, timeout=DM_TIMEOUT)
        problems: List[str] = []
        if result.timed_out or result.crashed:
            problems.append(describe(result))
        elif result.killed_at is None and result.error is not None:
            problems.append(f"{verb} failed without a kill: {result.error}\n"
                            f"{result.error.traceback}")
        present = {d.name for d in mapper.list_devices()}
        if k is None and not result.error:
            expect = {"create": {name}, "remove": set(), "rename": {new}}[verb]
            if present & {name, new} != expect:
                problems.append(f"uninterrupted {verb}: {present & {name, new}}, not {expect}")
        found, stale = dm_leftovers(capsys, mapper, (name, new), sems, udev)
        stale_total += stale
        problems += found
        violations.extend(f"k={k} ({describe(result)}): {p}" for p in problems)
        return result

    counted = run(None)
    calls = counted.calls
    assert calls, f"no calls counted: {describe(counted)}"
    points = crash_points(calls, dm_sample)
    for k in points:
        run(k)
    record(record_testsuite_property, f"{verb} (udev {udev_mode})", calls, points, violations,
           f"{stale_total} stale nodes removed by dm mknodes" if stale_total else "")
    assert not violations, "\n".join(violations)


# --- the dmlog server ---------------------------------------------------------------------

S = 512
LEG = 8 << 20
SECTORS = LEG // S
RS = 128                 # sectors: 64 KiB regions, 128 of them
REGION = RS * S
NREG = SECTORS // RS
PATTERN = 4096
#: what the server's kill counts: crash mode's calls (the reply, sendto,
#: among them) and its O_DIRECT write (os.pwritev is pwritev2 with glibc 2.36)
SERVER_SYSCALLS = tuple(CRASH_SYSCALLS) + ("pwritev", "pwritev2")
_uuids = itertools.count()


class ServedMirror:
    """A mirror with a userspace log (``disk``: on a log device, else
    clustered-core with a state file), served in this process between the
    rounds; the writes acknowledged so far (offset, data)."""

    def __init__(self, mapper: dm.DeviceMapper, loops: Callable[..., Loop], tmp: Path,
                 name: str, disk: bool) -> None:
        self.mapper = mapper
        self.name = name
        self.disk = disk
        self.state = str(tmp / "dmlog-state")
        self.a, self.b = loops(LEG), loops(LEG)   # equal (zeros): nosync is true
        self.log = loops(1 << 20) if disk else None
        self.uuid = f"lct-crash-{os.getpid()}-{next(_uuids)}"
        self.server: Optional[DirtyLogServer] = None
        self.acked: List[Tuple[int, bytes]] = []
        self.region = 1
        self.start_server()
        mapper.create(name, table=[mirror(0, SECTORS, [self.a, self.b], RS, log="userspace",
                                          uuid=self.uuid, log_device=self.log,
                                          sync="nosync")])

    def start_server(self) -> None:
        assert self.server is None
        self.server = DirtyLogServer(lock_file=LOCK, state_dir=self.state).start()

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def write_fresh(self, count: int = 1) -> None:
        """Write a pattern to each of ``count`` regions not written before
        (clean: the kernel marks each first); acknowledged once written."""
        for _ in range(count):
            assert self.region < NREG, "out of clean regions"
            offset = self.region * REGION + PATTERN
            self.region += 1
            data = os.urandom(PATTERN)
            write_dm_acked(self, offset, data)

    def check(self) -> List[str]:
        """After a restart: resync ends, the mirror is healthy, the legs are
        equal, every acknowledged write is there."""
        problems = []
        wait_synced(self.mapper, self.name)
        done, total, health, log = sync_state(self.mapper, self.name)
        if health != "AA" or (self.disk and not log.endswith(" A")):
            problems.append(f"mirror not healthy: {done}/{total} {health} {log}")
        if not legs_identical(self.a, self.b):
            problems.append("the legs differ after resync")
        for offset, data in self.acked:
            if read_direct(self.name, offset, len(data)) != data:
                problems.append(f"acknowledged write at {offset} lost (mirror)")
            for leg in (self.a, self.b):
                if backing_bytes(leg, offset, len(data)) != data:
                    problems.append(f"acknowledged write at {offset} not on {leg.path}")
        return problems

    def cleanup(self) -> None:
        if self.server is None:
            self.start_server()
        try:
            if self.name in {d.name for d in self.mapper.list_devices()}:
                self.mapper.remove(self.name, retries=25, retry_delay=0.2)
        finally:
            self.stop_server()


def write_dm_acked(served: ServedMirror, offset: int, data: bytes) -> None:
    write_direct(served.name, offset, data)
    served.acked.append((offset, data))


def suspend(served: ServedMirror) -> None:
    """A write first: PRESUSPEND, POSTSUSPEND and RESUME go to whoever
    listens and the kernel does not reconnect on them; a write's requests
    make it reconnect to the new server, which then holds the log."""
    served.write_fresh(1)
    with dm.DeviceMapper() as m:
        m.suspend(served.name)


@dataclasses.dataclass
class Scenario:
    """The request the server is killed in, the log type, how the test
    makes the kernel send it, and how many of that type pass first."""

    request: P.RT
    disk: bool
    trigger: Callable[[ServedMirror], None]
    skip: int = 0


SCENARIOS = {
    # a write to a clean region: MARK_REGION, answered once dirty on disk
    "MARK_REGION-disk": Scenario(P.RT.MARK_REGION, True, lambda s: s.write_fresh(1)),
    # two writes: the second one's FLUSH carries the first one's clear
    # (clean bits written after the legs' flush)
    "FLUSH-core": Scenario(P.RT.FLUSH, False, lambda s: s.write_fresh(2), skip=1),
    "FLUSH-disk": Scenario(P.RT.FLUSH, True, lambda s: s.write_fresh(2), skip=1),
    # a write, then a suspend: PRESUSPEND, then POSTSUSPEND writes everything
    "POSTSUSPEND-disk": Scenario(P.RT.POSTSUSPEND, True, suspend),
}


def server_child(uuid: str, request: int, skip: int, state: str) -> Tuple[Callable[..., None],
                                                                          Callable[..., None]]:
    """(setup, code) of the child server: setup holds the lock, joins the
    connector group and serves (a restarted server: the kernel reconnects)
    until the ``skip+1``-th ``request`` for ``uuid``'s log arrives; code
    answers that one, counted, as the server's loop does (handle, send)."""
    want = uuid.encode()

    def setup(ctx):
        ctx.state["lock"] = take_lock(LOCK)
        sock = open_connector(RCVBUF)
        server = DirtyLogServer(lock_file=None, state_dir=state)
        seen = 0
        while True:
            data, (port, _groups) = sock.recvfrom(65536)
            try:
                req: Optional[P.Request] = P.parse_datagram(data)
            except P.ProtocolError:
                req = None
            if req is not None and port == 0 and req.request_type == request \
                    and req.uuid == want and any(v.luid == req.luid for v in server.logs):
                if seen == skip:
                    break
                seen += 1
            reply = server.handle_datagram(data, port)
            if reply is not None:
                sock.sendto(reply, (0, 0))
        ctx.state.update(server=server, sock=sock, data=data)

    def code(ctx):
        reply = ctx.state["server"].handle_datagram(ctx.state["data"], 0)
        if reply is not None:
            ctx.state["sock"].sendto(reply, (0, 0))

    return setup, code


#: the default run kills the server at the first of these in the request:
#: the first write or sync of the log or the legs, the steps whose order
#: makes the log crash-safe (each kill costs the kernel's 15 s timeout)
SERVER_WRITES = ("pwrite64", "pwritev", "pwritev2", "fsync", "fdatasync")


class Driver(threading.Thread):
    """Runs a scenario's trigger (it blocks while the server is down)."""

    def __init__(self, trigger: Callable[[ServedMirror], None], served: ServedMirror) -> None:
        super().__init__(daemon=True)
        self.trigger, self.served = trigger, served
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.trigger(self.served)
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_dmlog_server_killed_at_each_call(scenario, mapper, loops, names, tmp_path,
                                          record_testsuite_property):
    sc = SCENARIOS[scenario]
    served = ServedMirror(mapper, loops, tmp_path, names("crash-mirror"), sc.disk)
    violations: List[str] = []
    try:
        def run(k: Optional[int], syscalls: Sequence[str] = SERVER_SYSCALLS) -> ChildResult:
            served.write_fresh(1)     # acknowledged before the crash
            served.stop_server()
            setup, code = server_child(served.uuid, sc.request, sc.skip, served.state)
            driver = Driver(sc.trigger, served)
            driver.start()
            if k is None:
                result = count_syscalls(code, setup=setup, syscalls=syscalls,
                                        timeout=SERVER_TIMEOUT)
            else:
                result = run_until_crash(code, k, setup=setup, syscalls=syscalls,
                                         timeout=SERVER_TIMEOUT)
            served.start_server()     # the kernel resends to it
            driver.join(DRIVER_TIMEOUT)
            problems: List[str] = []
            if result.timed_out or result.crashed or (result.killed_at is None
                                                      and result.error is not None):
                problems.append(describe(result))
            if driver.is_alive():
                problems.append(f"{scenario}: the write or suspend did not complete after "
                                "the restart")
            elif driver.error is not None:
                problems.append(f"the trigger failed: {driver.error!r}")
            if sc.request == P.RT.POSTSUSPEND and not driver.is_alive():
                sync_state(mapper, served.name)   # the status reconnects (RESUME would not)
                mapper.resume(served.name)
            if not driver.is_alive():
                problems += served.check()
            violations.extend(f"k={k} ({describe(result)}): {p}" for p in problems)
            assert not driver.is_alive(), "\n".join(violations)
            return result

        if CRASH_ALL:
            # k = 1 .. n, after the uninterrupted round (its server dies
            # right after the reply: the point after the last call)
            counted = run(None)
            calls = counted.calls
            assert calls, f"no calls counted: {describe(counted)}"
            points = list(range(1, len(calls) + 1))
            for k in points:
                run(k)
        else:
            first = run(1, SERVER_WRITES)
            calls, points = first.calls, [1]
    finally:
        served.cleanup()
    record(record_testsuite_property, f"dmlog {scenario}", calls, points, violations,
           f"{len(served.acked)} acknowledged writes checked")
    assert not violations, "\n".join(violations)

