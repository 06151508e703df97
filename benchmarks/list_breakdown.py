"""Where a ``loopcore list`` process's time goes, as a ladder of processes
on the same interpreter, each one step more of what the command does::

    python -m benchmarks.list_breakdown [--runs 40]

1. ``python -c pass``: the interpreter's own start-up;
2. ``import loopcore``: the package (its lazy exports, nothing else);
3. ``import loopcore._native``: cffi's runtime and the compiled C shim;
4. ``import loopcore.loop.discovery``: the library's listing modules;
5. ``... list_devices()``: one walk of every loop device on the machine;
6. ``loopcore list``: the console script, the command line's modules and
   the printing.

Every step runs ``--runs`` times, the steps interleaved run by run (a busy
machine's drift falls on all of them alike); it prints, per step, the
median and best CPU time (user + system, from ``wait4``) and wall time,
the step's increment over the one before, and its ratio to step 1.
Needs no root (the walk lists whatever devices the machine has).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Dict, List, Sequence, Tuple

__all__ = ["main", "STEPS"]

_DISCOVERY = "import loopcore.loop.discovery"
#: (label, argv after the interpreter)
STEPS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("python -c pass", ("-c", "pass")),
    ("+ import loopcore", ("-c", "import loopcore")),
    ("+ cffi, _native", ("-c", "import loopcore._native")),
    ("+ listing modules", ("-c", _DISCOVERY)),
    ("+ the walk", ("-c", _DISCOVERY + "; loopcore.loop.discovery.list_devices()")),
    ("loopcore list", (os.path.join(os.path.dirname(sys.executable), "loopcore"), "list")),
)


def _run(argv: Sequence[str]) -> Tuple[float, float]:
    """CPU and wall ms of one process (stdout to /dev/null)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.execve(argv[0], list(argv), env)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"{' '.join(argv)}: wait status {status}")
    return (usage.ru_utime + usage.ru_stime) * 1e3, wall * 1e3


def measure(runs: int) -> Dict[str, Dict[str, List[float]]]:
    """{step label: {"cpu": [ms...], "wall": [ms...]}}, steps interleaved."""
    samples: Dict[str, Dict[str, List[float]]] = {
        label: {"cpu": [], "wall": []} for label, _ in STEPS}
    for _ in range(runs):
        for label, args in STEPS:
            cpu, wall = _run([sys.executable, *args])
            samples[label]["cpu"].append(cpu)
            samples[label]["wall"].append(wall)
    return samples


def main(argv: "Sequence[str] | None" = None) -> int:
    """See the module's docstring."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.list_breakdown",
                                 description="a loopcore list process, step by step")
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args(argv)
    samples = measure(args.runs)
    print(f"{'step':22} {'cpu med':>8} {'best':>7} {'+med':>7} {'x pass':>7} "
          f"{'wall med':>9} {'best':>7}")
    base = previous = None
    for label, _ in STEPS:
        cpu, wall = samples[label]["cpu"], samples[label]["wall"]
        med = statistics.median(cpu)
        base = med if base is None else base
        step = med - previous if previous is not None else med
        print(f"{label:22} {med:8.2f} {min(cpu):7.2f} {step:+7.2f} {med / base:6.2f}x "
              f"{statistics.median(wall):9.2f} {min(wall):7.2f}")
        previous = med
    return 0


if __name__ == "__main__":
    sys.exit(main())
