"""The benchmark harness (benchmarks/, run as ``python -m benchmarks`` from the
repository root) in a tiny setting: output shape and samples, never timings."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import bound_under

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[1]

# --quick, shrunk further by explicit options (which win over --quick).
TINY = ["--quick", "--cycles", "6", "--slow-cycles", "2", "--cycle-rounds", "2",
        "--devices", "2,4", "--discovery-rounds", "2", "--procs", "1,2",
        "--contention-cycles", "3", "--contention-rounds", "1", "--io-mib", "4",
        "--io-rounds", "1", "--burst-size", "3", "--burst-rounds", "1", "--cli-files", "3",
        "--cli-rounds", "1"]


def _harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=600)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench-out")
    work = tmp_path_factory.mktemp("bench-work")
    proc = _harness(*TINY, "--out", str(out), "--workdir", str(work), "--no-progress")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads((out / "results.json").read_text())
    return out, work, res, proc


def _all_samples(contenders: dict) -> None:
    for name, c in contenders.items():
        assert c["samples"], f"{name} produced no samples"
        assert c["summary"]["n"] == len(c["samples"])


def test_every_scenario_produced_samples(results):
    _, _, res, _ = results
    assert res["settings"]["discovery_batch"] == 1  # from --quick
    scen = res["scenarios"]
    assert set(scen) == {"cycle", "burst", "discovery", "contention", "io", "cli"}
    assert res["quick"] is True

    cycle = scen["cycle"]["contenders"]
    assert set(cycle) == {"loopcore", "c_floor", "c_same_syscalls", "python_fcntl",
                          "losetup", "loopcore_legacy", "python_layer",
                          # direct I/O is on (the default): the same, off
                          "loopcore_buffered", "c_floor_buffered", "c_same_syscalls_buffered"}
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
        # the workers counted the C attach loop's attempts: at least one per cycle
        assert p["retries"] >= 0

    burst = scen["burst"]
    assert burst["params"]["burst_size"] == 3
    assert set(burst["contenders"]) == {"loopcore_burst", "c_burst", "loopcore_attach_loop",
                                        "losetup"}
    _all_samples(burst["contenders"])
    for c in burst["contenders"].values():
        assert c["detach"]["n"] == 1
    assert burst["cold"]["ns"] > 0
    for p in points:
        assert p["attach_latency_ns"]["n"] == p["rounds"][0]["cycles"]
        assert p["attach_latency_ns"]["p99"] > 0

    cli = scen["cli"]
    assert cli["params"]["files"] == 3
    assert set(cli["list"]) == {"python_pass", "loopcore_list", "losetup_list"}
    assert set(cli["batch"]) == {"loopcore_batch", "losetup", "loopcore_single"}
    for part in (cli["list"], cli["batch"]):
        _all_samples(part)
        for c in part.values():
            assert len(c["cpu_samples"]) == len(c["samples"])

    io = scen["io"]["contenders"]
    assert set(io) == {f"{w}_{op}" for w in ("loopcore_default", "losetup_default")
                       for op in ("read", "write")}
    for c in io.values():
        assert len(c["mb_per_s"]) == len(c["cache_growth_bytes"]) == 1


def test_json_file_describes_the_machine_and_targets(results):
    _, _, res, _ = results
    for key in ("kernel", "cpus", "python", "loopcore", "util_linux", "cc"):
        assert res["machine"][key]
    assert {t["target"] for t in res["targets"]}
    assert all(t["met"] in (True, False) for t in res["targets"])


def test_plots_or_a_note(results):
    out, _, _, proc = results
    plots = [line.split(": ", 1)[1] for line in proc.stdout.splitlines()
             if line.startswith("plot: ")]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert plots == []
        assert "matplotlib is not installed" in proc.stderr
    else:
        assert sorted(Path(p).name for p in plots) == [
            "burst.png", "contention.png", "cycle.png", "discovery.png", "io.png"]
        for p in plots:
            assert Path(p).parent == out and Path(p).stat().st_size > 0


def test_nothing_left_bound(results):
    _, work, res, _ = results
    assert bound_under(work) == {}
    assert res["cleanup"]["detached_at_exit"] == []


def test_table_and_entry_point(results):
    out, _, _, proc = results
    for heading in ("attach+detach cycle", "burst of 3 attaches", "discovery, 4 devices",
                    "contention", "I/O", "targets"):
        assert heading in proc.stdout
    # --quick's few samples: verdicts are marked indicative, never met/MISSED
    verdicts = proc.stdout.split("== targets ==", 1)[1]
    assert "indicative: " in verdicts and "MISSED" not in verdicts
    assert f"results: {out / 'results.json'}" in proc.stdout
    # The module entry point parses its options (no run: --help exits 0).
    helped = _harness("--help")
    assert helped.returncode == 0 and "--quick" in helped.stdout
    assert "python -m benchmarks" in helped.stdout
    bad = _harness("--scenarios", "nope")
    assert bad.returncode != 0 and "unknown scenario" in bad.stderr


def test_vm_scenarios_in_the_table_and_targets():
    """The VM scenarios' JSON (as dm-bench and dmlog-bench write it) makes
    table rows and target verdicts; a VM that failed is reported, not
    taken for a pass."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import report
    finally:
        sys.path.remove(str(ROOT))
    dm = {"result": {"kernel": "6.1", "loopcore_median_ms": 1.2, "c_nodes_median_ms": 1.0,
                     "c_bare_median_ms": 0.9, "dmsetup_median_ms": 30.0,
                     "vs_c_same_syscalls": 1.2, "ratio": 25.0}}
    busiest = "IN_SYNC (core log), 16 in flight"
    dmlog = {"host": {"memory": {"core log, 2^20 regions: retained KiB "
                                 "(tracemalloc + C state)": 257.0},
                      "requests": {f"C loop / Python reference: {busiest}": 2.5,
                                   f"round trips/s, C loop: {busiest}": 250000.0}},
             "vm": {"size_mib": 32,
                    "resync_s": {"kernel core": [1.0, 1.0], "userspace clustered-core": [1.2]},
                    "iops": {"kernel core": [1000.0], "userspace clustered-core": [400.0]}}}
    targets = report.targets({"dm": dm, "dmlog": dmlog})
    # dm: 1.2x the C (over 1.10x), 25x dmsetup; dmlog: 1.2x the resync time,
    # 0.4x the IOPS, 257 KiB, the C loop 2.5x the reference (under 3x) at
    # 250 000 round trips/s
    assert [(t["value"], t["met"]) for t in targets] == [
        (1.2, False), (25.0, True), (1.2, True), (0.4, False), (257.0, True), (2.5, False),
        (250000.0, True)]
    text = report.table({"scenarios": {"dm": dm, "dmlog": dmlog}, "targets": targets})
    assert "loopcore.dm" in text and "userspace clustered-core" in text
    failed = report.targets({"dm": {"error": "dm-bench exited 1"}})
    assert [t["met"] for t in failed] == [None, None]
    assert "not measured: dm-bench exited 1" in report.table(
        {"scenarios": {"dm": {"error": "dm-bench exited 1"}}, "targets": failed})
