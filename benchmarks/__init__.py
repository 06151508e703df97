"""loopcore's benchmark harness: ``python -m benchmarks`` from the repository root
(``make bench``).  It is not part of the installed package.

Runs the scenarios side by side in one invocation, interleaving the
contenders round by round so drift of a shared machine cancels, and
writes a table (stdout), ``results.json`` (every sample and the machine)
and PNG plots (with matplotlib, which ``scripts/bootstrap`` installs).
Needs root and /dev/loop-control; every device it binds is bound to a file
in its own temporary directory and detached again, even on Ctrl-C.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from . import report
from ._common import Progress, Workspace, compile_floor, describe_machine
from .scenarios import QUICK, SCENARIOS, VM_SCENARIOS, Settings, steps

__all__ = ["Settings", "main", "run"]


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _add_options(parser: argparse.ArgumentParser) -> None:
    full = Settings()
    add = parser.add_argument
    add("--quick", action="store_true",
        help="small sizes that finish in under a minute (explicit options still win)")
    add("--out", default="bench-results", metavar="DIR",
        help="where results.json and the plots go (default: %(default)s)")
    add("--scenarios", default=",".join(full.scenarios), metavar="LIST",
        help="comma-separated subset of: %(default)s, and the VM's "
             f"{','.join(VM_SCENARIOS)}")
    add("--vm", action="store_true",
        help=f"also run {' and '.join(VM_SCENARIOS)} in the test VM (qemu; "
             "scripts/bootstrap --vm)")
    add("--cycles", type=_positive, metavar="N",
        help=f"attach+detach cycles per fast contender (full: {full.cycles})")
    add("--slow-cycles", type=_positive, metavar="N",
        help=f"cycles for losetup processes and the legacy path (full: {full.slow_cycles})")
    add("--cycle-rounds", type=_positive, metavar="N",
        help=f"interleaving rounds of the cycle scenario (full: {full.cycle_rounds})")
    add("--direct-io", choices=("on", "off"), default="on",
        help="direct I/O for every cycle and contention contender (default: on, "
             "loopcore's default)")
    add("--devices", type=_int_list, metavar="N,N,...",
        help="bound device counts for discovery (full: 10,100,1000)")
    add("--discovery-rounds", type=_positive, metavar="N",
        help=f"interleaving rounds per device count (full: {full.discovery_rounds})")
    add("--procs", type=_int_list, metavar="P,P,...",
        help="process counts for contention (full: 1,2,4,8)")
    add("--contention-cycles", type=_positive, metavar="N",
        help=f"cycles per process in contention (full: {full.contention_cycles})")
    add("--contention-rounds", type=_positive, metavar="N",
        help=f"interleaving rounds of contention (full: {full.contention_rounds})")
    add("--io-mib", type=_positive, metavar="MIB",
        help=f"size of the I/O scenario's file (full: {full.io_mib})")
    add("--io-rounds", type=_positive, metavar="N",
        help=f"rounds of the I/O scenario (full: {full.io_rounds})")
    add("--burst-size", type=_positive, metavar="N",
        help=f"devices one burst attaches (full: {full.burst_size})")
    add("--burst-rounds", type=_positive, metavar="N",
        help=f"interleaving rounds of the burst scenario (full: {full.burst_rounds})")
    add("--cli-files", type=_positive, metavar="N",
        help=f"files the cli scenario attaches and detaches (full: {full.cli_files})")
    add("--cli-rounds", type=_positive, metavar="N",
        help=f"interleaving rounds of the cli scenario (full: {full.cli_rounds})")
    add("--workdir", metavar="DIR",
        help="where backing files go (default: the temp dir; must allow O_DIRECT)")
    add("--no-plots", action="store_true", help="skip the PNG plots")
    add("--no-progress", action="store_true", help="no progress output on stderr")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings: the full run, or --quick, overridden by explicit options."""
    values: Dict[str, object] = dict(QUICK) if args.quick else {}
    explicit = {
        "cycles": args.cycles, "slow_cycles": args.slow_cycles,
        "cycle_rounds": args.cycle_rounds, "device_counts": args.devices,
        "discovery_rounds": args.discovery_rounds, "procs": args.procs,
        "contention_cycles": args.contention_cycles,
        "contention_rounds": args.contention_rounds, "io_mib": args.io_mib,
        "io_rounds": args.io_rounds, "burst_size": args.burst_size,
        "burst_rounds": args.burst_rounds, "cli_files": args.cli_files,
        "cli_rounds": args.cli_rounds,
    }
    values.update({k: v for k, v in explicit.items() if v is not None})
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.vm:
        names += [s for s in VM_SCENARIOS if s not in names]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown or not names:
        raise SystemExit(f"benchmarks: unknown scenario(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(SCENARIOS)}")
    values["scenarios"] = names
    values["direct_io"] = args.direct_io == "on"
    return Settings(**values)  # type: ignore[arg-type]


