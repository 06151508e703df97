"""Cost of one device-mapper create+load+resume+remove cycle: loopcore.dm
vs `dmsetup create` + `dmsetup remove`, measured side by side (interleaved
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

import loopcore
from loopcore import dm

DMSETUP = "/sbin/dmsetup" if os.path.exists("/sbin/dmsetup") else "dmsetup"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loopcore-cycles", type=int, default=100, help="per round")
    ap.add_argument("--dmsetup-cycles", type=int, default=10, help="per round")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--udev", action="store_true", help="both wait for udev")
    args = ap.parse_args()

    env = dict(os.environ)
    sync = [] if args.udev else ["--noudevsync"]
    if args.udev:
        env.pop("DM_DISABLE_UDEV", None)
    else:
        env["DM_DISABLE_UDEV"] = "1"
    with tempfile.NamedTemporaryFile(dir="/dev/shm", suffix=".img") as backing:
        backing.truncate(1 << 20)
        loop = loopcore.attach(backing.name, direct_io=False)
        try:
            table = dm.Table([dm.linear(0, 2048, loop)])
            text = str(table)
            mapper = dm.DeviceMapper(udev="wait" if args.udev else "off")
            ours, theirs = [], []

            def run_ours(n: int) -> float:
                t0 = time.perf_counter()
                for i in range(n):
                    name = f"lcbench-ours-{i}"
                    mapper.create(name, table=table)
                    mapper.remove(name)
                return (time.perf_counter() - t0) / n

            def run_theirs(n: int) -> float:
                t0 = time.perf_counter()
                for i in range(n):
                    name = f"lcbench-dmsetup-{i}"
                    subprocess.run([DMSETUP, *sync, "create", name, "--table", text],
                                   env=env, check=True, stdin=subprocess.DEVNULL)
                    subprocess.run([DMSETUP, *sync, "remove", name], env=env,
                                   check=True, stdin=subprocess.DEVNULL)
                return (time.perf_counter() - t0) / n

            run_ours(3)
            run_theirs(1)  # warm up both (page cache, module loads)
            for r in range(args.rounds):
                if r % 2 == 0:
                    ours.append(run_ours(args.loopcore_cycles))
                    theirs.append(run_theirs(args.dmsetup_cycles))
                else:
                    theirs.append(run_theirs(args.dmsetup_cycles))
                    ours.append(run_ours(args.loopcore_cycles))
            mapper.close()
        finally:
            loop.detach()

    o, t = statistics.median(ours), statistics.median(theirs)
    result = {
        "kernel": os.uname().release,
        "udev": args.udev,
        "rounds": args.rounds,
        "loopcore_cycle_ms": [round(x * 1e3, 3) for x in ours],
        "dmsetup_cycle_ms": [round(x * 1e3, 3) for x in theirs],
        "loopcore_median_ms": round(o * 1e3, 3),
        "dmsetup_median_ms": round(t * 1e3, 3),
        "ratio": round(t / o, 1),
    }
    print(f"dm cycle (create+load+resume+remove, linear over a loop device, "
          f"{'waiting for udev' if args.udev else 'no udev'}), "
          f"median of {args.rounds} interleaved rounds on {result['kernel']}:")
    print(f"  loopcore.dm : {o * 1e3:8.2f} ms/cycle   rounds {result['loopcore_cycle_ms']}")
    print(f"  dmsetup     : {t * 1e3:8.2f} ms/cycle   rounds {result['dmsetup_cycle_ms']}")
    print(f"  loopcore is {t / o:.1f}x faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
