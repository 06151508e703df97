"""The benchmark scenarios (the command line's: :mod:`.cli_bench`).

Each takes the run's :class:`Settings`, the :class:`Workspace`, the compiled
C floor and the progress bar, and returns a JSON-ready dict holding every
sample.  Each contender does its job the way its users would; the options
that change the kernel's work (direct I/O, read-write) are the same for
every contender of a scenario.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import loopcore

from . import cli_bench, purepy, python_layer, vm_scenarios
from ._common import (
    Contender,
    Progress,
    Workspace,
    describe_contenders,
    drop_caches,
    interleave,
    loop_numbers,
    meminfo,
    percentile,
    ratio,
    read_backing,
    run_floor,
    summarize,
)

MiB = 1 << 20
# Run by path, so it needs nothing on sys.path but loopcore.
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")


@dataclasses.dataclass
class Settings:
    """Sizes of one run.  Defaults are the full run; see QUICK and the CLI."""

    cycles: int = 2000            # attach+detach cycles per fast contender
    slow_cycles: int = 200        # ... for losetup processes and the legacy path
    cycle_rounds: int = 20        # interleaving rounds in the cycle scenario
    direct_io: bool = True        # for every cycle/contention contender
    device_counts: Sequence[int] = (10, 100, 1000)
    discovery_rounds: int = 15
    discovery_batch: int = 2      # repetitions per contender per round
    procs: Sequence[int] = (1, 2, 4, 8)
    contention_cycles: int = 300  # cycles per process
    contention_rounds: int = 5
    io_mib: int = 512
    io_rounds: int = 3
    burst_size: int = 1000        # devices attached by one burst
    burst_rounds: int = 3
    dm_rounds: int = 5            # the VM scenarios (--vm): dm cycle ...
    dm_cycles: int = 100
    dm_dmsetup_cycles: int = 10
    dmlog_rounds: int = 3         # ... and the dirty-log server's mirror
    dmlog_size_mib: int = 256
    dmlog_write_seconds: float = 8.0
    cli_files: int = 100          # the cli scenario: files attached by the command line
    cli_rounds: int = 5
    cli_list_runs: int = 20       # list processes per contender per round
    scenarios: Sequence[str] = ("cycle", "burst", "discovery", "contention", "io", "cli")


QUICK = dict(cycles=300, slow_cycles=30, cycle_rounds=6, device_counts=(10, 100),
             discovery_rounds=4, discovery_batch=1, contention_cycles=40,
             contention_rounds=2, io_mib=64, io_rounds=1, burst_rounds=1,
             dm_rounds=2, dm_cycles=20, dm_dmsetup_cycles=3, dmlog_rounds=1,
             dmlog_size_mib=32, dmlog_write_seconds=2.0, cli_files=20, cli_rounds=2,
             cli_list_runs=5)
#: Scenarios run in the test VM (``--vm``): this host's kernel has no
#: device-mapper.
VM_SCENARIOS = ("dm", "dmlog")


def steps(settings: Settings) -> int:
    """Progress units of a run, to size the bar up front."""
    total = 0
    if "cycle" in settings.scenarios:
        # + python_layer, and with direct I/O the three buffered contenders
        total += settings.cycle_rounds * (10 if settings.direct_io else 7)
    if "burst" in settings.scenarios:
        total += settings.burst_rounds * len(BURST_CONTENDERS) + 1
    if "discovery" in settings.scenarios:
        total += len(settings.device_counts) * (settings.discovery_rounds * 9 + 1)
    if "contention" in settings.scenarios:
        total += settings.contention_rounds * len(settings.procs)
    if "io" in settings.scenarios:
        total += settings.io_rounds * 4 + 1
    if "cli" in settings.scenarios:
        total += cli_bench.steps(settings.cli_rounds)
    return total + sum(1 for name in VM_SCENARIOS if name in settings.scenarios)


def _timed(job: Callable[[], object]) -> Callable[[int], List[float]]:
    """A contender's run(count) that times each call of job in nanoseconds."""
    clock = time.perf_counter_ns

    def run(count: int) -> List[float]:
        samples: List[float] = []
        for _ in range(count):
            start = clock()
            job()
            samples.append(clock() - start)
        return samples

    return run


