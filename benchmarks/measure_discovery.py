"""Time listing N bound loop devices (default 1000), every method in one run.

Binds N devices with loopcore.attach_many (one sparse 1 MiB backing file
each; N = 10000 needs that many minors: the loop driver's max_part sets
how many a device takes), then, interleaved round by round:

  list_devices()        loopcore's Python API (one C call + parsing)
  C scan alone          lc_scan_loops into a ready buffer: the plain C cost
  C scan, sysfs files   the same reading every sysfs attribute file
  plain Python          idiomatic Python reading the same sysfs attributes
                        and LOOP_GET_STATUS64 for the backing dev/ino
  loopcore list --json  the CLI as a process
  losetup -l --json     default columns (no device opened)
  losetup -l --json --output-all   incl. BACK-INO (opens every device, as we do)

and detaches everything it bound, whatever happens, and removes the device
nodes the kernel made for it (those that were not there before, once
unbound: LOOP_CTL_REMOVE refuses any device someone uses).  Needs root and
an fd limit above N.
Usage: python benchmarks/measure_discovery.py [N] [ROUNDS]  (from the repository root)
"""
import concurrent.futures
import errno
import fcntl
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import loopcore
from loopcore._native import ffi, lib

LOOP_GET_STATUS64 = 0x4C05
LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")


def plain_python():
    """What one would write without loopcore: read the files, one by one."""
    devices = []
    for name in os.listdir("/sys/block"):
        if not name.startswith("loop") or not name[4:].isdigit():
            continue
        base = f"/sys/block/{name}"
        try:
            with open(f"{base}/loop/backing_file") as f:
                backing = f.read().rstrip("\n")
        except FileNotFoundError:
            continue
        info = {"name": f"/dev/{name}", "back-file": backing}
        for attr in ("loop/offset", "loop/sizelimit", "loop/autoclear", "loop/partscan",
                     "loop/dio", "ro", "queue/logical_block_size", "size", "dev", "diskseq"):
            try:
                with open(f"{base}/{attr}") as f:
                    info[attr] = f.read().strip()
            except FileNotFoundError:
                info[attr] = None
        try:
            fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                raw = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(LOOP_INFO64.size))
                info["back-dev"], info["back-ino"] = LOOP_INFO64.unpack(raw)[:2]
            finally:
                os.close(fd)
        except OSError:
            pass
        devices.append(info)
    devices.sort(key=lambda d: int(d["name"][9:]))
    return devices


def c_scan_only(flags=0):
    # A buffer with room for every device bound now, sized as list_devices()
    # sizes its own: ask the scan how much it needs, add slack.
    needed = ffi.new("uint64_t *")
    size = 1 << 16
    while True:
        buf = ffi.new("uint64_t[]", size // 8)
        count = lib.lc_scan_loops(buf, size, flags, needed)
        if count != -errno.ERANGE:
            break
        size = max(size * 2, (int(needed[0]) * 3 // 2 + 4096) & ~7)

    def run():
        count = lib.lc_scan_loops(buf, size, flags, needed)
        assert count >= 0, count
        return count
    return run


def process(*argv):
    def run():
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return run


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    if os.geteuid() != 0:
        print("measure-discovery: needs root", file=sys.stderr)
        return 1
    devices = []
    before = {int(e[4:]) for e in os.listdir("/sys/block")
              if e.startswith("loop") and e[4:].isdigit()}
    with tempfile.TemporaryDirectory(prefix="loopcore-measure-") as tmp:
        try:
            paths = []
            for i in range(n):
                paths.append(os.path.join(tmp, f"backing-{i:05d}.img"))
                with open(paths[-1], "wb") as f:
                    f.truncate(1 << 20)
            t0 = time.perf_counter()
            devices = loopcore.attach_many(paths, direct_io=False)
            print(f"bound {n} devices in {time.perf_counter() - t0:.2f} s", flush=True)
            total = len(loopcore.list_devices())
            print(f"bound loop devices on the machine now: {total} (others' included)",
                  flush=True)
            loopcore.list_devices()  # warm the buffer size
            methods = {
                "list_devices()": loopcore.list_devices,
                "C scan alone (lc_scan_loops)": c_scan_only(),
                "C scan, sysfs files (LC_SCAN_SYSFS)": c_scan_only(lib.LC_SCAN_SYSFS),
                "plain Python sysfs + ioctl": plain_python,
                "loopcore list --json (process)": process(sys.executable, "-m", "loopcore",
                                                          "list", "--json"),
                "losetup -l --json": process("losetup", "-l", "--json"),
                "losetup -l --json --output-all": process("losetup", "-l", "--json",
                                                          "--output-all"),
            }
            times = {name: [] for name in methods}
            names = list(methods)
            for r in range(rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    t = time.perf_counter()
                    methods[name]()
                    times[name].append(time.perf_counter() - t)
            base = statistics.median(times["list_devices()"])
            print(f"\n{rounds} interleaved rounds, {total} bound devices listed each time\n")
            print(f"{'method':36} {'median ms':>10} {'min ms':>8} {'vs list_devices()':>18}")
            for name in names:
                med = statistics.median(times[name])
                print(f"{name:36} {med * 1e3:10.2f} {min(times[name]) * 1e3:8.2f} "
                      f"{med / base:17.2f}x")
        finally:
            failed = 0
            try:
                loopcore.detach_many(devices)
            except OSError:
                failed = sum(not d.closed for d in devices)
            for d in devices:
                d.close()
            left = [i.path for i in loopcore.list_devices()
                    if (i.backing_file or "").startswith(tmp)]
            print(f"\ndetached {len(devices) - failed} devices; still bound to our files: "
                  f"{left or 'none'}")
            # LOOP_CTL_REMOVE waits for a queue freeze (an RCU grace period
            # or more), tens of ms each: in parallel, as the waits overlap.
            made = [d.number for d in devices if d.number not in before]
            with loopcore.LoopControl() as ctl:

                def remove(number: int) -> int:
                    try:
                        ctl.remove(number)
                        return 1
                    except OSError:
                        return 0  # in use by someone else by now: theirs

                with concurrent.futures.ThreadPoolExecutor(32) as pool:
                    removed = sum(pool.map(remove, made))
            print(f"removed {removed} device nodes made for this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
