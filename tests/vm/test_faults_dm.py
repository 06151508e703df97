"""DeviceMapper.create under injected faults (tests/faults.py), in the VM.

create is DM_DEV_CREATE -> DM_TABLE_LOAD -> DM_DEV_SUSPEND (resume).  Each
case fails one of them with one errno, once or always, in a child process.
It must end in success or a typed error (an OSError with errno and filename
``/dev/mapper/<name>``), with no dm device left (the kernel's list, ``dmsetup
ls`` and ``/dev/mapper``) and nothing bound to the test's files.  EINTR for
ever: the child's SIGALRM handler raises ``faults.Interrupted`` after a
while, and propagating it (nothing left behind) passes, as in
tests/test_faults.py.  The outcomes go to build/vm-tests/fault-table-dm.md.
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import loopcore
from loopcore import dm

from faults import ALWAYS, ONCE, Fault, bound_under, dm_ioctl, run_with_faults
from vmhelpers import PREFIX, dmsetup

ROOT = Path(__file__).resolve().parents[2]
TABLE_PATH = ROOT / "build" / "vm-tests" / "fault-table-dm.md"
CASE_TIMEOUT = 60.0      # qemu without KVM is slow
INTERRUPT_AFTER = 1.0

STEPS = {"DM_DEV_CREATE": dm_ioctl(3), "DM_TABLE_LOAD": dm_ioctl(9),
         "DM_DEV_SUSPEND": dm_ioctl(6)}
ERRNOS = [errno.EBUSY, errno.EIO, errno.ENOMEM, errno.EINTR]
MODES = {"once": ONCE, "always": ALWAYS}
CASES = [pytest.param(step, err, mode, id=f"create-{step}-{errno.errorcode[err]}-{mode}")
         for step in STEPS for err in ERRNOS for mode in MODES]

OUTCOMES: Dict[Tuple[str, int, str], Tuple[str, List[str]]] = {}


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    start = time.monotonic()
    yield
    if not OUTCOMES:
        return
    columns = [(e, m) for e in ERRNOS for m in MODES]
    lines = [
        "# Fault injection: DeviceMapper.create",
        "",
        f"`tests/vm/test_faults_dm.py` in the VM (Linux {os.uname().release}), "
        f"{time.monotonic() - start:.0f} s.  Outcomes as in build/fault-table.md.",
        "",
        "| step | " + " | ".join(f"{errno.errorcode[e]} {m}" for e, m in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for step in STEPS:
        cells = [OUTCOMES.get((step, e, m), ("not run", []))[0] for e, m in columns]
        lines.append(f"| create {step} | " + " | ".join(cells) + " |")
    failing = [(k, v[1]) for k, v in OUTCOMES.items() if v[1]]
    lines += ["", f"{len(OUTCOMES)} cases, {len(failing)} breaking a rule."]
    for (step, err, mode), problems in failing:
        lines.append(f"- `create-{step}-{errno.errorcode[err]}-{mode}`: "
                     + "; ".join(p.splitlines()[0] for p in problems))
    try:
        TABLE_PATH.parent.mkdir(parents=True, exist_ok=True)
        TABLE_PATH.write_text("\n".join(lines) + "\n")
    except OSError as exc:  # outside scripts/vm-tests the directory may be read-only
        print(f"fault-table-dm: not written: {exc}")


def _dmsetup_names() -> List[str]:
    out = dmsetup("ls").stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and not line.startswith("No devices found")]


@pytest.mark.parametrize("step, err, mode", CASES)
def test_create_under_faults(tmp_path: Path, mapper: dm.DeviceMapper, step: str, err: int,
                             mode: str):
    image = tmp_path / "backing.img"
    with open(image, "wb") as f:
        f.truncate(1 << 20)
    name = f"{PREFIX}fault-{step.lower()}-{errno.errorcode[err]}-{mode}"
    node = os.path.join(dm.DEV_DIR, name)

    with loopcore.attach(image) as loop:
        devnum = loop.devnum

        def setup(ctx):
            ctx.state["m"] = dm.DeviceMapper()

        def code(ctx):
            m = ctx.state["m"]
            info = m.create(name, table=[dm.linear(0, 2048, devnum)])
            ctx.disarm()
            ctx.report["created"] = {"active": info.active, "suspended": info.suspended}
            ctx.report["table"] = str(m.table(name))
            m.remove(name)
            ctx.report["removed"] = True

        interrupt = INTERRUPT_AFTER if (err == errno.EINTR and mode == "always") else None
        result = run_with_faults(code, [Fault("ioctl", request=STEPS[step], errno=err,
                                              times=MODES[mode])],
                                 setup=setup, timeout=CASE_TIMEOUT, interrupt_after=interrupt)
        in_kernel = name in {d.name for d in mapper.list_devices()}
        in_dmsetup = name in _dmsetup_names()
        node_left = os.path.lexists(node)
        if in_kernel:
            mapper.remove(name, retries=10, retry_delay=0.05)
        elif node_left:
            os.unlink(node)
    bound = bound_under(tmp_path)
    for dev in bound:
        loopcore.detach(dev)

    problems: List[str] = []
    stats = result.stats[0]
    if result.timed_out:
        problems.append(f"hang: no report within {CASE_TIMEOUT} s")
        cell = "hang"
    elif result.crashed:
        problems.append(f"child crashed: {result.crashed}\n{result.output}")
        cell = "crash"
    elif result.error is None:
        cell = "retried, ok" if stats.passed else "ok, error ignored"
        if stats.injected == 0:
            problems.append("the fault was never injected")
        created = result.report.get("created", {})
        if not created.get("active") or created.get("suspended"):
            problems.append(f"created, but not active and resumed: {result.report}")
    else:
        e = result.error
        cell = e.type if e.errno == err else f"{e.type} {errno.errorcode.get(e.errno, e.errno)}"
        if "created" in result.report:
            problems.append(f"create returned, then table/remove failed: {e}")
        elif e.type == "Interrupted":
            cell = "interrupted (handler ran)"
            if not (err == errno.EINTR and mode == "always"):
                problems.append(f"interrupted by the test's SIGALRM handler: {e.message}")
        elif not e.is_oserror:
            problems.append(f"untyped error {e}\n{e.traceback}")
        elif not isinstance(e.errno, int) or e.filename != node:
            problems.append(f"errno/filename not set or not {node!r}: {e}")
    if result.leaked_fds:
        problems.append(f"fds left open: {result.leaked_fds}")
    if in_kernel or in_dmsetup or node_left:
        problems.append(f"dm device left behind: kernel {in_kernel}, dmsetup ls {in_dmsetup}, "
                        f"node {node_left}")
    if bound:
        problems.append(f"loop devices left bound: {bound}")
    OUTCOMES[(step, err, mode)] = (("✗ " + cell) if problems else cell, problems)
    assert not problems, "\n".join(problems + [f"error: {result.error}",
                                               f"report: {result.report}",
                                               f"faults: {result.stats}"])