def _losetup(*args: str) -> str:
    """Run losetup; its stdout.  CalledProcessError carries its stderr."""
    return subprocess.run(["losetup", *args], check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True).stdout.strip()


def _losetup_attach(*args: str) -> str:
    """``losetup -f --show ...``, tried again: losetup -f loses races with
    other users of loop devices (it retries EBUSY only; a device another
    process is detaching opens with ENXIO, and under a busy neighbour's
    attach+detach loop the lowest free device is that one again and again),
    and on a shared machine those are not what the benchmark measures."""
    attempts = 50
    for attempt in range(attempts):
        try:
            return _losetup("-f", "--show", *args)
        except subprocess.CalledProcessError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


# --- 1. attach+detach cycle ---------------------------------------------------


def cycle(settings: Settings, ws: Workspace, floor: str, progress: Progress) -> Dict[str, object]:
    """attach+detach cycle cost per method, interleaved round by round."""
    backing = ws.make_file("cycle.img", 16 * MiB)
    dio = settings.direct_io
    rounds = settings.cycle_rounds
    fast = max(1, math.ceil(settings.cycles / rounds))
    slow = max(1, math.ceil(settings.slow_cycles / rounds))
    fcntl_cycler = purepy.FcntlCycler(backing, dio)
    floor_retries = [0]

    def floor_run(mode: str, direct: bool = dio) -> Callable[[int], List[float]]:
        def run(count: int) -> List[float]:
            samples, counters = run_floor(floor, mode, str(count), backing,
                                          "1" if direct else "0")
            floor_retries[0] += counters.get("retries", 0)
            return samples
        return run

    def losetup_cycle() -> None:
        device = _losetup_attach(f"--direct-io={'on' if dio else 'off'}", backing)
        _losetup("-d", device)

    contenders = [
        Contender("loopcore", _timed(lambda: loopcore.attach(backing, direct_io=dio).detach()),
                  fast, "loopcore.attach(path).detach()"),
        Contender("c_floor", floor_run("cycle"), fast,
                  "plain C: GET_FREE, open, LOOP_CONFIGURE, LOOP_CLR_FD, close"),
        Contender("c_same_syscalls", floor_run("cycle-same"), fast,
                  "plain C making exactly loopcore's syscalls: + backing open/statx/fstatfs/"
                  "F_SETFL, flock, read-back (BLKROGET, BLKGETDISKSEQ), sync_file_range, "
                  "LOOP_GET_STATUS64 after LOOP_CLR_FD (tests/test_bench_syscalls.py)"),
        Contender("python_fcntl", _timed(fcntl_cycler.cycle), fast,
                  "pure Python fcntl.ioctl, same ioctls as the C floor"),
        Contender("losetup", _timed(losetup_cycle), slow,
                  "processes: losetup -f --show, losetup -d"),
        Contender("loopcore_legacy",
                  _timed(lambda: loopcore.attach(backing, direct_io=dio, legacy=True).detach()),
                  slow, "loopcore.attach(path, legacy=True).detach(): SET_FD + SET_STATUS64"),
        Contender("python_layer", python_layer.timed(backing, dio), fast,
                  "loopcore.attach(path).detach() with every C call stubbed: the Python "
                  "layer alone (benchmarks/python_layer.py)"),
    ]
    if dio:  # the same three with direct I/O off, where the kernel's part is cheaper
        contenders += [
            Contender("loopcore_buffered",
                      _timed(lambda: loopcore.attach(backing, direct_io=False).detach()), fast,
                      "loopcore.attach(path, direct_io=False).detach()"),
            Contender("c_floor_buffered", floor_run("cycle", False), fast,
                      "the bare C floor, direct I/O off"),
            Contender("c_same_syscalls_buffered", floor_run("cycle-same", False), fast,
                      "C making loopcore's syscalls, direct I/O off"),
        ]
    try:
        samples = interleave(contenders, rounds, progress, "cycle")
    finally:
        fcntl_cycler.close()
    described = describe_contenders(contenders, samples, "c_floor")
    loopcore_median = summarize(samples["loopcore"]).get("median")
    return {
        "unit": "ns per attach+detach cycle",
        "baseline": "c_floor",
        "params": {"cycles": fast * rounds, "slow_cycles": slow * rounds, "rounds": rounds,
                   "direct_io": dio, "backing_size_bytes": 16 * MiB},
        "contenders": described,
        "retries": {"c_floor": floor_retries[0], "python_fcntl": fcntl_cycler.retries},
        "ratios": {
            "loopcore_vs_c_floor": described["loopcore"]["ratio_vs_baseline"],  # type: ignore[index]
            "losetup_vs_loopcore": ratio(summarize(samples["losetup"]).get("median"),
                                         loopcore_median),
            "legacy_vs_loopcore": ratio(summarize(samples["loopcore_legacy"]).get("median"),
                                        loopcore_median),
            "loopcore_vs_c_same_syscalls":
                ratio(loopcore_median, summarize(samples["c_same_syscalls"]).get("median")),
            "python_fcntl_vs_c_floor":
                described["python_fcntl"]["ratio_vs_baseline"],  # type: ignore[index]
            "loopcore_vs_python_fcntl":
                ratio(loopcore_median, summarize(samples["python_fcntl"]).get("median")),
            **_buffered_ratios(samples),
        },
        "python_layer_ns": summarize(samples["python_layer"]).get("median"),
    }


