"""Before and after in one run: loopcore's attach+detach cycle (and, where
device-mapper exists, its dm create+remove cycle) from this tree and from
another checkout (the baseline, e.g. the last release), side by side.

    python -m benchmarks.before_after --baseline DIR [--dm] [--rounds N]

Each tree runs in its own long-lived worker process (``tree_worker.py``,
its own interpreter: ``DIR/.venv/bin/python`` when there is one, with
``DIR/src`` first on the path), so both pay the same process and import
costs; rounds alternate which goes first, so drift of a shared machine
cancels.  Prints the medians and after/before ratios (below 1: faster);
``--json FILE`` keeps every round.  ``benchmarks/before-after`` runs the
dm part in the test VM.  Needs root; every device is the workers' own.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Tree:
    """One checkout's worker process."""

    def __init__(self, label: str, root: str, backing: str, direct_io: bool) -> None:
        python = os.path.join(root, ".venv", "bin", "python")
        env = dict(os.environ, PYTHONPATH=os.path.join(root, "src"))
        self.label = label
        self.proc = subprocess.Popen(
            [python if os.path.exists(python) else sys.executable,
             os.path.join(HERE, "tree_worker.py"), backing, "1" if direct_io else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.source = self.ask("which")

    def ask(self, command: str) -> object:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the {self.label} worker died on {command!r}")
        return json.loads(answer)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def measure(trees: List[Tree], kind: str, cycles: int, rounds: int) -> Dict[str, List[float]]:
    """ns per cycle of each tree for ``rounds`` rounds of ``cycles`` cycles."""
    for tree in trees:
        tree.ask(f"{kind} {max(cycles // 10, 2)}")  # warm up
    samples: Dict[str, List[float]] = {tree.label: [] for tree in trees}
    for r in range(rounds):
        for tree in trees[r % 2:] + trees[:r % 2]:
            samples[tree.label].append(float(tree.ask(f"{kind} {cycles}")))  # type: ignore[arg-type]
    return samples


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.before_after")
    ap.add_argument("--baseline", required=True, metavar="DIR", help="the other checkout")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--cycles", type=int, default=1000, help="loop cycles per round")
    ap.add_argument("--dm", action="store_true", help="also the dm cycle (device-mapper needed)")
    ap.add_argument("--dm-only", action="store_true", help="only the dm cycle")
    ap.add_argument("--dm-cycles", type=int, default=50, help="dm cycles per round")
    ap.add_argument("--direct-io", choices=("on", "off"), default="on")
    ap.add_argument("--tmpdir", default="/var/tmp",
                    help="where the backing file goes (default: %(default)s)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    result: Dict[str, object] = {"baseline": os.path.abspath(args.baseline), "rounds": args.rounds}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        backing = os.path.join(tmp, "cycle.img")
        with open(backing, "wb") as f:
            f.truncate(16 << 20)
        trees = [Tree("before", args.baseline, backing, args.direct_io == "on"),
                 Tree("after", ROOT, backing, args.direct_io == "on")]
        try:
            kinds = ([] if args.dm_only else [("loop", args.cycles)]) + \
                ([("dm", args.dm_cycles)] if args.dm or args.dm_only else [])
            for kind, cycles in kinds:
                samples = measure(trees, kind, cycles, args.rounds)
                med = {k: statistics.median(v) for k, v in samples.items()}
                ratio = med["after"] / med["before"]
                result[kind] = {"ns_per_cycle": samples, "median_ns": med, "after_vs_before": ratio}
                name = "attach+detach" if kind == "loop" else "dm create+remove"
                print(f"{name} cycle, median of {args.rounds} alternating rounds of {cycles}:")
                for tree in trees:
                    print(f"  {tree.label:6} {med[tree.label] / 1e3:10.1f} us   ({tree.source})")
                print(f"  after / before = {ratio:.3f}")
        finally:
            for tree in trees:
                tree.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
