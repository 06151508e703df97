"""Cost of one device-mapper create+load+resume+remove cycle: loopcore.dm
vs the same ioctls in C (benchmarks/dm_floor.c: bare, and with the
/dev/mapper node made and removed as loopcore does without udev) and vs
`dmsetup create` + `dmsetup remove`, measured side by side (interleaved
rounds, same kernel, same table).  Runs where device-mapper exists: inside
the test VM via benchmarks/dm-bench.  Prints a summary and writes JSON.

The table is one linear target over a loop device attached for the run.
dmsetup runs without udev (DM_DISABLE_UDEV=1, --noudevsync), so it makes
and removes /dev/mapper nodes itself, as loopcore does.
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
    args = ap.parse_args()

    env = dict(os.environ, DM_DISABLE_UDEV="1")
    with tempfile.NamedTemporaryFile(dir="/dev/shm", suffix=".img") as backing, \
            tempfile.TemporaryDirectory() as tmp:
        backing.truncate(1 << 20)
        loop = loopcore.attach(backing.name, direct_io=False)
        try:
            table = dm.Table([dm.linear(0, 2048, loop)])
            text = str(table)
            mapper = dm.DeviceMapper()
            target = table[0]
            floor = args.floor or build_floor(tmp)

            def run_ours(n: int) -> float:
                t0 = time.perf_counter()
                for i in range(n):
                    name = f"lcbench-ours-{i}"
                    mapper.create(name, table=table)
                    mapper.remove(name)
                return (time.perf_counter() - t0) / n

            def run_floor(mode: str) -> Callable[[int], float]:
                def run(n: int) -> float:
                    out = subprocess.run([floor, mode, str(n), f"lcbench-c{mode}-", target.type,
                                          target.params, str(target.length)],
                                         check=True, capture_output=True, text=True).stdout
                    return float(out) / 1e9
                return run

            def run_theirs(n: int) -> float:
                t0 = time.perf_counter()
                for i in range(n):
                    name = f"lcbench-dmsetup-{i}"
                    # stderr: its notice that udev is bypassed, once per call
                    subprocess.run([DMSETUP, "--noudevsync", "create", name, "--table", text],
                                   env=env, check=True, stdin=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                    subprocess.run([DMSETUP, "--noudevsync", "remove", name], env=env,
                                   check=True, stdin=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                return (time.perf_counter() - t0) / n

            contenders: Dict[str, Callable[[int], float]] = {
                "loopcore": run_ours, "c_bare": run_floor("bare"),
                "c_nodes": run_floor("nodes"), "dmsetup": run_theirs}
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
        "rounds": args.rounds,
        **{f"{k}_cycle_ms": [round(x * 1e3, 4) for x in v] for k, v in samples.items()},
        **{f"{k}_median_ms": round(m * 1e3, 4) for k, m in med.items()},
        "ratio": round(med["dmsetup"] / med["loopcore"], 1),
        "vs_c_same_syscalls": round(med["loopcore"] / med["c_nodes"], 3),
        "vs_c_bare": round(med["loopcore"] / med["c_bare"], 3),
    }
    print(f"dm cycle (create+load+resume+remove, linear over a loop device), "
          f"median of {args.rounds} interleaved rounds on {result['kernel']}:")
    labels = {"loopcore": "loopcore.dm", "c_nodes": "C, same syscalls (ioctls + node)",
              "c_bare": "C, the four ioctls", "dmsetup": "dmsetup"}
    for k, label in labels.items():
        print(f"  {label:34}: {med[k] * 1e3:8.3f} ms/cycle   rounds "
              f"{result[f'{k}_cycle_ms']}")
    print(f"  loopcore = {result['vs_c_same_syscalls']:.2f}x the same syscalls in C, "
          f"{result['vs_c_bare']:.2f}x the bare ioctls; {result['ratio']:.1f}x faster "
          f"than dmsetup")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0

if __name__ == "__main__":
    sys.exit(main())
