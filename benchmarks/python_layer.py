"""loopcore's own share of an attach+detach cycle: the same
``loopcore.attach(path).detach()`` with the kernel's part taken out.

Every C function the cycle calls into (``loopcore._c.lib``, the one seam
the tests patch too) is replaced by a Python stub that returns at once with
what the kernel would have said: a device number, an fd, nothing to retry.
What remains is the Python layer alone -- argument checks, the request,
the result, the LoopDevice, the detach's bookkeeping -- plus one Python
call per stubbed C call, which costs about what the cffi call it replaces
costs.  No device is bound, no file opened.

    python -m benchmarks.python_layer [CYCLES]       # ns per cycle, median of rounds
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import loopcore
from loopcore import _c

# A number no test binds and an fd that is never used (the stubs see it only).
_NUMBER = 4000
_FD = 1_000_000


class StubLib:
    """``_c.lib`` with the calls of a cycle answering at once; everything
    else (constants, other functions) is the real lib's, cached as an
    attribute at first use so each look-up costs what it costs on ``lib``."""

    def __init__(self, real: Any) -> None:
        self._real = real
        # lc_attach with a path opens the backing file itself; before that
        # change attach opened it with lc_backing_open: stub both.
        self.lc_backing_open = self._backing_open
        self.lc_backing_stat = lambda fd, probe, out: 0
        self.lc_direct_io_refused = lambda fd: 0
        # lc_attach(ctl_fd, req, result), or with the backing path (..., path, result)
        arity = len(_c.ffi.typeof(real.lc_attach).args)
        self.lc_attach = self._attach_path if arity == 4 else self._attach
        self.lc_detach_fd = lambda fd, step: 0
        self.lc_detach = lambda fd: 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._real, name)
        setattr(self, name, value)
        return value

    @staticmethod
    def _backing_open(path: Any, read_only: int, probe: int, out: Any) -> int:
        out.size = 16 << 20
        out.mode = 0o100000
        return os.dup(0)  # the caller closes it: a real fd, closed for real

    # What lc_attach writes into its result is C's work, not the Python
    # layer's: the stub writes it into each result it meets once (attach
    # reuses one per thread, and nothing else writes these fields).
    _filled: Any = None

    def _fill(self, result: Any) -> int:
        if result is not self._filled:
            result.number = _NUMBER
            result.fd = _FD
            result.lock_fd = -1
            self._filled = result
        return _NUMBER

    def _attach(self, ctl_fd: int, req: Any, result: Any) -> int:
        return _NUMBER if result is self._filled else self._fill(result)

    def _attach_path(self, ctl_fd: int, req: Any, path: bytes, result: Any) -> int:
        return _NUMBER if result is self._filled else self._fill(result)


def timed(path: str, direct_io: bool) -> Callable[[int], List[float]]:
    """The harness's contender: run(count) times ``count`` stubbed cycles
    of ``path`` one by one (ns each, as the other contenders are timed),
    the real lib back in place between turns."""
    clock = time.perf_counter_ns

    def run(count: int) -> List[float]:
        samples: List[float] = []
        real = _c.lib
        _c.lib = StubLib(real)
        try:
            for _ in range(count):
                start = clock()
                loopcore.attach(path, direct_io=direct_io).detach()
                samples.append(clock() - start)
        finally:
            _c.lib = real
        return samples

    return run


def measure(cycles: int = 20_000, rounds: int = 5) -> Dict[str, float]:
    """ns per stubbed cycle: median, min and max over ``rounds`` rounds."""
    real = _c.lib
    with tempfile.NamedTemporaryFile(prefix="loopcore-stub-") as backing:
        path = backing.name
        samples: List[float] = []
        _c.lib = StubLib(real)
        try:
            for _ in range(rounds):
                start = time.perf_counter_ns()
                for _ in range(cycles):
                    loopcore.attach(path).detach()
                samples.append((time.perf_counter_ns() - start) / cycles)
        finally:
            _c.lib = real
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "cycles": cycles, "rounds": rounds}


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
    print(f"python layer per attach+detach cycle (kernel stubbed): "
          f"{result['median'] / 1000:.2f} us (min {result['min'] / 1000:.2f}, "
          f"max {result['max'] / 1000:.2f})")
