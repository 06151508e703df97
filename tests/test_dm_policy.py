"""The client's policy against a FakeKernel through the seam
(``loopcore._c.lib``): checks before any ioctl, EBUSY retries, buffer
growth and reuse, undo of a failed create, error types, status lines."""
from __future__ import annotations

import errno

import pytest

from loopcore import _c, dm, errors
from loopcore.dm import lifecycle as dm_lifecycle

from dmfake import KEY, FakeKernel, fake_mapper_fixture  # noqa: F401 - the fixture


def test_validation_before_any_ioctl(fake_mapper):
    """Bad names fail before any ioctl."""
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    del kernel.requests[:]
    for call in (lambda: m.info("a/b"), lambda: m.create("control"),
                 lambda: m.rename("ok", ".."), lambda: m.set_uuid("ok", ""),
                 lambda: m.create("ok", table=[])):
        with pytest.raises(ValueError) as exc:
            call()
        assert isinstance(exc.value, errors.Error)
    assert kernel.requests == []


# --- policy, through the seam (loopcore._c.lib) -----------------------------------------

def test_remove_retries_ebusy(fake_mapper, monkeypatch):
    sleeps = []
    monkeypatch.setattr(dm_lifecycle.time, "sleep", sleeps.append)
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    kernel.fail[dm.Cmd.DEV_REMOVE] = [-errno.EBUSY, -errno.EBUSY]
    assert m.remove("x", retry_delay=0.2) is True
    assert len(kernel.flags_of(dm.Cmd.DEV_REMOVE)) == 3 and sleeps == [0.2, 0.2]
    # EBUSY that outlasts the retries: a DmBusyError, which is a DeviceBusyError
    kernel.fail[dm.Cmd.DEV_REMOVE] = [-errno.EBUSY] * 10
    del sleeps[:]
    with pytest.raises(errors.DeviceBusyError) as exc:
        m.remove("x", retries=3, retry_delay=0.01)
    assert isinstance(exc.value, errors.DmBusyError)
    assert not isinstance(exc.value, errors.LoopError)
    assert exc.value.errno == errno.EBUSY and exc.value.filename == "/dev/mapper/x"
    assert sleeps == [0.01] * 3
    # deferred: no retries, the kernel decides
    kernel.fail[dm.Cmd.DEV_REMOVE] = [-errno.EBUSY]
    with pytest.raises(errors.DmBusyError):
        m.remove("x", deferred=True)


def test_buffer_grows_on_buffer_full(fake_mapper):
    devices = [(f"dev-{i:04d}", f"UUID-{i:04d}") for i in range(2000)]
    kernel = FakeKernel(devices=devices)
    m = fake_mapper(kernel)
    del kernel.sizes[:]
    listed = m.list_devices()
    assert [(d.name, d.uuid) for d in listed] == devices
    assert kernel.sizes == [16384, 32768, 65536, 131072]
    assert m._channel.out_size == 131072
    del kernel.sizes[:]
    m.list_devices()                      # starts at the size that last worked
    assert kernel.sizes == [131072]


def test_create_removes_the_device_when_load_fails(fake_mapper):
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    del kernel.requests[:]
    kernel.fail[dm.Cmd.TABLE_LOAD] = [-errno.EINVAL]
    with pytest.raises(OSError) as exc:
        m.create("d", table="0 8 zero")
    assert [r[0] for r in kernel.requests] == [dm.Cmd.DEV_CREATE, dm.Cmd.TABLE_LOAD,
                                               dm.Cmd.DEV_REMOVE]
    assert exc.value.errno == errno.EINVAL and exc.value.filename == "/dev/mapper/d"
    assert type(exc.value) is errors.DmError
    # resume failing too; and the undo failing keeps the first error
    del kernel.requests[:]
    kernel.fail[dm.Cmd.DEV_SUSPEND] = [-errno.ENOMEM]
    kernel.fail[dm.Cmd.DEV_REMOVE] = [-errno.EIO]
    with pytest.raises(OSError) as exc:
        m.create("d", table="0 8 zero")
    assert exc.value.errno == errno.ENOMEM
    assert [r[0] for r in kernel.requests][-1] == dm.Cmd.DEV_REMOVE


def test_builtin_errors_from_node_handling_are_translated(fake_mapper, tmp_path):
    """An os.* failure while making /dev/mapper/<name> leaves as loopcore's
    own exception, and the device is removed again."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    kernel = FakeKernel()
    m = fake_mapper(kernel, manage_nodes=True, dev_dir=str(not_a_dir))
    with pytest.raises(NotADirectoryError) as exc:
        m.create("d", table="0 8 zero")
    assert isinstance(exc.value, errors.Error)
    assert [r[0] for r in kernel.requests][-1] == dm.Cmd.DEV_REMOVE
    with pytest.raises(TypeError) as exc2:
        m.remove("d", retries="3")  # type: ignore[arg-type]
    assert isinstance(exc2.value, errors.Error)


def test_missing_device_is_a_dm_error(fake_mapper):
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    kernel.fail[dm.Cmd.DEV_STATUS] = [-errno.ENXIO, -errno.ENXIO]
    with pytest.raises(OSError) as exc:
        m.info("gone")
    assert type(exc.value) is errors.DmError and exc.value.errno == errno.ENXIO
    assert str(exc.value) == "[Errno 6] No such device-mapper device: '/dev/mapper/gone'"
    assert m.exists("gone") is False


# --- status lines are not tables ---------------------------------------------------

def test_status_returns_status_lines(fake_mapper):
    kernel = FakeKernel("0 8 zero\n8 8 linear 7:0 0")
    m = fake_mapper(kernel)
    status = m.status("s")
    assert isinstance(status, dm.Status) and not isinstance(status, dm.Table)
    assert status == (dm.StatusLine(0, 8, "zero", ""), dm.StatusLine(8, 8, "linear", "7:0 0"))
    assert status[1].target_type == "linear"
    assert str(status) == "0 8 zero \n8 8 linear 7:0 0"   # dmsetup status's lines
    with pytest.raises(TypeError):
        m.load("s", status)  # type: ignore[arg-type]


# --- the request buffer -------------------------------------------------------------

def test_request_buffer_is_reused_and_holds_only_this_request(fake_mapper):
    """One buffer serves call after call (no allocation on the hot path),
    yet the kernel sees only the current request in it; a buffer that held
    a key is wiped and never used again."""
    kernel = FakeKernel()
    m = fake_mapper(kernel)

    def address(cbuf) -> int:
        return int(_c.ffi.cast("uintptr_t", cbuf))

    m.message("a", 0, "x" * 1000)     # a long payload in a 16 KiB (out) buffer
    m.message("a", 0, "y")            # the same buffer, the long text gone
    first, second = kernel.buffers[-2:]
    assert address(first) == address(second)
    assert b"x" not in bytes(_c.ffi.buffer(second))
    assert kernel.requests[-1][4].rstrip(b"\0").endswith(b"y")
    m.load("a", f"0 8 crypt aes-xts-plain64 {KEY} 0 7:0 0")
    m.message("a", 0, "y")
    secure, after = kernel.buffers[-2:]
    assert address(secure) == address(second)   # taken from the spare ...
    assert not any(bytes(_c.ffi.buffer(secure)))  # ... wiped ...
    assert address(after) != address(secure)    # ... and let go