def _buffered_ratios(samples: Dict[str, List[float]]) -> Dict[str, Optional[float]]:
    """The cycle's ratios with direct I/O off (its contenders run when the
    scenario's own have it on)."""
    if "loopcore_buffered" not in samples:
        return {}
    mine = summarize(samples["loopcore_buffered"]).get("median")
    return {name: ratio(mine, summarize(samples[base]).get("median")) for name, base in (
        ("buffered_loopcore_vs_c_floor", "c_floor_buffered"),
        ("buffered_loopcore_vs_c_same_syscalls", "c_same_syscalls_buffered"))}


# --- 2. bursts --------------------------------------------------------------------

BURST_CONTENDERS = ("loopcore_burst", "c_burst", "loopcore_attach_loop", "losetup")


def burst(settings: Settings, ws: Workspace, floor: str, progress: Progress) -> Dict[str, object]:
    """Attach N images without detaching in between, then detach them all;
    interleaved.

    A first, cold burst (attach_many) finds too few free devices and has
    the kernel make the rest on the way (LOOP_CTL_GET_FREE adds one when
    none is free): the difference to the warm bursts that follow is what
    pre-creating a pool (LOOP_CTL_ADD ahead of time, as Android's apexd
    does) would move off the burst.  The devices the kernel made stay, as
    they do after losetup -f: removing a loop device waits for a queue
    freeze (an RCU grace period or more), ~1 s each on a loaded machine.
    """
    size = settings.burst_size
    progress.status(f"burst: {size} backing files")
    files = [ws.make_file(f"burst{i:05d}.img", MiB) for i in range(size)]
    list_path = ws.path("burst.list")
    with open(list_path, "w") as f:
        f.write("".join(path + "\n" for path in files))
    dio = settings.direct_io
    detach_ns: Dict[str, List[float]] = {name: [] for name in BURST_CONTENDERS}
    retries = [0]

    def timed_burst(name: str, attach_all: Callable[[], List[Any]],
                    detach_all: Callable[[List[Any]], None]) -> Callable[[int], List[float]]:
        def run(count: int) -> List[float]:
            samples = []
            for _ in range(count):
                try:
                    start = time.perf_counter_ns()
                    devices = attach_all()
                    samples.append(time.perf_counter_ns() - start)
                    start = time.perf_counter_ns()
                    detach_all(devices)
                    detach_ns[name].append(time.perf_counter_ns() - start)
                finally:
                    ws.detach_all()  # only if something failed part-way
            return samples
        return run

    def loopcore_attach_loop() -> List[Any]:
        devices: List[Any] = []
        try:
            for path in files:
                devices.append(loopcore.attach(path, direct_io=dio))
        except BaseException:
            for device in devices:
                device.detach()
            raise
        return devices

    def c_burst(count: int) -> List[float]:
        samples = []
        for _ in range(count):
            try:
                got, counters = run_floor(floor, "burst", "1", list_path, "1" if dio else "0")
            finally:
                ws.detach_all()
            samples += got
            detach_ns["c_burst"].append(counters.get("detach_ns", 0))
            retries[0] += counters.get("retries", 0)
        return samples

    def losetup_attach_all() -> List[Any]:
        devices: List[Any] = []
        for path in files:
            devices.append(_losetup_attach(f"--direct-io={'on' if dio else 'off'}", path))
        return devices

    def losetup_detach_all(devices: List[Any]) -> None:
        for chunk in range(0, len(devices), 200):
            _losetup("-d", *devices[chunk:chunk + 200])

    def attach_many() -> List[Any]:
        return loopcore.attach_many(files, direct_io=dio)

    progress.status("burst: the cold burst (the kernel makes devices)")
    free_before = _free_devices()
    cold = timed_burst("cold", attach_many, loopcore.detach_many)
    detach_ns["cold"] = []
    cold_ns = cold(1)[0]
    made = len(loop_numbers() - ws.preexisting)
    contenders = [
        Contender("loopcore_burst", timed_burst("loopcore_burst", attach_many,
                                                loopcore.detach_many), 1,
                  "loopcore.attach_many(files); detach_many(devices)"),
        Contender("c_burst", c_burst, 1,
                  "plain C making attach_many()'s syscalls: backing open/fstat/fstatfs/"
                  "F_SETFL each, one flock, GET_FREE+open+LOOP_CONFIGURE+BLKROGET+"
                  "BLKGETDISKSEQ each"),
        Contender("loopcore_attach_loop",
                  timed_burst("loopcore_attach_loop", loopcore_attach_loop,
                              lambda devices: [d.detach() for d in devices]), 1,
                  "[loopcore.attach(f) for f in files], one detach() each"),
        Contender("losetup", timed_burst("losetup", losetup_attach_all, losetup_detach_all), 1,
                  "processes: losetup -f --show FILE each; losetup -d DEV... (200 a process)"),
    ]
    samples = interleave(contenders, settings.burst_rounds, progress, "burst")
    described = describe_contenders(contenders, samples, "c_burst")
    for name, entry in described.items():
        entry["detach"] = summarize(detach_ns[name])  # type: ignore[index]
        entry["detach_samples"] = detach_ns[name]  # type: ignore[index]
    median = {name: summarize(samples[name]).get("median") for name in samples}
    return {
        "unit": "ns per burst of N attaches",
        "baseline": "c_burst",
        "params": {"burst_size": size, "rounds": settings.burst_rounds, "direct_io": dio},
        "contenders": described,
        "cold": {"ns": cold_ns, "free_devices_before": free_before,
                 "devices_made_by_the_run": made,
                 "vs_warm": ratio(cold_ns, median["loopcore_burst"])},
        "retries": {"c_burst": retries[0]},
        "ratios": {
            "loopcore_vs_c_burst": ratio(median["loopcore_burst"], median["c_burst"]),
            "losetup_vs_loopcore": ratio(median["losetup"], median["loopcore_burst"]),
            "attach_loop_vs_burst": ratio(median["loopcore_attach_loop"],
                                          median["loopcore_burst"]),
            "loopcore_detach_vs_c": ratio(summarize(detach_ns["loopcore_burst"]).get("median"),
                                          summarize(detach_ns["c_burst"]).get("median")),
        },
    }


