"""Policy without a kernel: retries, fallbacks and error mapping, with the C
library replaced through its one seam (``loopcore._c.lib``).  These run
unprivileged and in containers; the real-kernel tests cover the C itself."""
from __future__ import annotations

import errno
import logging
import os
from typing import Any, Callable, Dict, Iterator, List

import pytest

import loopcore
from loopcore import _c
from loopcore.loop import _calls
from loopcore.loop.backing import BackingFile
from loopcore.loop.binding import bind
from loopcore.loop.control import control
from loopcore.loop.request import AttachRequest


class FakeLib:
    """The real ``lib`` with some functions replaced."""

    def __init__(self, real: Any, **overrides: Callable[..., int]) -> None:
        self._real = real
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._real, name)


@pytest.fixture
def fake_lib(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeLib]]:
    """Install a FakeLib; retries sleep for nothing; the shared control fd
    is /dev/null, so nothing touches /dev/loop-control."""
    real = _c.lib
    monkeypatch.setattr(_calls, "EAGAIN_SLEEP_S", 0)
    monkeypatch.setattr(_calls, "REMOVE_FIRST_SLEEP_S", 0)
    null_fds: List[int] = []

    def open_null() -> int:
        fd = os.open(os.devnull, os.O_RDWR)
        null_fds.append(fd)
        return fd

    def install(**overrides: Callable[..., int]) -> FakeLib:
        overrides.setdefault("lc_ctl_open", open_null)
        fake = FakeLib(real, **overrides)
        monkeypatch.setattr(_c, "lib", fake)
        return fake

    monkeypatch.setattr(control, "_fd", -1)
    yield install
    monkeypatch.setattr(_c, "lib", real)
    for fd in null_fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _device(fd: int) -> loopcore.LoopDevice:
    return loopcore.LoopDevice(1234, fd, os.makedev(7, 1234), None)


def test_eagain_is_retried_then_succeeds(fake_lib):
    answers = [-errno.EAGAIN, -errno.EAGAIN, 0]
    fake_lib(lc_set_capacity=lambda fd: answers.pop(0))
    dev = _device(os.open(os.devnull, os.O_RDONLY))
    try:
        dev.set_capacity()
        assert answers == []
    finally:
        dev.close()


def test_eagain_that_outlasts_the_retries_is_a_typed_error(fake_lib):
    calls = []
    fake_lib(lc_set_capacity=lambda fd: calls.append(fd) or -errno.EAGAIN)
    dev = _device(os.open(os.devnull, os.O_RDONLY))
    try:
        with pytest.raises(BlockingIOError) as e:
            dev.set_capacity()
        assert isinstance(e.value, loopcore.Error) and e.value.filename == dev.path
        assert len(calls) == _calls.EAGAIN_ATTEMPTS
    finally:
        dev.close()


@pytest.mark.parametrize("written_back, err, closed", [
    (False, errno.EIO, False),   # data kept: still bound, still open
    (True, errno.EBUSY, False),  # LOOP_CLR_FD retryable: still open
    (True, errno.ENXIO, True),   # not bound: nothing to keep open for
])
def test_detach_failures(fake_lib, written_back: bool, err: int, closed: bool):
    # lc_detach's answer: -errno from LOOP_CLR_FD, below -LC_NOT_WRITTEN_BACK
    # from the write-back
    answer = -err if written_back else -(_c.lib.LC_NOT_WRITTEN_BACK + err)
    fake_lib(lc_detach=lambda fd: answer, lc_get_status64=lambda fd, info: -errno.ENXIO)
    fd = os.open(os.devnull, os.O_RDONLY)
    dev = _device(fd)
    try:
        with pytest.raises(OSError) as e:
            dev.detach()
        assert e.value.errno == err and e.value.filename == dev.path
        assert isinstance(e.value, loopcore.Error)
        assert dev.closed is closed
        if not written_back:
            assert "stays bound" in str(e.value)
    finally:
        dev.close()


