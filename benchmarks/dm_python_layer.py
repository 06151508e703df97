"""loopcore.dm's own share of a create+load+resume+remove cycle: the same
``mapper.create(name, table=...)`` + ``mapper.remove(name)`` with the
kernel's part taken out, on the host (whose kernel need not have
device-mapper).

The two C functions the client calls (``lc_dm_open``, ``lc_dm_ioctl``,
through ``loopcore._c.lib``, the seam the tests patch too) are replaced by
Python stubs that answer at once as the kernel would: interface 4.47 to
DM_VERSION, a device number to DM_DEV_CREATE, success to the rest.  What
remains is the Python layer -- argument and name checks, packing the
header and the table, reading the reply, the DeviceInfo -- plus one Python
call per stubbed C call, which costs about what the cffi call it replaces
costs.  The replies carry the flags the kernel sets (INACTIVE_PRESENT after
the load, ACTIVE_PRESENT and UEVENT_GENERATED after the resume ...), so the
records are made from what a real cycle reads.  With ``--nodes`` the
client also makes and removes the ``/dev/mapper``-style node (real
mknod/chown/chmod/unlink, in a temporary directory), as it does without
udev; by default it does not (``manage_nodes=False``), so the figure is
Python alone.  No udev either
way (``udev="off"``).

    python -m benchmarks.dm_python_layer [CYCLES] [--nodes] [--profile]

prints microseconds per cycle (median of rounds); ``--profile`` prints
cProfile's top functions of one round instead.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from typing import Any, Dict

from loopcore import _c, dm

_FD = 1_000_000  # never used: the stubs see it only
_DEVNUM = os.makedev(253, 4000)  # a dm minor no test makes
_VERSION = int(dm.Cmd.VERSION)
_DEV_CREATE = int(dm.Cmd.DEV_CREATE)
# The flags the kernel answers each command of the cycle with (as strace
# shows them in the test VM).
_REPLY_FLAGS = {
    int(dm.Cmd.TABLE_LOAD): int(dm.Flag.INACTIVE_PRESENT),
    int(dm.Cmd.DEV_SUSPEND): int(dm.Flag.ACTIVE_PRESENT | dm.Flag.UEVENT_GENERATED),
    int(dm.Cmd.DEV_REMOVE): int(dm.Flag.UEVENT_GENERATED),
}


class StubLib:
    """``_c.lib`` with the dm calls answering at once; everything else is
    the real lib's, cached as an attribute at first use."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._header = _c.ffi.typeof("struct lc_dm_ioctl *")

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._real, name)
        setattr(self, name, value)
        return value

    @staticmethod
    def lc_dm_open(path: bytes) -> int:
        return _FD

    def lc_dm_ioctl(self, fd: int, nr: int, buf: Any) -> int:
        header = _c.ffi.cast(self._header, buf)
        if nr == _VERSION:
            header.version[1] = 47
        elif nr == _DEV_CREATE:
            header.dev = _DEVNUM
        else:
            header.flags = _REPLY_FLAGS.get(nr, 0)
            header.target_count = 1
        return 0


def _mapper(dev_dir: str, nodes: bool) -> dm.DeviceMapper:
    # lc_dm_open and DM_VERSION stubbed too: the channel's fd is _FD
    return dm.DeviceMapper(dev_dir=dev_dir, manage_nodes=nodes, udev="off")


def measure(cycles: int = 20_000, rounds: int = 5, nodes: bool = False) -> Dict[str, float]:
    """us per stubbed cycle: median, min and max over ``rounds`` rounds."""
    real = _c.lib
    _c.lib = StubLib(real)
    samples = []
    try:
        with tempfile.TemporaryDirectory(prefix="loopcore-dm-stub-") as dev_dir:
            mapper = _mapper(dev_dir, nodes)
            table = dm.Table([dm.linear(0, 2048, os.makedev(7, 0))])
            names = [f"lcstub-{i}" for i in range(100)]
            for r in range(rounds + 1):  # the first round warms up
                start = time.perf_counter_ns()
                for i in range(cycles):
                    name = names[i % 100]
                    mapper.create(name, table=table)
                    mapper.remove(name)
                if r:
                    samples.append((time.perf_counter_ns() - start) / cycles / 1000)
            mapper._channel.fd = -1  # noqa: SLF001 - _FD is no real fd to close
    finally:
        _c.lib = real
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "cycles": cycles, "rounds": rounds}


def profile(cycles: int, nodes: bool) -> None:
    """cProfile's top 25 (by own time) of ``cycles`` stubbed cycles."""
    real = _c.lib
    _c.lib = StubLib(real)
    try:
        with tempfile.TemporaryDirectory(prefix="loopcore-dm-stub-") as dev_dir:
            mapper = _mapper(dev_dir, nodes)
            table = dm.Table([dm.linear(0, 2048, os.makedev(7, 0))])
            prof = cProfile.Profile()
            prof.enable()
            for i in range(cycles):
                mapper.create(f"lcstub-{i % 100}", table=table)
                mapper.remove(f"lcstub-{i % 100}")
            prof.disable()
            mapper._channel.fd = -1  # noqa: SLF001
    finally:
        _c.lib = real
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cycles", nargs="?", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--nodes", action="store_true", help="also make and remove the node")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.profile:
        profile(args.cycles, args.nodes)
        return
    result = measure(args.cycles, args.rounds, args.nodes)
    print(f"python layer per dm create+load+resume+remove cycle (kernel stubbed"
          f"{', node made and removed' if args.nodes else ''}): {result['median']:.2f} us "
          f"(min {result['min']:.2f}, max {result['max']:.2f})")


if __name__ == "__main__":
    main()
