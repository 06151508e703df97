"""Plumbing shared by the benchmark scenarios.

Interleaving (every contender takes a turn each round, in a rotating
order, so slow drift of a shared machine hits them all alike), summary
statistics, the progress bar, the C floor's compilation, the machine
description, and the workspace that guarantees nothing stays bound.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import gc
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import IO, Callable, Dict, Iterable, List, Optional, Sequence, Set

LOOP_CLR_FD = 0x4C01
LOOP_CTL_REMOVE = 0x4C81
DELETED_SUFFIX = " (deleted)"
# The C floor ships next to the harness (benchmarks/floor.c).
FLOOR_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")

# --- statistics --------------------------------------------------------------


def summarize(samples: Sequence[float]) -> Dict[str, float]:
    """Median, min, max, mean and count of a list of samples."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(samples),
        # the plots' whiskers: a preempted sample must not hide the bars
        "p10": percentile(ordered, 0.10),
        "p90": percentile(ordered, 0.90),
    }


def percentile(ordered: Sequence[float], q: float) -> Optional[float]:
    """The q-quantile (nearest rank) of sorted samples; None if there are none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    """numerator / denominator, or None if either is missing or zero."""
    if not numerator or not denominator:
        return None
    return numerator / denominator


# --- interleaving --------------------------------------------------------------


@dataclasses.dataclass
class Contender:
    """One way of doing the scenario's job.

    ``run(count)`` does the job ``count`` times and returns one sample per
    repetition (nanoseconds, unless the scenario says otherwise).
    ``batch`` is how many repetitions it does per turn.
    """

    name: str
    run: Callable[[int], List[float]]
    batch: int = 1
    description: str = ""


def interleave(contenders: Sequence[Contender], rounds: int,
               progress: "Progress", label: str) -> Dict[str, List[float]]:
    """Run every contender once per round, rotating the order each round.

    A B C, B C A, C A B, ...: drift on a shared machine and the cost of
    going first (cold caches) fall on every contender alike.
    """
    samples: Dict[str, List[float]] = {c.name: [] for c in contenders}
    for round_index in range(rounds):
        shift = round_index % len(contenders)
        for contender in list(contenders[shift:]) + list(contenders[:shift]):
            progress.status(f"{label}: {contender.name}")
            gc.collect()
            samples[contender.name].extend(contender.run(contender.batch))
            progress.advance()
    return samples


def describe_contenders(contenders: Sequence[Contender],
                         samples: Dict[str, List[float]], baseline: str) -> Dict[str, object]:
    """Each contender's description, samples, summary and ratio to ``baseline``'s median."""
    base = summarize(samples[baseline]).get("median")
    out: Dict[str, object] = {}
    for c in contenders:
        summary = summarize(samples[c.name])
        out[c.name] = {
            "description": c.description,
            "samples": samples[c.name],
            "summary": summary,
            "ratio_vs_baseline": ratio(summary.get("median"), base),
        }
    return out


# --- progress --------------------------------------------------------------------


class Progress:
    """A progress bar on stderr; plain lines at 10% steps without a terminal."""

    WIDTH = 30

    def __init__(self, total: int, stream: Optional[IO[str]] = None,
                 enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.label = ""
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def add(self, steps: int) -> None:
        """Grow the total (a scenario learned how much work it has)."""
        self.total += steps

    def status(self, label: str) -> None:
        self.label = label
        self._draw()

    def advance(self, steps: int = 1) -> None:
        self.done = min(self.done + steps, self.total)
        self._draw()

    def note(self, message: str) -> None:
        """A line of its own, above the bar."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        self.stream.flush()
        self._last_draw = 0.0
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        fraction = self.done / self.total
        elapsed = time.monotonic() - self.started
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.1 and self.done < self.total:
                return
            self._last_draw = now
            filled = int(self.WIDTH * fraction)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            line = f"[{bar}] {fraction:4.0%} {elapsed:5.0f}s {self.label}"
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\033[K" + line[:width])
            self.stream.flush()
        else:
            decile = int(fraction * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(f"bench: {fraction:4.0%} {elapsed:5.0f}s {self.label}\n")
                self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


# --- the C floor -----------------------------------------------------------------


def source_trees(baseline: Optional[str]) -> Dict[str, str]:
    """The ``src`` directories a before/after benchmark runs: "after", the
    loopcore this interpreter imports (an installed wheel too), and, with
    ``baseline`` (another checkout), its ``src`` as "before"."""
    import loopcore

    trees = {"after": os.path.dirname(os.path.dirname(os.path.abspath(loopcore.__file__)))}
    if baseline:
        trees = {"before": os.path.join(os.path.abspath(baseline), "src"), **trees}
    return trees


def compile_floor(build_dir: str) -> str:
    """Compile floor.c with the system cc into build_dir; the binary's path."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc) found: the C floor needs one")
    source = os.path.join(build_dir, "floor.c")
    shutil.copyfile(FLOOR_SOURCE, source)
    binary = os.path.join(build_dir, "floor")
    subprocess.run([cc, "-O2", "-o", binary, source], check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return binary


def run_floor(binary: str, *args: str) -> "tuple[List[float], Dict[str, int]]":
    """Run the floor program: its per-repetition samples and trailing counters."""
    out = subprocess.run([binary, *args], check=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True).stdout
    samples: List[float] = []
    counters: Dict[str, int] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if value:
            counters[key] = int(value)
        elif key:
            samples.append(float(key))
    return samples, counters


# --- machine description ---------------------------------------------------------


def _first_line(cmd: List[str]) -> Optional[str]:
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def filesystem_of(path: str) -> Optional[str]:
    """The file system type holding path (longest mount point prefix)."""
    path = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                mount = fields[1].replace("\\040", " ")
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) \
                        and len(mount) >= len(best):
                    best, fstype = mount, fields[2]
    except OSError:
        pass
    return fstype


def meminfo() -> Dict[str, int]:
    """/proc/meminfo in bytes."""
    values: Dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def describe_machine(workdir: str) -> Dict[str, object]:
    """What a reader needs to reproduce or compare the numbers."""
    import loopcore

    uname = os.uname()
    return {
        "kernel": uname.release,
        "kernel_version": uname.version,
        "arch": uname.machine,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "mem_total_bytes": meminfo().get("MemTotal"),
        "loadavg_at_start": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "loopcore": loopcore.__version__,
        "loop_configure": loopcore.kernel_supports_configure(),
        "util_linux": _first_line(["losetup", "--version"]),
        "cc": _first_line([os.environ.get("CC") or "cc", "--version"]),
        "workdir_filesystem": filesystem_of(workdir),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- the workspace: backing files, and nothing left bound -------------------------


def loop_numbers() -> Set[int]:
    """Numbers of the loop devices the kernel has now."""
    numbers = set()
    for entry in os.listdir("/sys/block"):
        if entry.startswith("loop") and entry[4:].isdigit():
            numbers.add(int(entry[4:]))
    return numbers


def read_backing(number: int) -> Optional[str]:
    """/sys/block/loopN/loop/backing_file without the newline; None if unbound."""
    try:
        fd = os.open(f"/sys/block/loop{number}/loop/backing_file", os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = os.read(fd, 8192)
    except OSError:
        # ENAMETOOLONG: bound to a path longer than sysfs shows (a page);
        # the harness's own files have short paths, so it is not ours.
        return None
    finally:
        os.close(fd)
    return os.fsdecode(raw.rstrip(b"\n"))


class Workspace:
    """A private directory of backing files; detaches what is bound to them.

    Loop devices are machine-wide and others use them at the same time, so
    the harness only ever counts and cleans up devices bound to files under
    its own directory, and only removes device nodes that it allocated.
    """

    def __init__(self, parent: Optional[str] = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="loopcore-bench-", dir=parent)
        self.preexisting = loop_numbers()
        self.allocated: Set[int] = set()   # device numbers our attaches got

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def make_file(self, name: str, size: int, fill: bool = False) -> str:
        """A backing file: sparse, or with written (non-zero) data if fill."""
        path = self.path(name)
        with open(path, "wb") as f:
            if fill:
                chunk = os.urandom(1 << 20)
                for _ in range(size >> 20):
                    f.write(chunk)
                f.write(chunk[: size & ((1 << 20) - 1)])
                f.flush()
                os.fsync(f.fileno())
            else:
                f.truncate(size)
        return path

    def owns(self, backing: Optional[str]) -> bool:
        if not backing:
            return False
        if backing.endswith(DELETED_SUFFIX):
            backing = backing[: -len(DELETED_SUFFIX)]
        return backing.startswith(self.dir + os.sep)

    def bound(self) -> Dict[int, str]:
        """Loop devices bound to our files now: {number: backing}."""
        found: Dict[int, str] = {}
        for number in loop_numbers():
            backing = read_backing(number)
            if backing is not None and self.owns(backing):
                found[number] = backing
        return found

    def leaked(self, settle_s: float = 1.0) -> Dict[int, str]:
        """Devices still bound to our files once teardown had time to finish.

        LOOP_CLR_FD unbinds when the last opener closes, which can trail
        the detach call by a moment; wait up to settle_s for that.
        """
        deadline = time.monotonic() + settle_s
        while True:
            found = self.bound()
            if not found or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def detach_all(self) -> List[int]:
        """Detach every device bound to our files; the numbers it found."""
        found = sorted(self.bound())
        for number in found:
            try:
                fd = os.open(f"/dev/loop{number}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if self.owns(read_backing(number)):
                    fcntl.ioctl(fd, LOOP_CLR_FD, 0)
            except OSError:
                pass
            finally:
                os.close(fd)
        return found

    def remove_allocated_nodes(self) -> List[int]:
        """LOOP_CTL_REMOVE the unbound devices we allocated that did not exist
        before the run.  The kernel refuses (EBUSY) a device that anyone has
        open or bound, so this never takes one from another user."""
        removed: List[int] = []
        candidates = sorted(self.allocated - self.preexisting)
        if not candidates:
            return removed
        try:
            ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return removed
        try:
            for number in candidates:
                if read_backing(number) is not None:
                    continue
                for attempt in range(4):
                    try:
                        fcntl.ioctl(ctl, LOOP_CTL_REMOVE, number)
                        removed.append(number)
                        break
                    except OSError as e:
                        if e.errno != errno.EBUSY:
                            break
                        time.sleep(0.005 * (2 ** attempt))  # still releasing
        finally:
            os.close(ctl)
        return removed

    def close(self) -> Dict[str, object]:
        """Detach, remove our nodes, delete the files; what it had to do."""
        leftover = self.detach_all()
        if leftover:
            self.leaked(settle_s=2.0)
        removed = self.remove_allocated_nodes()
        shutil.rmtree(self.dir, ignore_errors=True)
        return {"detached_at_exit": leftover, "removed_nodes": len(removed)}


def drop_caches(paths: Iterable[str] = ()) -> None:
    """Write back and drop the page cache (machine-wide), and for each path
    also posix_fadvise(DONTNEED) in case drop_caches is not allowed."""
    os.sync()
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass
