"""``loopcore list`` and the batch forms, this tree beside another
checkout's ``src`` (e.g. main's), in one run: the same console script and
interpreter, every contender interleaved round by round::

    python -m benchmarks.cli_before_after --baseline DIR [--files 100] [--rounds 5] [--runs 20]

prints, for each tree, ``loopcore list`` / ``python -c pass`` and 2N
``losetup`` processes / the batch pair (N files attached by one
``loopcore attach --show FILE...``, detached by one ``loopcore detach
DEV...``), medians of wall time and, in brackets, of CPU time.  Needs root.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ._common import source_trees
from .cli_bench import before_after

__all__ = ["main"]


def main(argv: "Sequence[str] | None" = None) -> int:
    """See the module's docstring."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cli_before_after",
                                 description="loopcore list and the batch forms, this tree "
                                             "beside a baseline checkout (needs root)")
    ap.add_argument("--baseline", metavar="DIR", help="another checkout (its src/ is used)")
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20, help="list processes per round")
    args = ap.parse_args(argv)
    trees = source_trees(args.baseline)
    figures = before_after(trees, args.files, args.rounds, args.runs)
    print(f"{'':8} {'list ms':>8} {'pass ms':>8} {'list/pass':>9} {'(cpu)':>6} "
          f"{'batch ms':>9} {'losetup ms':>10} {'losetup/batch':>13} {'(cpu)':>6}")
    for label, f in figures.items():
        print(f"{label:8} {f['list_ms']:8.1f} {f['python_pass_ms']:8.1f} "
              f"{f['list_vs_python']:8.2f}x {f['list_vs_python_cpu']:5.2f}x "
              f"{f['batch_ms']:9.1f} {f['losetup_ms']:10.1f} {f['losetup_vs_batch']:12.2f}x "
              f"{f['losetup_vs_batch_cpu']:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
