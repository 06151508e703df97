"""attach() of a path is one C call: lc_attach opens the backing file
itself.  The errors of that open keep their types, errnos and filenames;
nothing stays open or bound; the kernel records the path."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import loopcore
from loopcore import _c

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

MiB = 1 << 20


class CountingLib:
    """The real lib, counting the calls of the functions an attach+detach
    may make."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: Dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._real, name)
        if not name.startswith("lc_"):
            return value

        def counted(*args: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return value(*args)
        return counted


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingLib:
    lib = CountingLib(_c.lib)
    monkeypatch.setattr(_c, "lib", lib)
    return lib


@pytest.mark.parametrize("as_type", [str, Path, os.fsencode], ids=["str", "Path", "bytes"])
def test_a_path_attach_is_one_c_call_and_its_detach_another(make_image, counting,
                                                            as_type: Callable[[str], Any]):
    image = make_image(size=MiB)
    device = loopcore.attach(as_type(str(image)))
    try:
        attach_calls = dict(counting.calls)
        assert device.backing_file == str(image)
    finally:
        device.detach()
    assert attach_calls == {"lc_attach": 1}
    detach_calls = {k: v - attach_calls.get(k, 0) for k, v in counting.calls.items()}
    assert {k: v for k, v in detach_calls.items() if v} == {"lc_detach": 1}


def test_the_kernel_records_the_path_cut_as_losetup_cuts_it(tmp_path: Path):
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    image = deep / "disk.img"
    image.write_bytes(bytes(MiB))
    with loopcore.attach(str(image)) as device:
        raw = bytes(_c.ffi.buffer(device._status().lo_file_name))
        assert raw.split(b"\0", 1)[0] == os.fsencode(str(image))[:63]


def test_a_relative_path_is_recorded_absolute(make_image, monkeypatch: pytest.MonkeyPatch):
    image = make_image(size=MiB)
    monkeypatch.chdir(image.parent)
    with loopcore.attach(image.name) as device:
        assert device.backing_file == str(image)


@pytest.mark.parametrize("read_only", [False, True])
def test_a_missing_file(tmp_path: Path, read_only: bool):
    missing = str(tmp_path / "missing.img")
    with pytest.raises(FileNotFoundError) as e:
        loopcore.attach(missing, read_only=read_only)
    assert isinstance(e.value, loopcore.Error)
    assert e.value.errno == errno.ENOENT and e.value.filename == missing


def test_a_directory(tmp_path: Path):
    with pytest.raises(IsADirectoryError) as e:
        loopcore.attach(str(tmp_path))
    assert e.value.filename == str(tmp_path)
    with pytest.raises(loopcore.LoopError, match="not a regular file or block device") as e:
        loopcore.attach(str(tmp_path), read_only=True)
    assert e.value.errno == errno.EINVAL and e.value.filename == str(tmp_path)


def test_a_fifo_is_refused_without_hanging(tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for read_only in (True, False):
        with pytest.raises(loopcore.LoopError) as e:
            loopcore.attach(str(fifo), read_only=read_only)
        assert e.value.errno == errno.EINVAL and e.value.filename == str(fifo)


def test_no_permission(make_image, monkeypatch: pytest.MonkeyPatch):
    image = make_image(size=MiB)
    image.chmod(0o400)
    # root passes every mode check: CAP_DAC_OVERRIDE dropped for this open
    # is not to be had in-process, so the kernel's answer is faked at the
    # one seam, the C call, with a real EACCES from a real open
    real = _c.lib

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def lc_attach(ctl_fd: int, req: Any, path: bytes, result: Any) -> int:
            result.failed_step = _c.lib.LC_STEP_BACKING
            result.backing.mode = 0
            return -errno.EACCES

    monkeypatch.setattr(_c, "lib", Refusing())
    with pytest.raises(PermissionError) as e:
        loopcore.attach(str(image))
    assert isinstance(e.value, loopcore.Error)
    assert e.value.errno == errno.EACCES and e.value.filename == str(image)


def test_an_offset_at_or_past_the_end(make_image):
    image = str(make_image(size=MiB))
    for offset in (MiB, MiB + 512):
        with pytest.raises(loopcore.errors.ValueError, match=f"{image}: offset {offset} is at or "
                           "past the end"):
            loopcore.attach(image, offset=offset)


@pytest.mark.parametrize("path, match", [("", "empty"), ("a\0b", "NUL")])
def test_paths_no_open_can_take(path: str, match: str):
    with pytest.raises(loopcore.errors.ValueError, match=match):
        loopcore.attach(path)


def test_a_shared_lock_is_downgraded_on_the_one_call_path(make_image):
    image = str(make_image(size=MiB))
    with loopcore.attach(image, lock="shared") as device:
        assert device.locked == "shared"


def test_settings_read_back_use_the_size_lc_attach_found(make_image):
    image = str(make_image(size=4 * MiB))
    with loopcore.attach(image, offset=MiB, size_limit=2 * MiB) as device:
        assert device.info().size_bytes == 2 * MiB
    with loopcore.attach(image, offset=3 * MiB) as device:
        assert device.info().size_bytes == MiB


def test_many_threads_attach_paths_at_once(make_image):
    """Each thread's lc_attach result is its own: eight threads binding at
    once each get the device they bound."""
    import threading
    images = [str(make_image(size=MiB)) for _ in range(8)]
    got: List[Any] = [None] * len(images)
    barrier = threading.Barrier(len(images))

    def one(i: int) -> None:
        barrier.wait()
        got[i] = loopcore.attach(images[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert [d.backing_file for d in got] == images
        assert len({d.number for d in got}) == len(images)
    finally:
        for d in got:
            if d is not None:
                d.detach()


def _request_state(request: Any) -> Dict[str, Any]:
    return {name: getattr(request, name) for name in type(request).__slots__}


def test_plain_attaches_share_one_request_that_no_attach_changes(make_image):
    """attach() with nothing but read_only/autoclear/direct_io set uses one
    shared request per lo_flags; attaches that go further (reuse, a lock,
    a timeout, a block size) make their own and leave it as it was."""
    from loopcore.loop import request as request_module
    image = str(make_image(size=MiB))
    loopcore.attach(image).detach()
    shared = request_module.plain_request(False, False, True)
    before = _request_state(shared)
    assert before["options"] == 0 and before["number"] == -1 and not before["created"]
    with loopcore.attach(image, reuse=True):
        pass
    with loopcore.attach(image, lock=True, timeout=30):
        pass
    with loopcore.attach(image, block_size=4096):
        pass
    loopcore.attach(image).detach()
    assert request_module.plain_request(False, False, True) is shared
    assert _request_state(shared) == before
    assert request_module.plain_request(True, 1, 0) is not shared
    assert request_module.plain_request(True, 1, 0).read_only is True


@pytest.mark.parametrize("argument", ["offset", "size_limit", "block_size"])
@pytest.mark.parametrize("value", [0.0, False], ids=["float", "bool"])
def test_plain_looking_arguments_of_the_wrong_type_are_refused(make_image, counting,
                                                              argument: str, value: Any):
    """The shared request's shortcut takes ints only: a 0.0 or a False is
    refused, as before, without a C call."""
    image = str(make_image(size=MiB))
    with pytest.raises(loopcore.errors.TypeError, match=argument):
        loopcore.attach(image, **{argument: value})
    assert counting.calls == {}