def _fake_attach(script: List[Dict[str, int]], seen: List[int]) -> Callable[..., int]:
    """lc_attach answering from ``script`` (one dict per call: rc and result
    fields), recording the first_attempt of each call in ``seen``."""
    def lc_attach(ctl_fd: int, req: Any, path: bytes, result: Any) -> int:
        seen.append(req.first_attempt)
        answer = dict(script.pop(0))
        rc = answer.pop("rc")
        for field, value in answer.items():
            setattr(result, field, value)
        return rc
    return lc_attach


@pytest.fixture
def backing(tmp_path) -> Iterator[BackingFile]:
    path = tmp_path / "b.img"
    path.write_bytes(bytes(4096))
    with BackingFile.open(str(path), read_only=True) as bf:
        yield bf


def test_bind_resumes_after_eintr_where_it_stopped(fake_lib, backing):
    seen: List[int] = []
    step_lock = _c.lib.LC_STEP_LOCK
    fake_lib(lc_attach=_fake_attach([
        {"rc": -errno.EINTR, "failed_step": step_lock, "attempts": 0},
        {"rc": -errno.EINTR, "failed_step": _c.lib.LC_STEP_BACKOFF, "attempts": 5},
        {"rc": 7, "number": 7, "failed_step": 0, "attempts": 6},
    ], seen))
    result = bind(backing, AttachRequest(), 0)
    assert result.number == 7
    assert seen == [0, 0, 5]  # PEP 475: retried, from the attempt it stopped at


def test_the_attach_retry_policy_is_read_at_call_time(fake_lib, backing, monkeypatch):
    """lc_attach gets _calls' retry constants as they are when attach()
    runs (a test shrinking them shrinks the C loop), with the request."""
    seen: List[tuple] = []

    def lc_attach(ctl_fd: int, req: Any, path: bytes, result: Any) -> int:
        seen.append((req.max_attempts, req.sleep_base_us, req.sleep_span_us, req.offset,
                     req.size_limit, req.number, _c.ffi.string(req.file_name)))
        result.number = 7
        return 7

    fake_lib(lc_attach=lc_attach)
    bind(backing, AttachRequest(offset=512, size_limit=1024), 0)
    monkeypatch.setattr(_calls, "ATTACH_ATTEMPTS", 3)
    monkeypatch.setattr(_calls, "ATTACH_SLEEP_BASE_US", 5)
    bind(backing, AttachRequest(number=12), 0)
    name = backing.file_name_field()  # at most 63 bytes
    assert seen == [(64, 10_000, 240_000, 512, 1024, -1, name), (3, 5, 240_000, 0, 0, 12, name)]


@pytest.mark.parametrize("answer, raised, filename", [
    ({"rc": -errno.EBUSY, "failed_step": 4, "attempts": 64}, loopcore.LoopBusyError, "backing"),
    ({"rc": -errno.ENOSPC, "failed_step": 2}, loopcore.NoFreeDeviceError, "/dev/loop-control"),
    ({"rc": -errno.ENXIO, "failed_step": 3, "number": 9}, loopcore.LoopBusyError, "/dev/loop9"),
    ({"rc": -errno.EACCES, "failed_step": 3, "number": 9}, PermissionError, "/dev/loop9"),
    ({"rc": -errno.EIO, "failed_step": 5, "number": 9}, loopcore.LoopError, "/dev/loop9"),
    ({"rc": -errno.ETIMEDOUT, "failed_step": 1}, TimeoutError, "/dev/loop-control"),
    ({"rc": -errno.EINVAL, "failed_step": 4}, loopcore.LoopError, "backing"),
])
def test_bind_failures_are_typed_and_name_the_right_file(fake_lib, backing, answer, raised,
                                                         filename):
    assert answer["failed_step"] == {1: _c.lib.LC_STEP_LOCK, 2: _c.lib.LC_STEP_GET_FREE,
                                     3: _c.lib.LC_STEP_OPEN, 4: _c.lib.LC_STEP_BIND,
                                     5: _c.lib.LC_STEP_READ_BACK}[answer["failed_step"]]
    fake_lib(lc_attach=_fake_attach([answer], []))
    with pytest.raises(raised) as e:
        bind(backing, AttachRequest(timeout=0), 0)
    assert isinstance(e.value, loopcore.Error)
    assert e.value.filename == (backing.name if filename == "backing" else filename)
    assert e.value.errno == -answer["rc"]


