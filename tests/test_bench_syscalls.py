"""The cycle benchmark's C contender is honest: ``floor cycle-same`` makes
exactly the syscalls of ``loopcore.attach(path).detach()``, in the same
order, with the same flags and ioctls (strace of one cycle of each, with
direct I/O on and off).  A change to either side that the other does not
follow fails here, so the "same syscalls" ratio keeps meaning that."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

ROOT = Path(__file__).resolve().parents[1]
STRACE = shutil.which("strace")
CC = shutil.which("cc") or shutil.which("gcc")
MARK = "loopcore-cycle-starts"
# The syscalls of a cycle (everything else is the interpreter's or libc's).
CYCLE_CALLS = ("openat", "statx", "newfstatat", "fstat", "fstatfs", "fcntl", "flock", "ioctl",
               "close", "sync_file_range", "fsync")

LOOPCORE_CYCLES = f"""
import os, sys, loopcore
path, direct_io = sys.argv[1], sys.argv[2] == "1"
loopcore.attach(path, direct_io=direct_io).detach()  # the first: probes, learns dev_t
os.write(2, b"{MARK}\\n")
loopcore.attach(path, direct_io=direct_io).detach()
"""


def _calls(trace: str, after_mark: bool) -> List[str]:
    """Each cycle syscall as name + what matters (flags, ioctl request,
    the file opened, LOOP_CONFIGURE's flags and file name), errors kept;
    fds, addresses and device numbers left out."""
    lines = trace.splitlines()
    if after_mark:
        lines = lines[next(i for i, line in enumerate(lines) if MARK in line) + 1:]
    calls = []
    for line in lines:
        m = re.match(r"(?:\d+\s+)?(\w+)\((.*)\)\s+= (-?\d+)", line)
        if not m or m.group(1) not in CYCLE_CALLS:
            continue
        name, args = m.group(1), m.group(2)
        parts = [p.strip() for p in args.split(",")]
        if name == "openat":
            name += " " + re.sub(r"/dev/loop\d+", "/dev/loopN", parts[1]) + " " + parts[2]
        elif name in ("ioctl", "flock", "fcntl"):
            name += " " + parts[1]
        elif name == "statx":
            name += " " + " ".join(parts[2:4])
        if "LOOP_CONFIGURE" in name:
            name += " " + " ".join(re.findall(r"(lo_flags=[^,]*|lo_file_name=\"[^\"]*\")", args))
        error = re.search(r"= -1 (E\w+)", line)
        calls.append(name + (" -> " + error.group(1) if error else ""))
    return calls


def _last_cycle(calls: List[str], image: Path) -> List[str]:
    """From the last open of the image (retries before it dropped) to the
    close of the device after LOOP_CLR_FD (what the program does after
    the cycle left out)."""
    starts = [i for i, c in enumerate(calls) if c.startswith(f'openat "{image}"')]
    assert starts, f"no open of {image} in {calls}"
    cycle = calls[starts[-1]:]
    unbind = next(i for i, c in enumerate(cycle) if c.startswith("ioctl LOOP_CLR_FD"))
    end = next(i for i in range(unbind, len(cycle)) if cycle[i] == "close")
    return cycle[:end + 1]


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CC is None:
        pytest.skip("no C compiler for benchmarks/floor.c")
    binary = tmp_path_factory.mktemp("floor") / "floor"
    subprocess.run([CC, "-O2", "-o", str(binary), str(ROOT / "benchmarks" / "floor.c")],
                   check=True, capture_output=True)
    return binary


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
@pytest.mark.parametrize("direct_io", ["1", "0"], ids=["direct-io", "buffered"])
def test_c_same_syscalls_makes_loopcores_syscalls(tmp_path: Path, floor: Path, direct_io: str):
    assert STRACE is not None
    image = tmp_path / "cycle.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    mine = subprocess.run([STRACE, "-o", str(tmp_path / "loopcore.trace"), sys.executable, "-c",
                           LOOPCORE_CYCLES, str(image), direct_io],
                          capture_output=True, text=True, timeout=120)
    assert mine.returncode == 0, mine.stderr
    theirs = subprocess.run([STRACE, "-o", str(tmp_path / "floor.trace"), str(floor),
                             "cycle-same", "1", str(image), direct_io],
                            capture_output=True, text=True, timeout=120)
    assert theirs.returncode == 0, theirs.stderr
    loopcore_cycle = _last_cycle(_calls((tmp_path / "loopcore.trace").read_text(), True),
                                 image)
    floor_cycle = _last_cycle(_calls((tmp_path / "floor.trace").read_text(), False), image)
    assert any("LOOP_CONFIGURE" in c for c in loopcore_cycle), loopcore_cycle
    assert any("LOOP_CLR_FD" in c for c in loopcore_cycle), loopcore_cycle
    assert loopcore_cycle == floor_cycle
