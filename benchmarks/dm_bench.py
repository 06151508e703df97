"""Cost of one device-mapper create+load+resume+remove cycle: loopcore.dm
vs the same ioctls in C (benchmarks/dm_floor.c: bare, and with the
/dev/mapper node made and removed as loopcore does without udev) and vs
`dmsetup create` + `dmsetup remove`, measured side by side (interleaved
rounds, same kernel, same table).  Runs where device-mapper exists: inside
the test VM via benchmarks/dm-bench.  Prints a summary and writes JSON.

The table is one linear target over a loop device attached for the run.
By default both run without udev: dmsetup with DM_DISABLE_UDEV=1 and
--noudevsync, loopcore with udev="off", so each makes and removes the
/dev/mapper nodes itself.  With --udev both wait for udev instead (dmsetup's
cookie semaphore, loopcore's udev="wait"): each cycle then ends when udev
has made and removed the /dev/mapper and /dev/disk/by-id links.

Without --udev, where udevd runs (the test VM), its rule runs are paused
while the contenders are timed (``udevadm control --stop-exec-queue``;
resumed at the end, the events then handled late): no contender waits for
udev, but udev's work on their events would otherwise run on the same
CPUs meanwhile, and it is not the same work: dmsetup's events carry
libdevmapper's cookie flags, for which udev spawns ``dmsetup udevflags``
and ``dmsetup udevcomplete`` and probes the device, while loopcore's and
the C floor's (no cookie) find the device gone and spawn ``dmsetup info``
(about 0.2 s of the guest's CPU per event either way, more than a whole
cycle) -- each contender's backlog then slowed whichever ran next.

Also recorded, to show what bounds the ratios: the C floor's cycle step by
step ("split": most of it is DM_DEV_REMOVE), the start of a dmsetup
process (``dmsetup version``), which each dmsetup cycle pays twice, and
loopcore's Python layer alone here (benchmarks/dm_python_layer.py).
``--rcu-probe`` (changes a system setting for a moment: for a VM) also
times the split with /sys/kernel/rcu_expedited set.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterator, List

import loopcore
from loopcore import dm
from loopcore.dm.udev import udev_running

DMSETUP = "/sbin/dmsetup" if os.path.exists("/sbin/dmsetup") else "dmsetup"
HERE = os.path.dirname(os.path.abspath(__file__))


def build_floor(directory: str) -> str:
    """Compile dm_floor.c into ``directory``; the program's path."""
    exe = os.path.join(directory, "dm_floor")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "dm_floor.c")], check=True)
    return exe


RCU_EXPEDITED = "/sys/kernel/rcu_expedited"


@contextlib.contextmanager
def udev_paused(pause: bool) -> Iterator[bool]:
    """udevd's rule runs paused inside the block (events queue; udev
    handles them after), when ``pause`` and udevd runs.  Yields whether."""
    pause = pause and udev_running() and shutil.which("udevadm") is not None
    if not pause:
        yield False
        return
    subprocess.run(["udevadm", "settle", "--timeout=120"], check=False)  # earlier events
    subprocess.run(["udevadm", "control", "--stop-exec-queue"], check=True)
    try:
        yield True
    finally:
        subprocess.run(["udevadm", "control", "--start-exec-queue"], check=False)


def floor_split(floor: str, n: int, target: dm.Target) -> Dict[str, float]:
    """ms per step of ``n`` C floor cycles (dm_floor's split mode)."""
    out = subprocess.run([floor, "split", str(n), "lcbench-csplit-", target.target_type,
                          target.params, str(target.length)],
                         check=True, capture_output=True, text=True).stdout
    return {k: round(float(v) / 1e6, 3) for k, v in
            (line.split("=") for line in out.split())}


