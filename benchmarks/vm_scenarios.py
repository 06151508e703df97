"""The device-mapper scenarios: run in the test VM (this host's kernel has
no device-mapper), through the same scripts a person runs by hand.

- ``dm``: benchmarks/dm-bench: a create+load+resume+remove cycle through
  loopcore.dm vs the same ioctls in C vs ``dmsetup create``/``remove``;
- ``dmlog``: benchmarks/dmlog-bench: the userspace dirty-log server's
  requests/s and memory (host), and resync time and random-write IOPS of a
  mirror with it vs the kernel's own logs (VM).

Each returns the script's JSON, with the VM's wall time; an error (no
qemu, the VM failed) is recorded in the result instead of ending the run.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _run_script(script: str, args: List[str], timeout: float) -> Dict[str, Any]:
    t0 = time.monotonic()
    try:
        proc = subprocess.run([os.path.join(HERE, script), *args], cwd=ROOT, timeout=timeout,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{script}: {exc}", "vm_seconds": time.monotonic() - t0}
    out: Dict[str, Any] = {"vm_seconds": time.monotonic() - t0, "log": proc.stdout[-4000:]}
    if proc.returncode != 0:
        out["error"] = f"{script} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    return out


def _load(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            loaded: Dict[str, Any] = json.load(f)
            return loaded
    except (OSError, ValueError):
        return {}


def dm_cycle(rounds: int, cycles: int, dmsetup_cycles: int) -> Dict[str, Any]:
    """loopcore.dm vs C vs dmsetup, in one VM."""
    out = _run_script("dm-bench", ["--rounds", str(rounds), "--loopcore-cycles", str(cycles),
                                   "--dmsetup-cycles", str(dmsetup_cycles)], timeout=3600)
    out["result"] = _load(os.path.join(ROOT, "build", "dm-bench", "result.json"))
    return out


def dmlog(rounds: int, size_mib: int, write_seconds: float) -> Dict[str, Any]:
    """The dirty-log server against the kernel's logs (VM) and alone (host)."""
    out = _run_script("dmlog-bench", ["--rounds", str(rounds), "--size-mib", str(size_mib),
                                      "--write-seconds", str(write_seconds)], timeout=5400)
    base = os.path.join(ROOT, "build", "dmlog-bench")
    out["host"] = _load(os.path.join(base, "host.json"))
    vm = _load(os.path.join(base, "vm", "result.json"))
    out["vm"] = vm.get("vm", vm)  # dmlog_bench.py nests its VM part under "vm"
    return out
