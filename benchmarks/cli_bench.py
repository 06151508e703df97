"""The ``cli`` scenario: the command line as shell scripts use it, every
contender a real process.

- **list**: the ``loopcore list`` process (the installed console script)
  beside a bare ``python -c pass`` on the same interpreter and ``losetup
  -l``, with the same devices bound.
- **batch**: N files attached, then detached, through the command line:
  ``loopcore attach FILE...`` + ``loopcore detach DEV...`` (two processes),
  N ``losetup -f --show FILE`` + N ``losetup -d DEV``, and N single
  ``loopcore attach FILE`` + N ``loopcore detach DEV``.

Python's bytecode is compiled first (as pip does when it installs), so no
process pays for compiling loopcore's sources.  Each sample is wall time;
beside it the CPU time the processes used (user + system, from
``getrusage(RUSAGE_CHILDREN)``), which a machine busy with other work
inflates less.

Before and after in one run: :func:`before_after`
(``python -m benchmarks.cli_before_after --baseline DIR``).
"""
from __future__ import annotations

import compileall
import os
import resource
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Sequence

import loopcore

from ._common import (
    Contender,
    Progress,
    Workspace,
    describe_contenders,
    interleave,
    loop_numbers,
    ratio,
    summarize,
)

if TYPE_CHECKING:
    from .scenarios import Settings

__all__ = ["cli", "LIST_CONTENDERS", "BATCH_CONTENDERS", "steps", "before_after"]

LIST_CONTENDERS = ("python_pass", "loopcore_list", "losetup_list")
BATCH_CONTENDERS = ("loopcore_batch", "losetup", "loopcore_single")
#: devices the scenario binds for the list contenders ("a few")
LIST_BOUND = 3


def steps(rounds: int) -> int:
    """Progress units of the scenario."""
    return rounds * (len(LIST_CONTENDERS) + len(BATCH_CONTENDERS)) + 1


def _console_script() -> str:
    """The installed ``loopcore`` script beside this interpreter."""
    path = os.path.join(os.path.dirname(sys.executable), "loopcore")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path}: no loopcore console script (pip install the project)")
    return path


