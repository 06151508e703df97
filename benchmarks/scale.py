"""10 000 loop devices: attach, list, find and detach them, beside losetup.

    .venv/bin/python -m benchmarks.scale --devices 10000     (as root, repository root)

Makes N sparse 1 MiB backing files in a private directory, then:

1. loopcore: binds them with ``attach_many`` in bursts up to each
   checkpoint (100, 1000, 10000: those up to N), and at each one measures
   ``list_devices()`` (time; tracemalloc peak, per device listed),
   ``loopcore list`` (a process: time, max RSS), ``find()`` of one file
   and ``loopcore find``, and the same listing with the fd limit at
   ``FD_LIMIT`` (a listing that held one fd per device would fail or lose
   the devices' backing inodes there); ``losetup -l`` and ``losetup -j``
   on the same devices; then ``detach_many`` of all;
2. the same N bound again warm (the devices exist now) by ``attach_many``,
   detached by ``detach_many``; then by N ``losetup -f --show`` processes
   and one ``losetup -d`` of all.

Everything it bound is detached whatever happens (devices bound to its own
files only), and the devices the kernel made for the run are removed
again, 64 at a time under /dev/loop-control's lock (loopcore's attach takes
it too, so none is removed between another attach's GET_FREE and its bind).
Before each checkpoint it checks there is memory for the next devices (the
kernel's per-device memory measured at the first checkpoint): where there
is not, it stops there and says so.  Prints a table and writes JSON
(``--json``).
"""
from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import fcntl
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import loopcore

CHECKPOINTS = (100, 1000, 10000)
FD_LIMIT = 64
REPEATS = 5
# Leave this much memory free when adding devices (the kernel's, per device).
MEMORY_RESERVE = 2 << 30


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def timed(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median seconds of ``repeats`` calls."""
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


# The child's max RSS must not count its parent's pages: a child forked
# from this (large) Python process reports them until it execs, so a
# tiny C program forks the command and reports wait4's ru_maxrss.
MAXRSS_C = r"""
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int status;
    struct rusage ru;
    FILE *out;
    pid_t pid;
    if (argc < 3)
        return 125;
    pid = fork();
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0 || !(out = fopen(argv[1], "w")))
        return 126;
    fprintf(out, "%ld\n", ru.ru_maxrss);
    fclose(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
"""
_maxrss_helper: Optional[str] = None


def maxrss_helper() -> str:
    """The C helper, compiled once per run with the system compiler."""
    global _maxrss_helper
    if _maxrss_helper is None:
        out = Path(tempfile.mkdtemp(prefix="loopcore-maxrss-"))
        atexit.register(shutil.rmtree, out, True)
        (out / "maxrss.c").write_text(MAXRSS_C)
        subprocess.run(["cc", "-O2", "-o", str(out / "maxrss"), str(out / "maxrss.c")],
                       check=True)
        _maxrss_helper = str(out / "maxrss")
    return _maxrss_helper


def run_measured(argv: List[str], limit_fds: Optional[int] = None,
                 check: bool = True) -> Tuple[float, int, str]:
    """(seconds, max RSS in KiB, stdout) of one run of ``argv`` (with the
    fd limit at ``limit_fds``); with ``check``, RuntimeError if it failed."""
    if limit_fds is not None:
        argv = ["prlimit", f"--nofile={limit_fds}:{limit_fds}", *argv]
    with tempfile.NamedTemporaryFile() as rss:
        t = time.perf_counter()
        proc = subprocess.run([maxrss_helper(), rss.name, *argv], capture_output=True)
        seconds = time.perf_counter() - t
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:4])}: exit {proc.returncode}: "
                               f"{proc.stderr.decode()[-300:]}")
        return seconds, int(Path(rss.name).read_text() or 0), proc.stdout.decode()


LOOPCORE = [sys.executable, "-m", "loopcore"]


def list_peak_bytes() -> Tuple[int, int]:
    """(tracemalloc peak of one list_devices(), devices it listed)."""
    loopcore.list_devices()  # the buffer sized already: the steady state
    tracemalloc.start()
    try:
        infos = loopcore.list_devices()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, len(infos)


def listing_without_fds(directory: str) -> Dict[str, object]:
    """Listings with the fd limit at FD_LIMIT: how many of our devices each
    shows, and how many with the backing inode (read through an open of
    /dev/loopN, which needs a free fd while it lasts)."""
    code = ("import resource, sys, loopcore\n"
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT}))\n"
            "ours = [i for i in loopcore.list_devices()\n"
            "        if (i.backing_file or '').startswith(sys.argv[1])]\n"
            "print(len(ours), sum(1 for i in ours if i.has_status and i.backing_inode))\n")
    _, _, out = run_measured([sys.executable, "-c", code, directory])
    api_listed, api_with_inode = map(int, out.split())
    _, _, out = run_measured(LOOPCORE + ["list", "-n", "-O", "BACK-INO,BACK-FILE"],
                             limit_fds=FD_LIMIT)
    rows = [line.split(None, 1) for line in out.splitlines()]
    ours = [r for r in rows if len(r) == 2 and r[1].startswith(directory)]
    return {"fd_limit": FD_LIMIT, "api_listed": api_listed, "api_with_inode": api_with_inode,
            "cli_listed": len(ours), "cli_with_inode": sum(1 for r in ours if r[0] != "0")}


def checkpoint(count: int, directory: str, probe: str) -> Dict[str, object]:
    """The listing and finding figures with ``count`` of our devices bound."""
    peak, listed = list_peak_bytes()
    cpu = time.process_time()
    wall = timed(loopcore.list_devices)
    row: Dict[str, object] = {"ours_bound": count, "listed": listed,
                              "list_devices_s": wall,
                              "list_devices_cpu_s": (time.process_time() - cpu) / REPEATS,
                              "list_devices_peak_bytes": peak,
                              "list_devices_peak_bytes_per_device": peak / listed,
                              "find_s": timed(lambda: loopcore.find(probe))}
    for name, argv in (("loopcore_list", LOOPCORE + ["list"]),
                       ("losetup_l", ["losetup", "-l"]),
                       ("loopcore_find", LOOPCORE + ["find", probe]),
                       ("losetup_j", ["losetup", "-j", probe])):
        runs = [run_measured(argv) for _ in range(3)]
        row[name + "_s"] = statistics.median(r[0] for r in runs)
        row[name + "_maxrss_kib"] = max(r[1] for r in runs)
    row["fds"] = listing_without_fds(directory)
    return row


def remove_made(numbers: List[int]) -> int:
    """LOOP_CTL_REMOVE the devices made for this run, 64 at a time under
    /dev/loop-control's lock; one in use by someone by now stays."""
    removed = 0
    lock_fd = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        with loopcore.LoopControl() as ctl, \
                concurrent.futures.ThreadPoolExecutor(32) as pool:
            def remove(number: int) -> int:
                try:
                    ctl.remove(number)
                    return 1
                except OSError:
                    return 0
            for at in range(0, len(numbers), 64):
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    removed += sum(pool.map(remove, numbers[at:at + 64]))
                finally:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)
    finally:
        os.close(lock_fd)
    return removed


