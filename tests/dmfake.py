"""A stand-in for the device-mapper kernel side, shared by the dm host
tests: :class:`FakeKernel` replaces ``loopcore._c.lib`` (the seam) and the
``fake_mapper`` fixture makes a :class:`~loopcore.dm.DeviceMapper` on it.
No device-mapper needed; the real-kernel tests are in tests/vm."""
from __future__ import annotations

import os
import struct

import pytest

from loopcore import _c, dm
from loopcore.dm import ioctl as dm_ioctl

__all__ = ["KEY", "FakeKernel", "fake_mapper", "fake_mapper_fixture"]

# A dm-crypt key, for the tests that check it is masked, wiped and never logged.
KEY = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"


class FakeKernel:
    """Stands in for ``loopcore._c.lib``: lc_dm_open gives an fd (of
    /dev/null), lc_dm_ioctl records each request and answers TABLE_STATUS
    with ``table`` and LIST_DEVICES with ``devices`` (kernel names),
    setting BUFFER_FULL when the answer does not fit.  ``fail`` maps a
    command to a list of -errno results to return first (0: succeed);
    ``names`` maps uuids to the name a lookup by uuid reports."""

    def __init__(self, table: str = "", devices=(), version=(4, 47, 0)) -> None:
        self.table = dm.Table.parse(table) if table else dm.Table()
        self.devices = list(devices)
        self.version = version
        self.fail = {}       # cmd -> [rc, ...] consumed in order
        self.names = {}      # uuid (kernel form) -> name (kernel form)
        self.requests = []   # (cmd, flags, name, uuid, payload bytes)
        self.buffers = []    # the ioctl buffers, to look at after the call
        self.sizes = []      # data_size of each request
        self.versions = []   # the interface version each request asked for
        self.fds = []

    def lc_dm_open(self, path):
        fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def lc_dm_ioctl(self, fd, cmd, cbuf):
        view = _c.ffi.buffer(cbuf)
        (v0, v1, v2, size, start, _tc, _oc, flags, _ev, _pad, _dev, name, uuid,
         _d) = dm_ioctl.HEADER.unpack_from(view, 0)
        self.requests.append((cmd, flags, name.rstrip(b"\0"), uuid.rstrip(b"\0"),
                              bytes(view[start:size])))
        self.buffers.append(cbuf)
        self.sizes.append(size)
        self.versions.append((v0, v1, v2))
        pending = self.fail.get(cmd)
        if pending:
            rc = pending.pop(0)
            if rc:
                return rc
        out, count = b"", 0
        if cmd == dm.Cmd.TABLE_STATUS:
            out, count = self.specs()
        elif cmd == dm.Cmd.LIST_DEVICES:
            out = self.name_list()
        elif cmd == dm.Cmd.VERSION:
            view[0:12] = struct.pack("=3I", *self.version)
        uuid = uuid.rstrip(b"\0")
        if uuid and not name.rstrip(b"\0") and cmd != dm.Cmd.DEV_CREATE:
            # a lookup by uuid: the kernel fills in the name
            view[48:48 + 128] = self.names.get(uuid, b"").ljust(128, b"\0")
        if dm.HEADER_SIZE + len(out) > size:
            struct.pack_into("=I", view, 28, flags | dm.Flag.BUFFER_FULL)
            return 0
        if out or count:
            view[dm.HEADER_SIZE:dm.HEADER_SIZE + len(out)] = out
            struct.pack_into("=III", view, 12, dm.HEADER_SIZE + len(out), dm.HEADER_SIZE,
                             count)
        return 0

    def specs(self):
        out = b""
        for t in self.table:
            body = t.params.encode() + b"\0"
            size = 40 + len(body) + (-(40 + len(body)) % 8)
            out += struct.pack("=QQiI16s", t.start, t.length, 0, len(out) + size,
                               t.type.encode()) + body.ljust(size - 40, b"\0")
        return out, len(self.table)

    def name_list(self):
        out = b""
        for i, (name, uuid) in enumerate(self.devices):
            entry = name.encode() + b"\0"
            entry += b"\0" * (-(12 + len(entry)) % 8)
            entry += struct.pack("=II", 0, 1) + uuid.encode() + b"\0"
            entry += b"\0" * (-(12 + len(entry)) % 8)
            nxt = 0 if i == len(self.devices) - 1 else 12 + len(entry)
            out += struct.pack("=QI", (253 << 8) | i, nxt) + entry
        return out

    def flags_of(self, cmd):
        return [f for c, f, *_ in self.requests if c == cmd]


@pytest.fixture(name="fake_mapper")
def fake_mapper_fixture(monkeypatch):
    """A DeviceMapper whose ioctls go to a FakeKernel through the seam,
    ``loopcore._c.lib`` (no device-mapper here)."""
    made = []
    real = dm.DeviceMapper

    def make(kernel: FakeKernel, **kwargs) -> dm.DeviceMapper:
        monkeypatch.setattr(_c, "lib", kernel)
        kwargs.setdefault("manage_nodes", False)
        m = real(**kwargs)
        made.append(m)
        return m
    yield make
    for m in made:
        m.close()


# Imported by its fixture name where a module's tests take no parameter of that name.
fake_mapper = fake_mapper_fixture