def process_start_ms(n: int = 10) -> float:
    """ms per ``dmsetup version`` process (start, library load, one ioctl)."""
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run([DMSETUP, "version"], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round((time.perf_counter() - t0) / n * 1e3, 3)


def python_layer_us(cycles: int = 2000) -> Dict[str, float]:
    """loopcore.dm's own share of a cycle here, its C calls stubbed
    (benchmarks/dm_python_layer.py): us per cycle, median of 5 rounds."""
    try:
        from . import dm_python_layer  # imported as benchmarks.dm_bench
    except ImportError:
        import dm_python_layer  # run as a script: this directory is on sys.path
    return {k: round(v, 2) for k, v in dm_python_layer.measure(cycles).items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loopcore-cycles", type=int, default=100, help="per round")
    ap.add_argument("--dmsetup-cycles", type=int, default=10, help="per round")
    ap.add_argument("--floor", help="a dm_floor program built already (the VM cannot "
                                    "always compile)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--udev", action="store_true", help="both wait for udev")
    ap.add_argument("--rcu-probe", action="store_true",
                    help="also time the C floor's steps with /sys/kernel/rcu_expedited "
                         "set (restored after; for a test VM)")
    args = ap.parse_args()

    env = dict(os.environ)
    sync = [] if args.udev else ["--noudevsync"]
    if args.udev:
        env.pop("DM_DISABLE_UDEV", None)
    else:
        env["DM_DISABLE_UDEV"] = "1"
    extra: Dict[str, object] = {}
    with tempfile.NamedTemporaryFile(dir="/dev/shm", suffix=".img") as backing, \
            tempfile.TemporaryDirectory() as tmp, udev_paused(not args.udev) as paused:
        backing.truncate(1 << 20)
        loop = loopcore.attach(backing.name, direct_io=False)
        try:
            table = dm.Table([dm.linear(0, 2048, loop)])
            text = str(table)
            mapper = dm.DeviceMapper(udev="wait" if args.udev else "off")
            target = table[0]

            # CPU time per cycle (user, system), the process's own for
            # loopcore, the child's for the C floor (its start included)
            cpu: Dict[str, List[List[float]]] = {"loopcore": [], "c_nodes": []}

            def charge(key: str, who: int, before: resource.struct_rusage, n: int) -> None:
                after = resource.getrusage(who)
                cpu[key].append([(after.ru_utime - before.ru_utime) / n * 1e3,
                                 (after.ru_stime - before.ru_stime) / n * 1e3])

            def run_ours(n: int) -> float:
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                for i in range(n):
                    name = f"lcbench-ours-{i}"
                    mapper.create(name, table=table)
                    mapper.remove(name)
                seconds = (time.perf_counter() - t0) / n
                charge("loopcore", resource.RUSAGE_SELF, r0, n)
                return seconds

            def run_floor(mode: str) -> Callable[[int], float]:
                def run(n: int) -> float:
                    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    out = subprocess.run([floor, mode, str(n), f"lcbench-c{mode}-",
                                          target.target_type, target.params, str(target.length)],
                                         check=True, capture_output=True, text=True).stdout
                    if mode == "nodes":
                        charge("c_nodes", resource.RUSAGE_CHILDREN, r0, n)
                    return float(out) / 1e9
                return run

            def run_theirs(n: int) -> float:
                t0 = time.perf_counter()
                for i in range(n):
                    name = f"lcbench-dmsetup-{i}"
                    # stderr: dmsetup's notice that udev is bypassed, once per call
                    subprocess.run([DMSETUP, *sync, "create", name, "--table", text],
                                   env=env, check=True, stdin=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                    subprocess.run([DMSETUP, *sync, "remove", name], env=env,
                                   check=True, stdin=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                return (time.perf_counter() - t0) / n

            contenders: Dict[str, Callable[[int], float]] = {
                "loopcore": run_ours, "dmsetup": run_theirs}
            if not args.udev:  # the C floor does not wait for udev
                floor = args.floor or build_floor(tmp)
                contenders.update(c_bare=run_floor("bare"), c_nodes=run_floor("nodes"))
            cycles = {"loopcore": args.loopcore_cycles, "c_bare": args.loopcore_cycles,
                      "c_nodes": args.loopcore_cycles, "dmsetup": args.dmsetup_cycles}
            samples: Dict[str, List[float]] = {k: [] for k in contenders}
            for run in contenders.values():
                run(2)  # warm up (page cache, module loads)
            order = list(contenders)
            for r in range(args.rounds):  # rotated each round, so drift cancels
                for k in order[r % len(order):] + order[:r % len(order)]:
                    samples[k].append(contenders[k](cycles[k]))
            mapper.close()
            for key, rows in cpu.items():
                if len(rows) > 1:  # the first is the warm-up's
                    extra[f"{key}_cpu_ms"] = {
                        "user": round(statistics.median(r[0] for r in rows[1:]), 3),
                        "sys": round(statistics.median(r[1] for r in rows[1:]), 3)}
            if not args.udev:
                extra["c_split_ms"] = floor_split(floor, args.loopcore_cycles, target)
                if args.rcu_probe and os.path.exists(RCU_EXPEDITED):
                    with open(RCU_EXPEDITED) as f:
                        before = f.read().strip()
                    try:
                        with open(RCU_EXPEDITED, "w") as f:
                            f.write("1")
                        extra["c_split_rcu_expedited_ms"] = floor_split(
                            floor, args.loopcore_cycles, target)
                    finally:
                        with open(RCU_EXPEDITED, "w") as f:
                            f.write(before)
            extra["dmsetup_process_ms"] = process_start_ms()
            extra["python_layer_us"] = python_layer_us()
        finally:
            loop.detach()

    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "kernel": os.uname().release,
        "udev": args.udev,
        "udev_rules_paused": paused,
        "rounds": args.rounds,
        **{f"{k}_cycle_ms": [round(x * 1e3, 4) for x in v] for k, v in samples.items()},
        **{f"{k}_median_ms": round(m * 1e3, 4) for k, m in med.items()},
        "ratio": round(med["dmsetup"] / med["loopcore"], 1),
    }
    if not args.udev:
        result["vs_c_same_syscalls"] = round(med["loopcore"] / med["c_nodes"], 3)
        result["vs_c_bare"] = round(med["loopcore"] / med["c_bare"], 3)
        # each round's own ratio (the two ran minutes apart at most)
        result["vs_c_same_syscalls_rounds"] = [
            round(a / b, 3) for a, b in zip(samples["loopcore"], samples["c_nodes"])]
    result.update(extra)
    print(f"dm cycle (create+load+resume+remove, linear over a loop device, "
          f"{'waiting for udev' if args.udev else 'no udev'}), "
          f"median of {args.rounds} interleaved rounds on {result['kernel']}:")
    labels = {"loopcore": "loopcore.dm", "c_nodes": "C, same syscalls (ioctls + node)",
              "c_bare": "C, the four ioctls", "dmsetup": "dmsetup"}
    for k, label in labels.items():
        if k in med:
            print(f"  {label:34}: {med[k] * 1e3:8.3f} ms/cycle   rounds "
                  f"{result[f'{k}_cycle_ms']}")
    if not args.udev:
        per_round = result["vs_c_same_syscalls_rounds"]
        assert isinstance(per_round, list)
        print(f"  loopcore = {result['vs_c_same_syscalls']:.2f}x the same syscalls in C, "
              f"{result['vs_c_bare']:.2f}x the bare ioctls (round by round: "
              f"median {statistics.median(per_round):.2f}x, {min(per_round):.2f}-"
              f"{max(per_round):.2f}x)")
    print(f"  loopcore is {result['ratio']:.1f}x faster than dmsetup")
    print(f"  udev's rule runs {'paused' if paused else 'not paused'} while timing; "
          f"a dmsetup process (dmsetup version): {result['dmsetup_process_ms']:.1f} ms")
    for key, label in (("loopcore_cpu_ms", "loopcore.dm"), ("c_nodes_cpu_ms", "C, same syscalls")):
        if key in result:
            used = result[key]
            assert isinstance(used, dict)
            print(f"  CPU per cycle, {label:17}: user {used['user']:.2f} ms, "
                  f"system {used['sys']:.2f} ms")
    layer = result["python_layer_us"]
    assert isinstance(layer, dict)
    print(f"  loopcore.dm's Python layer, C calls stubbed: {layer['median']:.1f} us/cycle")
    for key, label in (("c_split_ms", "C floor by step"),
                       ("c_split_rcu_expedited_ms", "same, rcu_expedited=1")):
        if key in result:
            steps = result[key]
            assert isinstance(steps, dict)
            print(f"  {label:34}: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
                  + " ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