def test_remove_retries_ebusy_with_backoff(fake_lib, monkeypatch):
    answers = [-errno.EBUSY, -errno.EBUSY, 0]
    sleeps: List[float] = []
    monkeypatch.setattr(_calls, "REMOVE_FIRST_SLEEP_S", 0.001)
    monkeypatch.setattr("loopcore._retry.time.sleep", sleeps.append)
    fake_lib(lc_ctl_remove=lambda fd, n: answers.pop(0))
    with loopcore.LoopControl() as ctl:
        ctl.remove(5)
    assert answers == [] and sleeps == [0.001, 0.002]


def test_debug_trace_says_which_path_ran(fake_lib, backing, caplog):
    fake_lib(lc_attach=_fake_attach([{"rc": 3, "number": 3, "attempts": 2,
                                      "busy_retries": 1}], []))
    with caplog.at_level(logging.DEBUG, logger="loopcore"):
        bind(backing, AttachRequest(), 0)
    assert any("LOOP_CONFIGURE on /dev/loop3: ok after 2 attempt(s) (1 busy" in r.getMessage()
               for r in caplog.records)


def test_debug_trace_is_off_by_default_and_switched_on_by_the_environment():
    import subprocess
    import sys
    code = ("import logging, loopcore; "
            "print(logging.getLogger('loopcore').isEnabledFor(logging.DEBUG))")
    env = {k: v for k, v in os.environ.items() if k != "LOOPCORE_DEBUG"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    on = subprocess.run([sys.executable, "-c", code], env=dict(env, LOOPCORE_DEBUG="1"),
                        capture_output=True, text=True)
    assert (off.stdout.strip(), on.stdout.strip()) == ("False", "True")


def test_every_exception_is_in_the_family(tmp_path):
    for call, builtin in ((lambda: loopcore.attach(tmp_path / "missing.img"), FileNotFoundError),
                          (lambda: loopcore.attach(-1), ValueError),
                          (lambda: loopcore.attach(tmp_path, offset="1"), TypeError),
                          (lambda: loopcore.find(""), ValueError),
                          (lambda: loopcore.open(tmp_path / "missing"), FileNotFoundError)):
        with pytest.raises(builtin) as e:
            call()
        assert isinstance(e.value, loopcore.Error), type(e.value).__mro__


# --- builders: a chosen device, reuse, locks (policy without a kernel) -------------

def _attach_recorder(answer: Dict[str, int], calls: List[Dict[str, int]]) -> Callable[..., int]:
    """lc_attach that records (number, options) and answers ``answer``
    (rc and result fields); options without the read-back bits (what to
    read back depends on what this process knows of the kernel)."""
    def lc_attach(ctl_fd: int, req: Any, path: bytes, result: Any) -> int:
        read_back = _c.lib.LC_ATTACH_READ_SETTINGS | _c.lib.LC_ATTACH_READ_DEVNUM
        calls.append({"number": req.number, "options": req.options & ~read_back})
        fields = dict(answer)
        rc = fields.pop("rc")
        for field, value in fields.items():
            setattr(result, field, value)
        return rc
    return lc_attach


@pytest.mark.parametrize("answer, raised, message", [
    ({"rc": -errno.EBUSY, "failed_step": 4, "attempts": 1}, loopcore.LoopBusyError,
     "the device is bound"),
    ({"rc": -errno.EBUSY, "failed_step": 4, "attempts": 64}, loopcore.LoopBusyError,
     "stayed busy (64 attempts)"),
    ({"rc": -errno.EINVAL, "failed_step": 9}, loopcore.LoopError, "Invalid argument"),
    ({"rc": -errno.ETIMEDOUT, "failed_step": 10}, TimeoutError, "lock on the device"),
    ({"rc": -errno.EACCES, "failed_step": 10}, PermissionError, "Permission denied"),
])
def test_chosen_device_failures_name_the_device(fake_lib, backing, answer, raised, message):
    step = {4: _c.lib.LC_STEP_BIND, 9: _c.lib.LC_STEP_ADD, 10: _c.lib.LC_STEP_DEVICE_LOCK}
    answer = dict(answer, failed_step=step[answer["failed_step"]], number=77)
    calls: List[Dict[str, int]] = []
    fake_lib(lc_attach=_attach_recorder(answer, calls))
    with pytest.raises(raised) as e:
        loopcore.attach(backing.fd, read_only=True, number=77, lock=True, legacy=False,
                        direct_io=False, timeout=5)
    assert isinstance(e.value, loopcore.Error) and e.value.filename == "/dev/loop77"
    assert message in str(e.value)
    assert calls == [{"number": 77, "options": _c.lib.LC_ATTACH_LOCK_DEVICE}]


@pytest.mark.parametrize("created, expected", [(1, [31]), (0, [])],
                         ids=["made-for-it-is-removed", "existed-is-kept"])
def test_a_device_made_for_a_failed_attach_is_removed_again(fake_lib, backing, created,
                                                            expected):
    """Only a device LOOP_CTL_ADD made for this attach is removed when it fails."""
    removed: List[int] = []
    fake_lib(lc_attach=_attach_recorder({"rc": -errno.EIO, "failed_step": _c.lib.LC_STEP_BIND,
                                         "number": 31, "created": created}, []),
             lc_ctl_remove=lambda fd, n: removed.append(n) or 0)
    with pytest.raises(loopcore.LoopError):
        loopcore.attach(backing.fd, read_only=True, number=31, legacy=False)
    assert removed == expected


def test_reuse_binds_with_the_control_lock_held(fake_lib, backing, monkeypatch):
    # Nothing to reuse: the bind must not take (or drop) the control lock
    # reuse holds, so the look-up and the bind are one step for others.
    from loopcore.loop import discovery
    monkeypatch.setattr(discovery, "scan", lambda **kw: [])
    calls: List[Dict[str, int]] = []
    fake_lib(lc_attach=_attach_recorder({"rc": -errno.EIO, "failed_step": _c.lib.LC_STEP_BIND,
                                         "number": 5}, calls))
    with pytest.raises(loopcore.LoopError):
        loopcore.attach(backing.fd, read_only=True, reuse=True, lock="shared", legacy=False)
    assert calls == [{"number": -1, "options": _c.lib.LC_ATTACH_CONTROL_HELD
                      | _c.lib.LC_ATTACH_LOCK_DEVICE}]
    assert not control.lock.locked()  # released after the failure


@pytest.mark.parametrize("a, b, overlap", [
    ((0, 100), (100, 100), False), ((0, 100), (99, 1), True), ((0, 0), (10 ** 9, 1), True),
    ((50, 0), (0, 50), False), ((50, 0), (0, 51), True), ((0, 0), (0, 0), True),
])
def test_overlap_rules(a, b, overlap):
    from loopcore.loop.reuse import ranges_overlap
    assert ranges_overlap(*a, *b) is overlap
    assert ranges_overlap(*b, *a) is overlap


def test_blkpg_wrapper_refuses_unknown_operations():
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert _c.lib.lc_blkpg(fd, 99, 1, 0, 512) == -errno.EINVAL
        assert _c.lib.lc_blkpg(fd, _c.lib.LC_BLKPG_ADD, 1, 0, 512) == -errno.ENOTTY
    finally:
        os.close(fd)


def test_a_failed_partition_scan_names_the_device(fake_lib, backing):
    """lc_attach failing at the scan (LC_STEP_PARTSCAN, after its own unbind):
    the error names the device, and nothing is left to undo."""
    def lc_attach(ctl_fd, req, path, result):
        result.number, result.fd, result.lock_fd = 12, -1, -1
        result.failed_step = _c.lib.LC_STEP_PARTSCAN
        return -errno.EIO

    fake_lib(lc_attach=lc_attach)
    with pytest.raises(loopcore.LoopError) as e:
        loopcore.attach(backing.fd, read_only=True, partscan=True, legacy=False,
                        direct_io=False)
    assert e.value.errno == errno.EIO and e.value.filename == "/dev/loop12"
