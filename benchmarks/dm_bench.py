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
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List

import loopcore
from loopcore import dm

DMSETUP = "/sbin/dmsetup" if os.path.exists("/sbin/dmsetup") else "dmsetup"
HERE = os.path.dirname(os.path.abspath(__file__))


def build_floor(directory: str) -> str:
    """Compile dm_floor.c into ``directory``; the program's path."""
    exe = os.path.join(directory, "dm_floor")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "dm_floor.c")], check=True)
    return exe


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loopcore-cycles", type=int, default=100, help="per round")
    ap.add_argument("--dmsetup-cycles", type=int, default=10, help="per round")
    ap.add_argument("--floor", help="a dm_floor program built already (the VM cannot "
                                    "always compile)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--udev", action="store_true", help="both wait for udev")
    args = ap.parse_args()

    env = dict(os.environ)
    sync = [] if args.udev else ["--noudevsync"]
    if args.udev:
        env.pop("DM_DISABLE_UDEV", None)
    else:
        env["DM_DISABLE_UDEV"] = "1"
    with tempfile.NamedTemporaryFile(dir="/dev/shm", suffix=".img") as backing, \
            tempfile.TemporaryDirectory() as tmp:
        backing.truncate(1 << 20)
        loop = loopcore.attach(backing.name, direct_io=False)
        try:
            table = dm.Table([dm.linear(0, 2048, loop)])
            text = str(table)
            mapper = dm.DeviceMapper(udev="wait" if args.udev else "off")
            target = table[0]

            def run_ours(n: int) -> float:
                t0 = time.perf_counter()
                for i in range(n):
                    name = f"lcbench-ours-{i}"
                    mapper.create(name, table=table)
                    mapper.remove(name)
                return (time.perf_counter() - t0) / n

            def run_floor(mode: str) -> Callable[[int], float]:
                def run(n: int) -> float:
                    out = subprocess.run([floor, mode, str(n), f"lcbench-c{mode}-",
                                          target.target_type, target.params, str(target.length)],
                                         check=True, capture_output=True, text=True).stdout
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
        finally:
            loop.detach()

    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "kernel": os.uname().release,
        "udev": args.udev,
        "rounds": args.rounds,
        **{f"{k}_cycle_ms": [round(x * 1e3, 4) for x in v] for k, v in samples.items()},
        **{f"{k}_median_ms": round(m * 1e3, 4) for k, m in med.items()},
        "ratio": round(med["dmsetup"] / med["loopcore"], 1),
    }
    if not args.udev:
        result["vs_c_same_syscalls"] = round(med["loopcore"] / med["c_nodes"], 3)
        result["vs_c_bare"] = round(med["loopcore"] / med["c_bare"], 3)
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
        print(f"  loopcore = {result['vs_c_same_syscalls']:.2f}x the same syscalls in C, "
              f"{result['vs_c_bare']:.2f}x the bare ioctls")
    print(f"  loopcore is {result['ratio']:.1f}x faster than dmsetup")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
