"""The benchmark harness in a tiny setting: output shape and samples, never timings."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loopcore import bench
from loopcore.bench.scenarios import Settings

from conftest import bound_under

pytestmark = pytest.mark.root

TINY = Settings(cycles=6, slow_cycles=2, cycle_rounds=2, device_counts=(2, 4),
                discovery_rounds=2, discovery_batch=1, procs=(1, 2), contention_cycles=3,
                contention_rounds=1, io_mib=4, io_rounds=1)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench-out")
    work = tmp_path_factory.mktemp("bench-work")
    res = bench.run(TINY, str(out), workdir=str(work), plots=True, progress=False)
    return out, work, res


def _all_samples(contenders: dict) -> None:
    for name, c in contenders.items():
        assert c["samples"], f"{name} produced no samples"
        assert c["summary"]["n"] == len(c["samples"])


def test_every_scenario_produced_samples(results):
    _, _, res = results
    scen = res["scenarios"]
    assert set(scen) == {"cycle", "discovery", "contention", "io"}

    cycle = scen["cycle"]["contenders"]
    assert set(cycle) == {"loopcore", "c_floor", "c_same_syscalls", "python_fcntl",
                          "losetup", "loopcore_legacy"}
    _all_samples(cycle)

    disc = scen["discovery"]
    assert disc["missing"] == []
    assert [lv["devices"] for lv in disc["levels"]] == [2, 4]
    for level in disc["levels"]:
        assert level["bound_total"] >= level["devices"]
        assert set(level["list"]) == {"loopcore_list", "python_sysfs_list", "losetup_json",
                                      "c_scan", "c_scan_sysfs"}
        assert set(level["find"]) == {"loopcore_find", "python_sysfs_find", "losetup_j",
                                      "c_find"}
        _all_samples(level["list"])
        _all_samples(level["find"])

    points = scen["contention"]["points"]
    assert [p["procs"] for p in points] == [1, 2]
    for p in points:
        assert len(p["rounds"]) == 1
        assert p["rounds"][0]["cycles"] + p["failures"] == 3 * p["procs"]
        assert p["failures"] == 0 and p["leaked_devices"] == 0

    io = scen["io"]["contenders"]
    assert set(io) == {f"{w}_{op}" for w in ("loopcore_default", "losetup_default")
                       for op in ("read", "write")}
    for c in io.values():
        assert len(c["mb_per_s"]) == len(c["cache_growth_bytes"]) == 1


def test_json_file_matches_and_describes_the_machine(results):
    out, _, res = results
    data = json.loads((out / "results.json").read_text())
    assert data["scenarios"].keys() == res["scenarios"].keys()
    for key in ("kernel", "cpus", "python", "loopcore", "util_linux", "cc"):
        assert data["machine"][key]
    assert {t["target"] for t in data["targets"]}
    assert all(t["met"] in (True, False) for t in data["targets"])


def test_plots_or_a_note(results):
    out, _, res = results
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res["plots"] == []
    else:
        names = sorted(Path(p).name for p in res["plots"])
        assert names == ["contention.png", "cycle.png", "discovery.png", "io.png"]
        for p in res["plots"]:
            assert Path(p).stat().st_size > 0


def test_nothing_left_bound(results):
    _, work, res = results
    assert bound_under(work) == {}
    assert res["cleanup"]["detached_at_exit"] == []


def test_table_and_cli_entry_point(results, tmp_path: Path):
    _, _, res = results
    table = bench.report.table(res)
    for heading in ("attach+detach cycle", "discovery, 4 devices", "contention", "I/O",
                    "targets"):
        assert heading in table
    # The module entry point parses its options (no run: --help exits 0).
    proc = subprocess.run([sys.executable, "-m", "loopcore.bench", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--quick" in proc.stdout