def _run(argv: Sequence[str]) -> str:
    """Run a process to its end; its stdout.  A failure is the benchmark's
    (RuntimeError with the command's stderr)."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _children_cpu_ns() -> int:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


def _timed(name: str, job: Callable[[], object],
           cpu: Dict[str, List[float]]) -> Callable[[int], List[float]]:
    """run(count): the wall time of each job (ns); its processes' CPU time
    goes to ``cpu[name]``."""
    def run(count: int) -> List[float]:
        samples: List[float] = []
        for _ in range(count):
            cpu_start, start = _children_cpu_ns(), time.perf_counter_ns()
            job()
            samples.append(time.perf_counter_ns() - start)
            cpu.setdefault(name, []).append(_children_cpu_ns() - cpu_start)
        return samples
    return run


def cli(settings: Settings, ws: Workspace, floor: str, progress: Progress) -> Dict[str, object]:
    """The ``cli`` scenario (see the module's docstring)."""
    rounds, list_runs, count = settings.cli_rounds, settings.cli_list_runs, settings.cli_files
    dio = "--direct-io=" + ("on" if settings.direct_io else "off")
    script = _console_script()
    progress.status("cli: compiling bytecode")
    compileall.compile_dir(os.path.dirname(loopcore.__file__), quiet=1)
    files = [ws.make_file(f"cli{i:04d}.img", 1 << 20) for i in range(count)]
    progress.advance()

    cpu: Dict[str, List[float]] = {}

    def cycle(name: str, attach_all: Callable[[], List[str]],
              detach_all: Callable[[List[str]], None]) -> Callable[[int], List[float]]:
        def job() -> None:
            try:
                detach_all(attach_all())
            finally:
                ws.detach_all()  # only if something failed part-way
        return _timed(name, job, cpu)

    def batch_attach() -> List[str]:
        return _run([script, "attach", "--show", dio, *files]).split()

    def batch_detach(devices: List[str]) -> None:
        _run([script, "detach", *devices])

    def losetup_attach() -> List[str]:
        from .scenarios import _losetup_attach  # retries the races losetup -f loses

        return [_losetup_attach(dio, path) for path in files]

    def losetup_detach(devices: List[str]) -> None:
        for device in devices:
            _run(["losetup", "-d", device])

    def single_attach() -> List[str]:
        return [_run([script, "attach", "--show", dio, path]).strip() for path in files]

    def single_detach(devices: List[str]) -> None:
        for device in devices:
            _run([script, "detach", device])

    batch = [
        Contender("loopcore_batch", cycle("loopcore_batch", batch_attach, batch_detach), 1,
                  f"loopcore attach --show FILE x{count}; loopcore detach DEV x{count} "
                  "(2 processes)"),
        Contender("losetup", cycle("losetup", losetup_attach, losetup_detach), 1,
                  f"{count} x losetup -f --show FILE, then {count} x losetup -d DEV"),
        Contender("loopcore_single", cycle("loopcore_single", single_attach, single_detach), 1,
                  f"{count} x loopcore attach FILE, then {count} x loopcore detach DEV"),
    ]
    def process(name: str, argv: List[str], description: str) -> Contender:
        return Contender(name, _timed(name, lambda: _run(argv), cpu), list_runs, description)

    listing = [
        process("python_pass", [sys.executable, "-c", "pass"], f"{sys.executable} -c pass"),
        process("loopcore_list", [script, "list"], "loopcore list"),
        process("losetup_list", ["losetup", "-l"], "losetup -l"),
    ]
    bound = loopcore.attach_many(files[:LIST_BOUND])
    try:
        for device in bound:
            device.close()  # bound, no fd of ours: as a script's devices are
        list_samples = interleave(listing, rounds, progress, "cli list")
        bound_total = len(loop_numbers())
    finally:
        _run([script, "detach", *(device.path for device in bound)])
    batch_samples = interleave(batch, rounds, progress, "cli batch")
    described = {"list": describe_contenders(listing, list_samples, "python_pass"),
                 "batch": describe_contenders(batch, batch_samples, "loopcore_batch")}
    for part in described.values():
        for name, entry in part.items():
            entry["cpu"] = summarize(cpu[name])  # type: ignore[index]
            entry["cpu_samples"] = cpu[name]  # type: ignore[index]
    median = {name: summarize(samples).get("median")
              for name, samples in {**list_samples, **batch_samples}.items()}
    cpu_median = {name: summarize(samples).get("median") for name, samples in cpu.items()}
    return {
        "unit": "ns per process (list) / per N attaches + N detaches (batch)",
        "params": {"files": count, "rounds": rounds, "list_runs": list_runs,
                   "list_bound_by_bench": LIST_BOUND, "devices_on_the_machine": bound_total,
                   "direct_io": dio},
        **described,
        "ratios": {
            "list_vs_python": ratio(median["loopcore_list"], median["python_pass"]),
            "losetup_list_vs_python": ratio(median["losetup_list"], median["python_pass"]),
            "losetup_vs_batch": ratio(median["losetup"], median["loopcore_batch"]),
            "single_vs_batch": ratio(median["loopcore_single"], median["loopcore_batch"]),
        },
        "cpu_ratios": {
            "list_vs_python": ratio(cpu_median["loopcore_list"], cpu_median["python_pass"]),
            "losetup_vs_batch": ratio(cpu_median["losetup"], cpu_median["loopcore_batch"]),
            "single_vs_batch": ratio(cpu_median["loopcore_single"],
                                     cpu_median["loopcore_batch"]),
        },
    }


# --- before and after -------------------------------------------------------------

def before_after(trees: Dict[str, str], files: int, rounds: int, runs: int,
                 dio: str = "--direct-io=on") -> Dict[str, Dict[str, float]]:
    """{tree label: {figure: value}} for ``trees`` ({label: its src directory}):
    median ns of ``list`` (one process) and of the batch pair (N attaches
    + N detaches), wall and CPU, beside ``python -c pass`` and 2N losetup
    processes, every contender interleaved round by round."""
    script = _console_script()
    ws = Workspace()
    cpu: Dict[str, List[float]] = {}
    wall: Dict[str, List[float]] = {}
    try:
        for src in trees.values():
            compileall.compile_dir(src, quiet=1)
        paths = [ws.make_file(f"cli{i:04d}.img", 1 << 20) for i in range(files)]

        def tree_run(src: str, *argv: str) -> str:
            proc = subprocess.run([sys.executable, script, *argv], capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL,
                                  env=dict(os.environ, PYTHONPATH=src))
            if proc.returncode != 0:
                raise RuntimeError(f"{src}: {' '.join(argv)}: {proc.stderr.strip()}")
            return proc.stdout

        def batch(src: str) -> None:
            tree_run(src, "detach", *tree_run(src, "attach", "--show", dio, *paths).split())

        def losetup() -> None:
            from .scenarios import _losetup_attach

            for device in [_losetup_attach(dio, path) for path in paths]:
                _run(["losetup", "-d", device])

        jobs: Dict[str, Callable[[], object]] = {
            "python_pass": lambda: _run([sys.executable, "-c", "pass"])}
        for label, src in trees.items():
            jobs[f"list:{label}"] = lambda src=src: tree_run(src, "list")  # type: ignore[misc]
        batch_jobs: Dict[str, Callable[[], object]] = {"losetup": losetup}
        for label, src in trees.items():
            batch_jobs[f"batch:{label}"] = lambda src=src: batch(src)  # type: ignore[misc]
        for turn in range(rounds):  # rotate the order: drift falls on every contender
            for group, count in ((jobs, runs), (batch_jobs, 1)):
                names = list(group)
                names = names[turn % len(names):] + names[:turn % len(names)]
                for name in names:
                    for sample in _timed(name, group[name], cpu)(count):
                        wall.setdefault(name, []).append(sample)
                    ws.detach_all()  # only if something failed part-way
    finally:
        ws.close()  # detaches what is still bound to our files, removes them
    med = {n: summarize(v)["median"] for n, v in wall.items()}
    cpu_med = {n: summarize(v)["median"] for n, v in cpu.items()}
    return {label: {
        "list_ms": med[f"list:{label}"] / 1e6, "python_pass_ms": med["python_pass"] / 1e6,
        "list_vs_python": med[f"list:{label}"] / med["python_pass"],
        "list_vs_python_cpu": cpu_med[f"list:{label}"] / cpu_med["python_pass"],
        "batch_ms": med[f"batch:{label}"] / 1e6, "losetup_ms": med["losetup"] / 1e6,
        "losetup_vs_batch": med["losetup"] / med[f"batch:{label}"],
        "losetup_vs_batch_cpu": cpu_med["losetup"] / cpu_med[f"batch:{label}"],
    } for label in trees}
