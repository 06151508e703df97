"""A worker for ``benchmarks/before_after.py``: loopcore's cycles, timed
inside one long-lived process of whichever tree's interpreter runs it.

Run as ``PYTHON benchmarks/tree_worker.py BACKING DIRECT_IO`` with the
tree's ``src`` first on ``sys.path``.  It uses only the public API, so an
older checkout runs it unchanged.  Commands on stdin, one per line, each
answered with one JSON line on stdout:

- ``loop N``: N ``loopcore.attach(BACKING).detach()`` cycles -> ns per cycle;
- ``dm N``: N ``DeviceMapper.create(name, table)`` + ``remove`` cycles of a
  linear target over a loop device the worker attached -> ns per cycle;
- ``which``: the file loopcore was imported from (to check the tree).

An empty line or end of input ends it, detaching what it attached.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, List, Optional


def main(argv: List[str]) -> int:
    backing, direct_io = argv[0], argv[1] == "1"
    import loopcore

    clock = time.perf_counter_ns
    mapper: Any = None
    loop: Optional[loopcore.LoopDevice] = None
    table: Any = None
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                break
            if words[0] == "which":
                print(json.dumps(loopcore.__file__), flush=True)
                continue
            count = int(words[1])
            if words[0] == "loop":
                attach = loopcore.attach
                start = clock()
                for _ in range(count):
                    attach(backing, direct_io=direct_io).detach()
                print(json.dumps((clock() - start) / count), flush=True)
            elif words[0] == "dm":
                from loopcore import dm
                if mapper is None:
                    loop = loopcore.attach(backing, direct_io=False)
                    table = dm.Table([dm.linear(0, 2048, loop)])
                    mapper = dm.DeviceMapper(udev="off")
                start = clock()
                for i in range(count):
                    name = f"lcbench-ba-{i}"
                    mapper.create(name, table=table)
                    mapper.remove(name)
                print(json.dumps((clock() - start) / count), flush=True)
    finally:
        if mapper is not None:
            mapper.close()
        if loop is not None:
            loop.detach()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
