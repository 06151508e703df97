"""The device-mapper benchmarks' host parts (benchmarks/, run from the
repository root): the stubbed Python layer of a dm cycle, and the C floor
builds.  Output shape and what the cycle did, never timings; the cycle
itself runs in the VM (benchmarks/dm-bench)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopcore import _c, dm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def benchmarks():
    sys.path.insert(0, str(ROOT))
    try:
        import benchmarks.dm_bench
        import benchmarks.dm_python_layer
        return benchmarks
    finally:
        sys.path.remove(str(ROOT))


@pytest.mark.root
@pytest.mark.parametrize("nodes", [False, True])
def test_python_layer_runs_the_cycle_on_stubs(benchmarks, nodes, monkeypatch):
    """Each stubbed cycle is create (DEV_CREATE, TABLE_LOAD, DEV_SUSPEND)
    and remove (DEV_REMOVE), the real lib is back after, and no node is
    left in the scratch directory."""
    layer = benchmarks.dm_python_layer
    seen = []
    stub_call = layer.StubLib.lc_dm_ioctl

    def counting(self, fd, nr, buf):
        seen.append(nr)
        return stub_call(self, fd, nr, buf)

    monkeypatch.setattr(layer.StubLib, "lc_dm_ioctl", counting)
    real = _c.lib
    result = layer.measure(cycles=3, rounds=2, nodes=nodes)
    assert _c.lib is real
    assert result["cycles"] == 3 and result["median"] > 0
    cycle = [dm.Cmd.DEV_CREATE, dm.Cmd.TABLE_LOAD, dm.Cmd.DEV_SUSPEND, dm.Cmd.DEV_REMOVE]
    assert seen == [dm.Cmd.VERSION] + cycle * 3 * 3  # the warm-up round and two more


def test_dm_floor_builds(benchmarks, tmp_path):
    """dm_floor.c compiles (no device-mapper here to run it) and refuses a
    wrong command line with its usage."""
    exe = benchmarks.dm_bench.build_floor(str(tmp_path))
    proc = subprocess.run([exe, "split"], capture_output=True, text=True)
    assert proc.returncode == 2 and "bare|nodes|split" in proc.stderr
    assert os.access(exe, os.X_OK)
