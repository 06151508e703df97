"""A contention worker: N attach+detach cycles through loopcore.attach().

Run as ``python benchmarks/worker.py BACKING CYCLES DIRECT_IO``.  It
prints ``ready`` once loopcore is imported and /dev/loop-control is open,
waits for a line on stdin (so every worker starts at the same moment),
runs its cycles and prints one JSON line: start and end times
(CLOCK_MONOTONIC, comparable across processes), cycles done, failures,
the retries the C attach loop took and every attach's latency (ns).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Dict, List


def main(argv: List[str]) -> int:
    backing, cycles, direct_io = argv[0], int(argv[1]), argv[2] == "1"

    import loopcore
    from loopcore.loop import binding

    # The retry counters live in the C attach result, which attach() does
    # not return; count them by wrapping the one function that sees it, in
    # the module every attach looks it up in.
    counters: Dict[str, int] = {"attempts": 0, "busy_retries": 0, "vanished_retries": 0}
    bind = binding.bind

    def counting_bind(*args: object, **kwargs: object) -> object:
        result = bind(*args, **kwargs)
        counters["attempts"] += int(result.attempts)
        counters["busy_retries"] += int(result.busy_retries)
        counters["vanished_retries"] += int(result.vanished_retries)
        return result

    binding.bind = counting_bind  # type: ignore[assignment]
    loopcore.kernel_supports_configure()  # opens the control fd before the start line

    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1  # the parent went away
    failures: List[str] = []
    latencies: List[int] = []
    done = 0
    clock = time.monotonic_ns
    start = clock()
    for _ in range(cycles):
        began = clock()
        try:
            device = loopcore.attach(backing, direct_io=direct_io)
        except OSError as e:
            failures.append(f"attach: {e}")
            continue
        latencies.append(clock() - began)
        try:
            device.detach()
            done += 1
        except OSError as e:
            failures.append(f"detach: {e}")
            device.close()
    end = time.monotonic_ns()
    print(json.dumps({"start_ns": start, "end_ns": end, "cycles": done,
                      "failures": len(failures), "errors": failures[:5],
                      "attach_latency_ns": latencies, **counters}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
