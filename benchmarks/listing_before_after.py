"""The library side of ``loopcore list``, this tree beside another
checkout's ``src`` (e.g. main's), in one run::

    python -m benchmarks.listing_before_after --baseline DIR [--rounds 5] [--runs 20]

For each tree, medians over interleaved rounds (the trees and contenders
take turns, so a busy machine's drift hits them alike):

- **import**: a ``python -c 'import loopcore.loop.discovery,
  loopcore.loop.info'`` process less a ``python -c pass`` one, wall time
  and (in brackets) CPU time, in ms;
- **walk**: one ``loopcore.list_devices()`` in a warm process, in ms, with
  whatever devices the machine has (bound or not: a builder's machine may
  have a thousand unbound ones, and the walk must stay fast with them);
- **import+walk**: the library's share of a ``loopcore list`` process.

The whole ``loopcore list`` process and the batch forms are
``benchmarks/cli_before_after.py``'s.  "after" is the loopcore this
interpreter imports; the baseline's ``src`` needs its C extension built in
place (``scripts/bootstrap``; for a plain checkout, copy one in).
Needs no root: nothing is attached.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

from ._common import source_trees

__all__ = ["main", "measure"]

IMPORT = "import loopcore.loop.discovery, loopcore.loop.info"
# One process per tree and round: import, warm up, then the fastest mean of
# a few batches of list_devices() (the walk's cost, not the scheduler's).
WALK = """
import time, loopcore
loopcore.list_devices()
means = []
for _ in range(5):
    t0 = time.perf_counter_ns()
    for _ in range(20):
        loopcore.list_devices()
    means.append((time.perf_counter_ns() - t0) / 20)
print(min(means) / 1e6)
"""


def _process(code: str, src: str) -> Tuple[float, float]:
    """Wall and CPU ms of ``python -c code`` with ``src`` first on the path."""
    env = dict(os.environ, PYTHONPATH=src)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter_ns()
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = (time.perf_counter_ns() - t0) / 1e6
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e3
    return wall, cpu


def _walk_ms(src: str) -> float:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", WALK], check=True, env=env,
                         capture_output=True, text=True).stdout
    return float(out.split()[-1])


def measure(trees: Dict[str, str], rounds: int, runs: int) -> Dict[str, Dict[str, float]]:
    """{label: figures} for each tree (label -> its ``src`` directory)."""
    for src in trees.values():  # compile the bytecode first, as pip does
        _process(IMPORT, src)
    samples: Dict[str, Dict[str, List[float]]] = {
        label: {"pass": [], "pass_cpu": [], "import": [], "import_cpu": [], "walk": []}
        for label in trees}
    labels = list(trees)
    for r in range(rounds):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            s = samples[label]
            for _ in range(runs):
                wall, cpu = _process("pass", trees[label])
                s["pass"].append(wall)
                s["pass_cpu"].append(cpu)
                wall, cpu = _process(IMPORT, trees[label])
                s["import"].append(wall)
                s["import_cpu"].append(cpu)
            s["walk"].append(_walk_ms(trees[label]))
    figures = {}
    for label, s in samples.items():
        med = {k: statistics.median(v) for k, v in s.items()}
        figures[label] = {
            "import_ms": med["import"] - med["pass"],
            "import_cpu_ms": med["import_cpu"] - med["pass_cpu"],
            "walk_ms": med["walk"],
            "pass_ms": med["pass"],
        }
    return figures


def main(argv: "Sequence[str] | None" = None) -> int:
    """See the module's docstring."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.listing_before_after",
                                 description="the library side of loopcore list, this tree "
                                             "beside a baseline checkout")
    ap.add_argument("--baseline", metavar="DIR", help="another checkout (its src/ is used)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20, help="processes per contender and round")
    args = ap.parse_args(argv)
    trees = source_trees(args.baseline)
    loops = sum(1 for name in os.listdir("/sys/block") if name.startswith("loop"))
    print(f"{loops} loop devices in /sys/block; medians of {args.rounds} rounds "
          f"x {args.runs} processes")
    figures = measure(trees, args.rounds, args.runs)
    print(f"{'':8} {'import ms':>9} {'(cpu)':>6} {'walk ms':>8} {'import+walk':>11} "
          f"{'pass ms':>8}")
    for label, f in figures.items():
        print(f"{label:8} {f['import_ms']:9.2f} {f['import_cpu_ms']:6.2f} {f['walk_ms']:8.2f} "
              f"{f['import_ms'] + f['walk_ms']:11.2f} {f['pass_ms']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