def run(settings: Settings, out_dir: str, *, workdir: Optional[str] = None,
        plots: bool = True, progress: bool = True, quick: bool = False) -> report.Results:
    """Run the selected scenarios; write results.json (and plots) to out_dir.

    Returns the results dict (the same as the JSON file); ``quick`` marks
    its verdicts as indicative.  Whatever
    happens, nothing stays bound to the harness's files afterwards.
    """
    os.makedirs(out_dir, exist_ok=True)
    ws = Workspace(workdir)
    bar = Progress(steps(settings) + 1, enabled=progress)
    results: report.Results = {"command": sys.argv, "settings": dataclasses.asdict(settings),
                               "quick": quick}
    scenarios: Dict[str, Dict[str, object]] = {}
    results["scenarios"] = scenarios
    try:
        with tempfile.TemporaryDirectory(prefix="loopcore-floor-") as build:
            bar.status("compiling the C floor")
            floor = compile_floor(build)
            results["machine"] = describe_machine(ws.dir)
            bar.advance()
            started = time.monotonic()
            for name in settings.scenarios:
                t0 = time.monotonic()
                scenarios[name] = SCENARIOS[name](settings, ws, floor, bar)
                scenarios[name]["seconds"] = time.monotonic() - t0
                bar.note(f"bench: {name} done in {time.monotonic() - t0:.1f} s")
            results["seconds"] = time.monotonic() - started
    finally:
        bar.close()
        cleanup = ws.close()
        results["cleanup"] = cleanup
        if cleanup["detached_at_exit"]:
            print(f"benchmarks: detached devices left bound at exit: "
                  f"{cleanup['detached_at_exit']}", file=sys.stderr)
    results["machine"]["loadavg_at_end"] = list(os.getloadavg())
    results["targets"] = report.targets(scenarios)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    results["plots"] = []
    if plots:
        try:
            results["plots"] = report.plot(results, out_dir)
        except ImportError:
            print("benchmarks: matplotlib is not installed, skipping the plots "
                  "(pip install matplotlib)", file=sys.stderr)
    return results


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def handler(args: argparse.Namespace) -> int:
    """Run the harness with parsed options; the exit status."""
    settings = settings_from_args(args)
    if os.geteuid() != 0 or not os.path.exists("/dev/loop-control"):
        print("benchmarks: needs root and /dev/loop-control", file=sys.stderr)
        return 1
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        results = run(settings, args.out, workdir=args.workdir, plots=not args.no_plots,
                      progress=not args.no_progress, quick=args.quick)
    except KeyboardInterrupt:
        print("benchmarks: interrupted; every device it bound is detached",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(report.table(results))
    print(f"\nresults: {os.path.join(args.out, 'results.json')}")
    for path in results["plots"]:
        print(f"plot: {path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m benchmarks [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark loopcore against plain C, pure Python and losetup: "
                    "attach+detach cycles, discovery, contention, I/O and the command line.")
    _add_options(parser)
    return handler(parser.parse_args(argv))