def detach_ours(directory: str) -> List[str]:
    """Detach whatever is bound to our files still; the ones that would not go."""
    failed = []
    for info in loopcore.list_devices():
        if (info.backing_file or "").startswith(directory):
            try:
                loopcore.detach(info.number)
            except OSError as e:
                failed.append(f"{info.path}: {e}")
    return failed


def run(n: int, *, losetup_attach: bool = True) -> Dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
    before = {int(e[4:]) for e in os.listdir("/sys/block")
              if e.startswith("loop") and e[4:].isdigit()}
    result: Dict[str, object] = {"devices_asked": n, "kernel": os.uname().release,
                                 "loop_params": {p: Path(f"/sys/module/loop/parameters/{p}")
                                                 .read_text().strip()
                                                 for p in ("max_loop", "max_part")},
                                 "checkpoints": []}
    made: List[int] = []
    with tempfile.TemporaryDirectory(prefix="loopcore-scale-") as tmp:
        directory = tmp + "/"
        paths = [os.path.join(tmp, f"{i:05d}.img") for i in range(n)]
        for path in paths:
            with open(path, "wb") as f:
                f.truncate(1 << 20)
        devices: List[loopcore.LoopDevice] = []
        try:
            bursts: List[Tuple[int, float, float]] = []
            per_device_kernel: Optional[float] = None
            for target in [c for c in CHECKPOINTS if c < n] + [n]:
                if per_device_kernel is not None:
                    need = per_device_kernel * (target - len(devices)) + MEMORY_RESERVE
                    if need > mem_available():
                        result["stopped"] = (f"at {len(devices)} devices: the next "
                                             f"{target - len(devices)} would need "
                                             f"{need >> 20} MiB, {mem_available() >> 20} "
                                             "MiB available")
                        break
                avail = mem_available()
                t, cpu = time.perf_counter(), time.process_time()
                devices += loopcore.attach_many(paths[len(devices):target], direct_io=False)
                bursts.append((target, time.perf_counter() - t, time.process_time() - cpu))
                per_device_kernel = max(avail - mem_available(), 0) / max(target, 1) * 2
                result.setdefault("kernel_bytes_per_device_first_burst", per_device_kernel / 2)
                made = sorted({d.number for d in devices} - before)
                print(f"bound {target}: {bursts[-1][1]:.2f} s", file=sys.stderr, flush=True)
                row = checkpoint(target, directory, paths[target // 2])
                result["checkpoints"].append(row)  # type: ignore[union-attr]
                print(json.dumps(row), file=sys.stderr, flush=True)
            result["attach_many_cold_bursts_devices_wall_cpu_s"] = bursts
            count = len(devices)
            # (wall, CPU) seconds: on a busy machine the kernel's waits in a
            # bind (queue freezes, RCU grace periods) stretch the wall time
            t, cpu = time.perf_counter(), time.process_time()
            loopcore.detach_many(devices)
            result["detach_many_s"] = (time.perf_counter() - t, time.process_time() - cpu)
            devices = []
            t, cpu = time.perf_counter(), time.process_time()
            devices = loopcore.attach_many(paths[:count], direct_io=False)
            result["attach_many_warm_s"] = (time.perf_counter() - t, time.process_time() - cpu)
            t, cpu = time.perf_counter(), time.process_time()
            loopcore.detach_many(devices)
            result["detach_many_warm_s"] = (time.perf_counter() - t, time.process_time() - cpu)
            devices = []
            if losetup_attach:
                nodes, rss = [], 0
                t = time.perf_counter()
                failed = 0
                for path in paths[:count]:
                    while True:
                        # losetup takes no lock: another process's LOOP_CTL_REMOVE
                        # between its GET_FREE and its bind fails it (ENXIO)
                        seconds, maxrss, out = run_measured(["losetup", "-f", "--show", path],
                                                            check=False)
                        if out.strip():
                            break
                        failed += 1
                        if failed > 100:
                            raise RuntimeError(f"losetup -f --show {path} keeps failing")
                    nodes.append(out.strip())
                    rss = max(rss, maxrss)
                result["losetup_f_show_failed_and_retried"] = failed
                result["losetup_f_show_s"] = time.perf_counter() - t
                result["losetup_f_show_maxrss_kib"] = rss
                # A device someone else detached meanwhile (tests of others on this
                # machine) fails in losetup -d: counted here, not hidden.
                still = {i.path for i in loopcore.list_devices()
                         if (i.backing_file or "").startswith(directory)}
                result["losetup_lost_before_detach"] = len(set(nodes) - still)
                seconds, rss, _ = run_measured(["losetup", "-d", *nodes], check=False)
                result["losetup_d_all_s"] = seconds
                result["losetup_d_all_maxrss_kib"] = rss
            result["devices_bound"] = count
        finally:
            try:
                loopcore.detach_many(devices)
            except OSError:
                pass
            for d in devices:
                d.close()
            result["left_bound"] = detach_ours(directory)
            made = sorted(set(made) | ({int(e[4:]) for e in os.listdir("/sys/block")
                                        if e.startswith("loop") and e[4:].isdigit()} - before))
            result["devices_made"] = len(made)
            result["devices_removed"] = remove_made(made)
    return result


def report(result: Dict[str, object]) -> str:
    lines = [f"kernel {result['kernel']}, loop {result['loop_params']}; "
             f"{result.get('devices_bound')} devices bound (asked {result['devices_asked']})"]
    if "stopped" in result:
        lines.append("stopped " + str(result["stopped"]))
    lines.append(f"{'bound':>6} {'list_devices()':>15} {'peak B/dev':>10} "
                 f"{'loopcore list':>14} {'RSS KiB':>8} {'losetup -l':>11} {'RSS KiB':>8} "
                 f"{'find()':>9} {'loopcore find':>14} {'losetup -j':>11} {'fds ok':>6}")
    for row in result["checkpoints"]:  # type: ignore[attr-defined]
        fds = row["fds"]
        ok = (fds["api_with_inode"] == fds["cli_with_inode"] == row["ours_bound"])
        lines.append(
            f"{row['ours_bound']:6} {row['list_devices_s'] * 1e3:12.1f} ms "
            f"{row['list_devices_peak_bytes_per_device']:10.0f} "
            f"{row['loopcore_list_s'] * 1e3:11.1f} ms {row['loopcore_list_maxrss_kib']:8} "
            f"{row['losetup_l_s'] * 1e3:8.1f} ms {row['losetup_l_maxrss_kib']:8} "
            f"{row['find_s'] * 1e3:6.1f} ms {row['loopcore_find_s'] * 1e3:11.1f} ms "
            f"{row['losetup_j_s'] * 1e3:8.1f} ms {'yes' if ok else 'NO':>6}")
    for key in ("attach_many_cold_bursts_devices_wall_cpu_s",
                "detach_many_s", "attach_many_warm_s", "detach_many_warm_s", "losetup_f_show_s",
                "losetup_f_show_maxrss_kib",
                "losetup_d_all_s", "losetup_d_all_maxrss_kib", "losetup_lost_before_detach",
                "losetup_f_show_failed_and_retried",
                "left_bound",
                "devices_made", "devices_removed"):
        if key in result and key != "checkpoints":
            lines.append(f"{key}: {result[key]}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--no-losetup-attach", action="store_true",
                        help="skip the N `losetup -f --show` processes")
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.scale: needs root", file=sys.stderr)
        return 1
    # `kill PID` ends it through run()'s clean-up too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args.devices, losetup_attach=not args.no_losetup_attach)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["left_bound"] else 0


if __name__ == "__main__":
    sys.exit(main())