def _free_devices() -> int:
    """Loop devices that exist and are unbound now (anyone's)."""
    return sum(1 for number in loop_numbers() if read_backing(number) is None)


# --- 3. discovery -------------------------------------------------------------


def _discovery_functions() -> Dict[str, Optional[Callable[..., object]]]:
    return {"list_devices": getattr(loopcore, "list_devices", None),
            "find": getattr(loopcore, "find", None)}


def discovery(settings: Settings, ws: Workspace, floor: str,
              progress: Progress) -> Dict[str, object]:
    """Listing and finding with 10/100/1000 bound devices."""
    functions = _discovery_functions()
    missing = [name for name, fn in functions.items() if fn is None]
    if missing:
        progress.note(f"bench: loopcore.{', loopcore.'.join(missing)} not available; "
                      "those discovery contenders are skipped")
    rounds, batch = settings.discovery_rounds, settings.discovery_batch
    levels = []
    bound: List[str] = []
    try:
        for count in sorted(settings.device_counts):
            progress.status(f"discovery: attaching {count} devices")
            paths = [ws.make_file(f"disc{i:05d}.img", MiB) for i in range(len(bound), count)]
            for device in loopcore.attach_many(paths):
                ws.allocated.add(device.number)
                device.close()  # stays bound (no autoclear); no fd per device
            bound += paths
            progress.advance()
            target = bound[len(bound) // 2]
            listers, finders = _discovery_contenders(functions, floor, target, batch)
            samples = interleave(listers + finders, rounds, progress, f"discovery {count}")
            level = {
                "devices": count,
                # ours plus any other user's, as the C scan counted them
                "bound_total": run_floor(floor, "scan", "1")[1].get("devices"),
                "list": describe_contenders(listers, samples, "c_scan"),
                "find": describe_contenders(finders, samples, "c_find"),
            }
            levels.append(level)
    finally:
        progress.status("discovery: detaching")
        ws.detach_all()
    return {"unit": "ns per call", "baselines": {"list": "c_scan", "find": "c_find"},
            "params": {"rounds": rounds, "batch": batch,
                       "device_counts": list(settings.device_counts)},
            "missing": missing, "levels": levels}


def _discovery_contenders(functions: Dict[str, Optional[Callable[..., object]]], floor: str,
                          target: str, batch: int) -> "tuple[List[Contender], List[Contender]]":
    """The listing contenders and the finding contenders."""
    def floor_run(*args: str) -> Callable[[int], List[float]]:
        return lambda count: run_floor(floor, args[0], str(count), *args[1:])[0]

    def losetup_run(*args: str) -> Callable[[], object]:
        return lambda: subprocess.run(["losetup", *args], check=True, stdout=subprocess.PIPE)

    list_devices, find = functions["list_devices"], functions["find"]
    listers, finders = [], []
    if list_devices is not None:
        listers.append(Contender("loopcore_list", _timed(list_devices), batch,
                                    "loopcore.list_devices()"))
    listers += [
        Contender("python_sysfs_list", _timed(purepy.sysfs_list), batch,
                  "pure Python: os.open/os.read of the same sysfs attributes, os.stat"),
        Contender("losetup_json", _timed(losetup_run("-l", "--json")), batch,
                  "process: losetup -l --json"),
        Contender("c_scan", floor_run("scan-ioctl"), batch,
                  "plain C floor: backing_file from sysfs, the rest from ioctls on "
                  "/dev/loopN (LOOP_GET_STATUS64, BLKSSZGET, BLKGETSIZE64, BLKGETDISKSEQ)"),
        Contender("c_scan_sysfs", floor_run("scan"), batch,
                  "plain C reading list_devices()' sources: 11 sysfs attributes + "
                  "LOOP_GET_STATUS64"),
    ]
    if find is not None:
        finders.append(Contender("loopcore_find", _timed(lambda: find(target)), batch,
                                    "loopcore.find(path)"))
    finders += [
        Contender("python_sysfs_find", _timed(lambda: purepy.sysfs_find(target)), batch,
                  "pure Python: backing_file + os.stat per device"),
        Contender("losetup_j", _timed(losetup_run("-j", target)), batch,
                  "process: losetup -j FILE"),
        Contender("c_find", floor_run("find", target), batch,
                  "plain C: backing_file + stat per device"),
    ]
    return listers, finders


# --- 4. contention ------------------------------------------------------------


def _contention_round(procs: int, backings: List[str], cycles: int, dio: bool,
                      ws: Workspace) -> Dict[str, object]:
    workers = []
    try:
        for index in range(procs):
            workers.append(subprocess.Popen(
                [sys.executable, WORKER, backings[index], str(cycles),
                 "1" if dio else "0"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a contention worker failed to start")
        for worker in workers:  # the start line, to all as close together as we can
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            out, _ = worker.communicate(timeout=max(600, cycles))
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
    leaked = ws.leaked(settle_s=1.0)
    if leaked:
        ws.detach_all()
    wall_ns = max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)
    done = sum(r["cycles"] for r in results)
    return {
        "procs": procs,
        "wall_s": wall_ns / 1e9,
        "cycles": done,
        "throughput_cycles_per_s": done / (wall_ns / 1e9) if wall_ns else 0.0,
        "failures": sum(r["failures"] for r in results),
        "errors": [e for r in results for e in r["errors"]][:10],
        "retries": sum(r["attempts"] - r["cycles"] for r in results),
        "busy_retries": sum(r["busy_retries"] for r in results),
        "vanished_retries": sum(r["vanished_retries"] for r in results),
        "leaked_devices": len(leaked),
        "workers": results,
    }


def contention(settings: Settings, ws: Workspace, floor: str,
               progress: Progress) -> Dict[str, object]:
    """P processes each doing N cycles at once, for each P, interleaved."""
    procs = list(settings.procs)
    backings = [ws.make_file(f"contend{i}.img", 16 * MiB) for i in range(max(procs))]
    rounds: Dict[int, List[Dict[str, Any]]] = {p: [] for p in procs}
    for round_index in range(settings.contention_rounds):
        shift = round_index % len(procs)
        for p in procs[shift:] + procs[:shift]:
            progress.status(f"contention: P={p}")
            rounds[p].append(_contention_round(p, backings, settings.contention_cycles,
                                               settings.direct_io, ws))
            progress.advance()
    points: List[Dict[str, Any]] = []
    for p in procs:
        throughput = [r["throughput_cycles_per_s"] for r in rounds[p]]
        latencies = sorted(ns for r in rounds[p] for w in r["workers"]
                           for ns in w.pop("attach_latency_ns", []))
        points.append({
            "attach_latency_ns": {
                "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99),
                "max": latencies[-1] if latencies else None, "n": len(latencies)},
            "procs": p,
            "rounds": rounds[p],
            "throughput": summarize(throughput),
            "failures": sum(r["failures"] for r in rounds[p]),
            "leaked_devices": sum(r["leaked_devices"] for r in rounds[p]),
            "retries": sum(r["retries"] for r in rounds[p]),
        })
    base = points[0]["throughput"].get("median")
    for point in points:
        point["ratio_vs_p1"] = ratio(point["throughput"].get("median"), base)
    return {"unit": "attach+detach cycles per second, all processes together",
            "baseline": f"P={procs[0]}",
            "params": {"procs": procs, "cycles_per_process": settings.contention_cycles,
                       "rounds": settings.contention_rounds, "direct_io": settings.direct_io},
            "points": points}


# --- 5. I/O through the device ---------------------------------------------------


def _page_cache() -> int:
    """Bytes of page cache: Cached (files) + Buffers (block devices)."""
    info = meminfo()
    return info.get("Cached", 0) + info.get("Buffers", 0)


# The I/O functions return the page cache size measured before they close
# the device: the last close of a block device drops its page cache, which
# would hide the second copy that buffered backing I/O keeps.


def _read_device(path: str, size: int) -> int:
    buf = bytearray(MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        left = size
        while left > 0:
            n = f.readinto(view[: min(MiB, left)])
            if not n:
                break
            left -= n
        return _page_cache()


def _write_device(path: str, size: int) -> int:
    chunk = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, chunk[: min(MiB, left)])
        os.fsync(fd)
        return _page_cache()
    finally:
        os.close(fd)


def io(settings: Settings, ws: Workspace, floor: str, progress: Progress) -> Dict[str, object]:
    """Cold sequential read and write: loopcore's default vs losetup's."""
    size = settings.io_mib * MiB
    progress.status(f"io: writing a {settings.io_mib} MiB backing file")
    backing = ws.make_file("io.img", size, fill=True)
    progress.advance()

    def loopcore_attach() -> "tuple[str, Callable[[], None]]":
        device = loopcore.attach(backing)  # the default: direct I/O
        ws.allocated.add(device.number)
        return device.path, device.detach

    def losetup_attach() -> "tuple[str, Callable[[], None]]":
        path = _losetup_attach(backing)  # the default: buffered

        def detach() -> None:
            _losetup("-d", path)

        return path, detach

    attachers = {"loopcore_default": loopcore_attach, "losetup_default": losetup_attach}
    samples: Dict[str, Dict[str, List[float]]] = {
        f"{name}_{op}": {"mb_per_s": [], "cache_growth_bytes": [], "direct_io": []}
        for name in attachers for op in ("read", "write")}
    names = list(attachers)
    for round_index in range(settings.io_rounds):
        for op in ("read", "write"):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                progress.status(f"io: {name} {op}")
                path, detach = attachers[name]()
                try:
                    number = int(path[len("/dev/loop"):])
                    with open(f"/sys/block/loop{number}/loop/dio") as f:
                        dio = f.read().strip() == "1"
                    drop_caches([backing, path])
                    before = _page_cache()
                    start = time.perf_counter_ns()
                    after = (_read_device if op == "read" else _write_device)(path, size)
                    elapsed = time.perf_counter_ns() - start
                    growth = after - before
                finally:
                    detach()
                entry = samples[f"{name}_{op}"]
                entry["mb_per_s"].append(size / 1e6 / (elapsed / 1e9))
                entry["cache_growth_bytes"].append(growth)
                entry["direct_io"].append(dio)
                progress.advance()
    drop_caches([backing])
    out: Dict[str, object] = {}
    for key, entry in samples.items():
        op = key.rsplit("_", 1)[1]
        base = summarize(samples[f"losetup_default_{op}"]["mb_per_s"]).get("median")
        summary = summarize(entry["mb_per_s"])
        out[key] = {**entry, "summary": summary,
                    "cache_growth": summarize(entry["cache_growth_bytes"]),
                    "ratio_vs_baseline": ratio(summary.get("median"), base)}
    return {"unit": "MB/s (10^6 bytes per second), cold cache",
            "baseline": "losetup_default",
            "params": {"size_bytes": size, "rounds": settings.io_rounds, "block": MiB},
            "contenders": out}


def dm(settings: Settings, ws: Workspace, floor: str, progress: Progress) -> Dict[str, object]:
    """The dm create+load+resume+remove cycle, in the VM (benchmarks/dm-bench)."""
    progress.status("dm: booting the VM")
    out = vm_scenarios.dm_cycle(settings.dm_rounds, settings.dm_cycles,
                                settings.dm_dmsetup_cycles)
    progress.advance()
    return out


def dmlog(settings: Settings, ws: Workspace, floor: str,
          progress: Progress) -> Dict[str, object]:
    """The dirty-log server vs the kernel's logs, in the VM (benchmarks/dmlog-bench)."""
    progress.status("dmlog: booting the VM")
    out = vm_scenarios.dmlog(settings.dmlog_rounds, settings.dmlog_size_mib,
                             settings.dmlog_write_seconds)
    progress.advance()
    return out


SCENARIOS = {"cycle": cycle, "burst": burst, "discovery": discovery, "contention": contention,
             "io": io, "cli": cli_bench.cli, "dm": dm, "dmlog": dmlog}
