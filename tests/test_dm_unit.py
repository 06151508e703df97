"""loopcore.dm's pure-Python parts: tables, validation, buffer parsing,
and its policy (retries, buffer growth, undo, flags, errors) against a fake
``loopcore._c.lib``.  No device-mapper needed (the real-kernel tests are
in tests/vm)."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import struct
import subprocess

import pytest

from loopcore import _c, dm, errors
from loopcore.cli import dm as dm_cli
from loopcore.dm import client as dm_client
from loopcore.dm import ioctl as dm_ioctl
from loopcore.dm import records as dm_records
from loopcore.dm import table as dm_table


def test_target_str_is_dmsetup_syntax():
    assert str(dm.Target(0, 2048, "linear", "7:0 16")) == "0 2048 linear 7:0 16"
    # dmsetup prints a space after the type even with no parameters
    assert str(dm.zero(0, 8)) == "0 8 zero "


def test_table_round_trip():
    table = dm.Table([dm.linear(0, 100, "/dev/loop0", 8), dm.zero(100, 28),
                      dm.striped(128, 64, 8, [("/dev/loop1", 0), 1793]), dm.error(192, 8),
                      dm.Target(200, 8, "crypt", r"aes-xts-plain64 :64:logon:k 0 7:0 0")])
    text = str(table)
    assert dm.Table.parse(text) == table
    assert dm.Table.parse(text + "\n") == table
    assert table.size == 208
    assert text.splitlines()[2] == "128 64 striped 2 8 /dev/loop1 0 7:1 0"


def test_parse_like_dmsetup():
    text = "  # comment\n\n0 8   zero   \n8 8 linear  7:0   0  # trailing\n"
    assert dm.Table.parse(text) == dm.Table([dm.Target(0, 8, "zero"),
                                             dm.Target(8, 8, "linear", "7:0   0")])
    for bad in ("0 zero", "x 8 zero", "0 8"):
        with pytest.raises(ValueError):
            dm.Table.parse(bad)


@pytest.mark.parametrize("name", ["", "a/b", "control", ".", "..", "x" * 128, "a\0b"])
def test_bad_names(name):
    with pytest.raises(ValueError):
        dm.validate_name(name)


def test_good_names_and_uuids():
    assert dm.validate_name("x" * 127) == b"x" * 127
    assert dm.validate_name("with space") == b"with\\x20space"  # mangled, as dmsetup stores it
    assert dm.validate_uuid("u" * 128) == b"u" * 128
    for bad in ("", "u" * 129, "a\0"):
        with pytest.raises(ValueError):
            dm.validate_uuid(bad)
    with pytest.raises(TypeError):
        dm.validate_name(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [(-1, 8, "zero"), (0, -1, "zero"), (0, 8, ""),
                                  (0, 8, "a b"), (0, 8, "x" * 16), (0, 8, "zero", "a\nb"),
                                  (0, 8, "zero", "a\0b"), (0.5, 8, "zero")])
def test_bad_targets(args):
    with pytest.raises((ValueError, TypeError)):
        dm.Target(*args)


def test_device_arg():
    class Dev:
        devnum = (7 << 8) | 3
    assert dm.device_arg(Dev()) == "7:3"
    assert dm.device_arg(__import__("os").makedev(259, 300)) == "259:300"
    assert dm.device_arg("/dev/loop0") == "/dev/loop0"
    with pytest.raises(ValueError):
        dm.device_arg("/tmp/a b")
    with pytest.raises(TypeError):
        dm.device_arg(3.0)


def test_striped_checks():
    with pytest.raises(ValueError):
        dm.striped(0, 64, 0, ["/dev/loop0"])        # the kernel's rule: a chunk of >= 1 sector
    with pytest.raises(ValueError):
        dm.striped(0, 64, 3, ["/dev/loop0"])        # 64 is not a whole number of chunks
    assert str(dm.striped(0, 66, 3, ["/dev/a", "/dev/b"])) == \
        "0 66 striped 2 3 /dev/a 0 /dev/b 0"        # as dm.StripedParams(3, ...) takes it
    with pytest.raises(ValueError):
        dm.striped(0, 24, 8, ["/dev/a", "/dev/b"])  # 3 chunks over 2 stripes
    with pytest.raises(ValueError):
        dm.striped(0, 64, 8, [])


def test_table_payload_layout_and_escaping():
    payload, count = dm_table.pack_targets([dm.Target(0, 8, "zero"),
                                            dm.Target(8, 16, "linear", "a\\b 0")])
    assert count == 2
    start, length, status, nxt, ttype = struct.unpack_from("=QQiI16s", payload, 0)
    assert (start, length, status, nxt) == (0, 8, 0, 48)
    assert ttype.rstrip(b"\0") == b"zero"
    assert nxt % 8 == 0
    start, length, _s, nxt2, ttype = struct.unpack_from("=QQiI16s", payload, nxt)
    assert (start, length, ttype.rstrip(b"\0")) == (8, 16, b"linear")
    params = payload[nxt + 40:].split(b"\0")[0]
    assert params == b"a\\\\b 0"  # backslashes doubled, as libdevmapper does
    assert len(payload) % 8 == 0
    with pytest.raises(ValueError):
        dm_table.pack_targets([])


def test_parse_status_specs():
    # kernel output: next offsets relative to the payload start
    def spec(start, length, ttype, params, at):
        body = params.encode() + b"\0"
        size = 40 + len(body)
        size += -size % 8
        return struct.pack("=QQiI16s", start, length, 0, at + size, ttype.encode()) \
            + body.ljust(size - 40, b"\0")
    first = spec(0, 8, "zero", "", 0)
    second = spec(8, 8, "linear", "7:0 0", len(first))
    assert dm_table.unpack_specs(first + second, 2) == [(0, 8, "zero", ""),
                                                        (8, 8, "linear", "7:0 0")]


def test_parse_versions():
    def entry(name, ver, last=False):
        body = struct.pack("=I3I", 0, *ver) + name.encode() + b"\0"
        body += b"\0" * (-len(body) % 8)
        return body if last else struct.pack("=I", len(body)) + body[4:]
    data = entry("linear", (1, 4, 0)) + entry("zero", (1, 2, 0), last=True)
    versions = dm_records.parse_versions(data)
    assert [str(v) for v in versions] == ["linear           v1.4.0", "zero             v1.2.0"]


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


def test_cli_parser_contract():
    parser = argparse.ArgumentParser(prog="loopcore")
    subparsers = parser.add_subparsers(dest="command")
    dm_cli.add_parser(subparsers)
    for argv in (["dm", "ls", "--json"], ["dm", "create", "x", "--table", "0 8 zero"],
                 ["dm", "remove", "--deferred", "x"], ["dm", "rename", "x", "--setuuid", "u"],
                 ["dm", "suspend", "--noflush", "x"], ["dm", "message", "x", "0", "@a", "b"],
                 ["dm", "wait", "x", "3"], ["dm", "targets"], ["dm", "info"],
                 ["dm", "table", "--inactive", "x"], ["dm", "status", "x"],
                 ["dm", "deps", "-o", "blkdevname", "x"], ["dm", "load", "x", "t.txt"],
                 ["dm", "clear", "x"], ["dm", "resume", "x"]):
        args = parser.parse_args(argv)
        assert callable(args.func), argv
    # [NAME] SECTOR MESSAGE: the sector is checked after parsing (-u/-j/-m
    # may stand for the name), still a usage error before device-mapper
    from loopcore import cli
    assert cli.main(["dm", "message", "x", "-1", "m"]) == cli.EXIT_USAGE


def test_cli_bad_name_before_control(capsys):
    """Name errors come first, even where device-mapper is missing (this host)."""
    from loopcore import cli
    assert cli.main(["dm", "info", "a/b"]) == cli.EXIT_USAGE  # a usage error, as in `loopcore`
    err = capsys.readouterr().err
    assert err.startswith("loopcore: ") and "'/'" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["remove"], "no device specified"),
    (["remove", "--all", "x"], "remove --all takes no device names"),
    (["rename", "x"], "no new name given"),
    (["rename", "x", "y", "--setuuid", "u"], "give a new name or --setuuid, not both"),
    (["rename", "x", "--setuuid", ""], "uuid is empty"),
    (["create", "x", "--notable", "-u", ""], "uuid is empty"),
])
def test_cli_argument_errors_before_control(monkeypatch, capsys, argv, message):
    """Bad argument combinations fail before /dev/mapper/control is opened,
    with or without device-mapper (or the right to use it)."""
    from loopcore import cli

    def opened() -> None:
        raise AssertionError("/dev/mapper/control opened before the arguments were checked")
    monkeypatch.setattr(dm, "DeviceMapper", opened)
    assert cli.main(["dm", *argv]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == f"loopcore: {message} (see 'loopcore dm {argv[0]} --help')\n"


# --- keys: masked like dmsetup table, unless showkeys ---------------------------------

KEY = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"


@pytest.mark.parametrize("line, masked", [
    # crypt: the second parameter is the key
    (f"0 8 crypt aes-xts-plain64 {KEY} 0 7:0 0",
     f"0 8 crypt aes-xts-plain64 {'0' * 64} 0 7:0 0"),
    (f"0 8 crypt aes-cbc-essiv:sha256 {KEY[:32]} 16 /dev/loop0 8 1 allow_discards",
     f"0 8 crypt aes-cbc-essiv:sha256 {'0' * 32} 16 /dev/loop0 8 1 allow_discards"),
    ("0 8 crypt cipher_null-ecb - 0 7:0 0", "0 8 crypt cipher_null-ecb 0 0 7:0 0"),
    # kernel keyring references start with ':' and stay
    ("0 8 crypt aes-xts-plain64 :64:logon:cryptsetup:key 0 7:0 0",
     "0 8 crypt aes-xts-plain64 :64:logon:cryptsetup:key 0 7:0 0"),
    ("0 8 crypt capi:xts(aes)-plain64 :32:user:k 0 7:0 0",
     "0 8 crypt capi:xts(aes)-plain64 :32:user:k 0 7:0 0"),
    ("0 8 crypt aes", "0 8 crypt aes"),  # no key field at all
    # integrity: keys in internal_hash:, journal_crypt:, journal_mac: options
    ("0 8 integrity 7:0 0 32 J 2 internal_hash:hmac(sha256):abcd journal_sectors:88",
     "0 8 integrity 7:0 0 32 J 2 internal_hash:hmac(sha256):0000 journal_sectors:88"),
    ("0 8 integrity 7:0 0 4 J 1 internal_hash:crc32c",  # no key: nothing to hide
     "0 8 integrity 7:0 0 4 J 1 internal_hash:crc32c"),
    ("0 8 integrity 7:0 0 4 J 2 internal_hash:crc32c journal_mac:hmac(sha256):beef",
     "0 8 integrity 7:0 0 4 J 2 internal_hash:crc32c journal_mac:hmac(sha256):0000"),
    ("0 8 integrity 7:0 0 32 J 3 journal_crypt:ctr(aes):0123456789abcdef "
     "internal_hash:hmac(sha256):aa journal_mac:hmac(sha256):bbbbbb",
     "0 8 integrity 7:0 0 32 J 3 journal_crypt:ctr(aes):0000000000000000 "
     "internal_hash:hmac(sha256):00 journal_mac:hmac(sha256):000000"),
    # other targets are never touched, whatever their parameters look like
    (f"0 8 linear 7:0 0 {KEY}", f"0 8 linear 7:0 0 {KEY}"),
    ("0 8 verity internal_hash:sha256:abcd", "0 8 verity internal_hash:sha256:abcd"),
    ("0 8 zero", "0 8 zero"),
])
def test_mask_keys_like_dmsetup(line, masked):
    table = dm.Table.parse(line)
    assert dm.mask_keys(table) == dm.Table.parse(masked)
    assert isinstance(dm.mask_keys(table), dm.Table)
    assert table == dm.Table.parse(line)  # the input is not changed


def test_mask_keys_only_the_first_of_each_integrity_option():
    # dmsetup hides the first occurrence of each option name, nothing more
    t = dm.Target(0, 8, "integrity", "7:0 0 32 J 2 internal_hash:a:11 internal_hash:b:22")
    assert dm.mask_keys([t])[0].params == "7:0 0 32 J 2 internal_hash:a:00 internal_hash:b:22"


def test_mask_keys_multi_target_table():
    table = dm.Table([dm.linear(0, 8, "/dev/loop0"),
                      dm.Target(8, 8, "crypt", f"aes-xts-plain64 {KEY} 0 7:1 0"),
                      dm.zero(16, 8)])
    masked = dm.mask_keys(table)
    assert masked[0] == table[0] and masked[2] == table[2]
    assert KEY not in str(masked) and "0" * 64 in str(masked)


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


@pytest.fixture
def fake_mapper(monkeypatch):
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


def test_table_masks_keys_unless_showkeys(fake_mapper):
    kernel = FakeKernel(f"0 8 crypt aes-xts-plain64 {KEY} 0 7:0 0")
    m = fake_mapper(kernel)
    assert str(m.table("c")) == f"0 8 crypt aes-xts-plain64 {'0' * 64} 0 7:0 0"
    assert str(m.table("c", showkeys=True)) == f"0 8 crypt aes-xts-plain64 {KEY} 0 7:0 0"
    assert str(m.table("c", inactive=True)).count("0" * 64) == 1
    # table reads ask the kernel to wipe its copy, and the reply buffer is wiped here
    for flags in kernel.flags_of(dm.Cmd.TABLE_STATUS):
        assert flags & dm.Flag.SECURE_DATA and flags & dm.Flag.STATUS_TABLE
    assert all(not any(bytes(_c.ffi.buffer(b))) for b, (c, *_) in zip(kernel.buffers,
                                                              kernel.requests)
               if c == dm.Cmd.TABLE_STATUS)
    # status has no keys: no secure flag needed
    m.status("c")
    assert not kernel.flags_of(dm.Cmd.TABLE_STATUS)[-1] & dm.Flag.STATUS_TABLE


@pytest.mark.parametrize("table, secure", [
    (f"0 8 crypt aes-xts-plain64 {KEY} 0 7:0 0", True),
    ("0 8 integrity 7:0 0 32 J 1 internal_hash:hmac(sha256):abcd", True),
    ("0 8 crypt aes-xts-plain64 :64:logon:k 0 7:0 0", False),
    ("0 8 integrity 7:0 0 4 J 1 internal_hash:crc32c", False),
    ("0 8 linear 7:0 0", False),
])
def test_loading_keys_is_secure_and_wiped(fake_mapper, table, secure):
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    for call in (lambda: m.load("c", table), lambda: m.create("d", table=table)):
        before = len(kernel.requests)
        call()
        loads = [(i, f) for i, (c, f, *_) in enumerate(kernel.requests)
                 if c == dm.Cmd.TABLE_LOAD and i >= before]
        assert len(loads) == 1
        i, flags = loads[0]
        assert bool(flags & dm.Flag.SECURE_DATA) is secure
        # the key went to the kernel ...
        assert dm.Table.parse(table)[0].params.encode() in kernel.requests[i][4]
        # ... and loopcore's buffer holds nothing afterwards when it was secret
        assert (not any(bytes(_c.ffi.buffer(kernel.buffers[i])))) is secure


def test_cli_table_masks_keys_unless_showkeys(fake_mapper, monkeypatch, capsys):
    from loopcore import cli
    kernel = FakeKernel(f"0 8 crypt aes-xts-plain64 {KEY} 0 7:0 0")
    monkeypatch.setattr(dm, "DeviceMapper", lambda **kw: fake_mapper(kernel, **kw))
    masked = f"0 8 crypt aes-xts-plain64 {'0' * 64} 0 7:0 0\n"
    assert cli.main(["dm", "table", "c"]) == 0
    assert capsys.readouterr().out == masked
    assert cli.main(["dm", "table", "--showkeys", "c"]) == 0
    assert capsys.readouterr().out == masked.replace("0" * 64, KEY)
    assert cli.main(["dm", "table", "--json", "c"]) == 0
    out = capsys.readouterr().out
    assert KEY not in out and "0" * 64 in out


# --- names: dmsetup's mangling ("--manglename auto") ---------------------------------

@pytest.mark.parametrize("typed, kernel", [
    ("plain-name_1.2:3=4@5+6#7", "plain-name_1.2:3=4@5+6#7"),   # the whitelist
    ("a b", "a\\x20b"),
    ("line\nbreak", "line\\x0abreak"),
    ("tab\there", "tab\\x09here"),
    ("café", "caf\\xc3\\xa9"),          # UTF-8, byte by byte
    ("back\\slash", "back\\x5cslash"),
    ("x*y?z", "x\\x2ay\\x3fz"),
    ("a\\x20b", "a\\x20b"),              # already mangled: kept
    ("\\x20\\xc3\\xa9", "\\x20\\xc3\\xa9"),
    ("a\\xzzb", "a\\xzzb"),              # kept as is, like libdm (4 characters copied)
])
def test_mangle_auto(typed, kernel):
    assert dm.mangle(typed) == kernel
    assert dm.mangle(typed, "auto") == kernel


@pytest.mark.parametrize("typed", [
    "a b\\x20",        # unmangled, then mangled: mixed
    "a\\x20b c",       # mangled, then unmangled: mixed
    "a\\x2",           # a \x sequence cut short
    "a\\x5cx20b",      # mangled twice
])
def test_mangle_auto_refuses_what_dmsetup_refuses(typed):
    with pytest.raises(ValueError):
        dm.mangle(typed)
    with pytest.raises(ValueError):
        dm.validate_name(typed)


def test_mangle_hex_and_none():
    assert dm.mangle("a\\x20b", "hex") == "a\\x5cx20b"  # hex mangles every backslash
    assert dm.mangle("a b\\x20", "hex") == "a\\x20b\\x5cx20"
    assert dm.mangle("a\\x5cx20b", "hex") == "a\\x5cx5cx20b"
    assert dm.mangle("a b", "none") == "a b"
    assert dm.unmangle("a\\x20b", "none") == "a\\x20b"
    with pytest.raises(ValueError):
        dm.mangle("a", "sometimes")


@pytest.mark.parametrize("kernel, shown", [
    ("a\\x20b", "a b"),
    ("caf\\xc3\\xa9", "café"),
    ("A\\x2Fb", "A/b"),                  # upper-case hex too
    ("plain", "plain"),
    ("a b", "a b"),                      # not mangled at all (raw): shown as stored
    ("raw name\\x20", "raw name\\x20"),
    ("a\\xzz", "a\\xzz"),                # not a hex sequence: kept
    ("nul\\x00", "nul\\x00"),            # a name cannot hold NUL: kept
])
def test_unmangle(kernel, shown):
    assert dm.unmangle(kernel) == shown


def test_mangle_round_trips():
    names = ["a b", "line\nbreak", "café", "日本語", "x\\y", "tab\t", "#+-.:=@_",
             "".join(chr(c) for c in range(1, 128) if chr(c) != "/")[:31]]
    names += [f"a{chr(c)}b" for c in range(1, 256) if chr(c) != "/"]
    for name in names:
        kernel = dm.mangle(name)
        assert all(c.isascii() and (c.isalnum() or c in "#+-.:=@_\\") for c in kernel), kernel
        assert dm.unmangle(kernel) == name, (name, kernel)
        assert dm.unmangle(dm.mangle(name, "hex"), "hex") == name


def test_validate_mangles_and_limits_the_mangled_length():
    assert dm.validate_name("with space") == b"with\\x20space"
    assert dm.validate_name("with space", "none") == b"with space"
    assert dm.validate_name(" " * 31) == b"\\x20" * 31           # 124 bytes
    with pytest.raises(ValueError, match="too long"):
        dm.validate_name(" " * 32)                               # 128 bytes mangled
    assert dm.validate_uuid("u v") == b"u\\x20v"
    assert dm.validate_uuid(" " * 32) == b"\\x20" * 32            # 128 bytes
    with pytest.raises(ValueError, match="too long"):
        dm.validate_uuid(" " * 32 + "x")
    with pytest.raises(ValueError):
        dm.validate_uuid("a b\\x20")
    # a name the kernel already holds is used as it is
    assert dm.validate_name(dm.KernelName("a b")) == b"a b"
    assert dm.validate_name(dm.KernelName("a\\x5cx20")) == b"a\\x5cx20"


def test_names_are_mangled_on_every_path(fake_mapper):
    kernel = FakeKernel("0 8 zero")
    m = fake_mapper(kernel)
    m.create("a b", uuid="u é", table="0 8 zero")
    m.info("a b")
    m.table("a b")
    m.status("a b")
    m.deps("a b")
    m.suspend("a b")
    m.resume("a b")
    m.message("a b", 0, "@cancel_deferred_remove")
    m.rename("a b", "c\nd")
    m.set_uuid("c\nd", "new uuid")
    m.remove("c\nd")
    names = {r[2] for r in kernel.requests if r[0] != dm.Cmd.VERSION}
    assert names == {b"a\\x20b", b"c\\x0ad"}
    creates = [r for r in kernel.requests if r[0] == dm.Cmd.DEV_CREATE]
    assert creates[0][3] == b"u\\x20\\xc3\\xa9"
    renames = [r[4].rstrip(b"\0") for r in kernel.requests if r[0] == dm.Cmd.DEV_RENAME]
    assert renames == [b"c\\x0ad", b"new\\x20uuid"]


def test_other_mangling_modes_reach_the_kernel(fake_mapper):
    kernel = FakeKernel()
    fake_mapper(kernel, name_mangling="none").info("a b")
    fake_mapper(kernel, name_mangling="hex").info("a\\x20b")
    fake_mapper(kernel).info(dm.KernelName("raw name"))
    assert [r[2] for r in kernel.requests if r[0] == dm.Cmd.DEV_STATUS] == \
        [b"a b", b"a\\x5cx20b", b"raw name"]
    with pytest.raises(ValueError):
        dm.DeviceMapper(name_mangling="sometimes")


def test_list_devices_unmangles(fake_mapper):
    kernel = FakeKernel(devices=[("a\\x20b", "u\\x20v"), ("plain", "LVM-x"),
                                 ("raw name", ""), ("caf\\xc3\\xa9", "")])
    m = fake_mapper(kernel)
    entries = m.list_devices()
    assert [e.name for e in entries] == ["a b", "plain", "raw name", "café"]
    assert [e.kernel_name for e in entries] == ["a\\x20b", "plain", "raw name",
                                                "caf\\xc3\\xa9"]
    assert entries[0].uuid == "u v"
    assert all(isinstance(e.kernel_name, dm.KernelName) for e in entries)
    raw = fake_mapper(kernel, name_mangling="none").list_devices()
    assert [e.name for e in raw] == ["a\\x20b", "plain", "raw name", "caf\\xc3\\xa9"]


def test_info_reports_the_typed_name_and_the_node(fake_mapper):
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    info = m.info("a b")   # the fake echoes the request header back
    assert info.name == "a b" and info.kernel_name == "a\\x20b"
    assert info.path == "/dev/mapper/a\\x20b"     # udev's and libdm's node name


def test_cli_ls_shows_typed_names(fake_mapper, monkeypatch, capsys):
    from loopcore import cli
    kernel = FakeKernel(devices=[("a\\x20b", ""), ("caf\\xc3\\xa9", "")])
    monkeypatch.setattr(dm, "DeviceMapper", lambda **kw: fake_mapper(kernel, **kw))
    assert cli.main(["dm", "ls"]) == 0
    assert capsys.readouterr().out == "a b\t(253:0)\ncafé\t(253:1)\n"
    assert cli.main(["dm", "ls", "--manglename", "none"]) == 0
    assert capsys.readouterr().out == "a\\x20b\t(253:0)\ncaf\\xc3\\xa9\t(253:1)\n"
    assert cli.main(["dm", "info", "--manglename", "none", "a b"]) == 0
    assert kernel.requests[-1][2] == b"a b"
    assert cli.main(["dm", "info", "a b"]) == 0
    assert kernel.requests[-1][2] == b"a\\x20b"
    capsys.readouterr()
    assert cli.main(["dm", "info", "a b\\x20"]) == cli.EXIT_USAGE   # refused before any ioctl
    assert "mixed" in capsys.readouterr().err


def test_cli_all_devices_addressed_as_stored(fake_mapper, monkeypatch, capsys):
    """Without names the CLI reaches each listed device by its stored name,
    also one that unmangling and mangling again would not give back."""
    from loopcore import cli
    kernel = FakeKernel("0 8 zero", devices=[("up\\x41", ""), ("raw name", ""), ("a\\x20b", "")])
    monkeypatch.setattr(dm, "DeviceMapper", lambda **kw: fake_mapper(kernel, **kw))
    for command in ("info", "table", "status", "deps"):
        del kernel.requests[:]
        assert cli.main(["dm", command]) == 0
        assert [r[2] for r in kernel.requests if r[0] not in (dm.Cmd.VERSION,
                                                                dm.Cmd.LIST_DEVICES)] \
            == [b"up\\x41", b"raw name", b"a\\x20b"], command
    out = capsys.readouterr().out
    assert "upA: 0 8 zero \n" in out and "a b: 0 8 zero \n" in out


def test_table_errors_do_not_echo_keys():
    for bad in (f"O 8 crypt aes-xts-plain64 {KEY} 0 7:0 0",
                f"0 8x crypt aes-xts-plain64 {KEY} 0 7:0 0"):
        with pytest.raises(ValueError) as exc:
            dm.Table.parse(bad)
        assert KEY not in str(exc.value)
    with pytest.raises(ValueError) as exc:
        dm.Target(0, 8, "crypt", f"aes {KEY}\n 0 7:0 0")
    assert KEY not in str(exc.value)


# --- the structs, checked field by field against <linux/dm-ioctl.h> ---------------------

def _c_program() -> str:
    """A C program printing, for every struct and field of dm_ioctl.LAYOUTS,
    offsetof, sizeof and signedness, and the header's constants."""
    out = ["#include <stddef.h>", "#include <stdio.h>", "#include <linux/dm-ioctl.h>",
           "int main(void) {"]

    def emit(key: str, expr: str, fmt: str = "%zu") -> None:
        out.append(f'    printf("{key} {fmt}\\n", {expr});')

    for sname, fields in dm_ioctl.LAYOUTS.items():
        emit(f"{sname}.sizeof", f"sizeof(struct {sname})")
        emit(f"{sname}.alignof", f"_Alignof(struct {sname})")
        for fname, code in fields:
            member = f"((struct {sname} *)0)->{fname}"
            emit(f"{sname}.{fname}.offset", f"offsetof(struct {sname}, {fname})")
            if code == dm_ioctl.FLEX:
                continue
            emit(f"{sname}.{fname}.size", f"sizeof({member})")
            if code[-1] in "iIqQ":
                element = member + ("[0]" if code[:-1] else "")
                emit(f"{sname}.{fname}.signed", f"(int)((__typeof__({element}))-1 < 0)", "%d")
    for const in ("DM_NAME_LEN", "DM_UUID_LEN", "DM_MAX_TYPE_NAME",
                  "DM_NAME_LIST_FLAG_HAS_UUID", "DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID"):
        emit(const, const, "%d")
    for cmd in dm.Cmd:
        # enum members: only in headers of the interface version that has them
        out.append(f"#if DM_VERSION_MINOR >= {dm_ioctl.COMMANDS[cmd].min_version[1]}")
        emit(f"cmd.{cmd.name}", f"DM_{cmd.name}_CMD", "%d")
        out.append("#endif")
    for flag in dm.Flag:
        macro = "DM_DEFERRED_REMOVE" if flag.name == "DEFERRED_REMOVE" else f"DM_{flag.name}_FLAG"
        out += [f"#ifdef {macro}"]
        emit(f"flag.{flag.name}", macro, "%d")
        out += ["#endif"]
    out += ["    return 0;", "}"]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def kernel_header(tmp_path_factory) -> dict:
    """What the C compiler says about <linux/dm-ioctl.h>: key -> int."""
    work = tmp_path_factory.mktemp("dm_layout")
    (work / "layout.c").write_text(_c_program())
    subprocess.run(["cc", "-std=gnu11", "-Wall", "-Werror", "-o", str(work / "layout"),
                    str(work / "layout.c")], check=True, capture_output=True, text=True)
    out = subprocess.run([str(work / "layout")], check=True, capture_output=True,
                         text=True).stdout
    return {key: int(value) for key, value in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("sname", sorted(dm_ioctl.LAYOUTS))
def test_struct_layout_matches_the_kernel_header(kernel_header, sname):
    fields = dm_ioctl.LAYOUTS[sname]
    packed, offsets = dm_ioctl.layout(sname)
    c = kernel_header
    for i, (fname, code) in enumerate(fields):
        assert offsets[fname] == c[f"{sname}.{fname}.offset"], (sname, fname)
        if code == dm_ioctl.FLEX:
            assert i == len(fields) - 1, f"{sname}.{fname}: a flexible array comes last"
            continue
        assert struct.calcsize("=" + code) == c[f"{sname}.{fname}.size"], (sname, fname)
        if code[-1] in "iIqQ":
            assert int(code[-1].islower()) == c[f"{sname}.{fname}.signed"], (sname, fname)
    # the C struct is the fields plus its tail padding
    align = c[f"{sname}.alignof"]
    assert c[f"{sname}.sizeof"] == packed.size + (-packed.size % align), sname


def test_constants_match_the_kernel_header(kernel_header):
    c = kernel_header
    assert (c["DM_NAME_LEN"], c["DM_UUID_LEN"], c["DM_MAX_TYPE_NAME"]) == \
        (dm.DM_NAME_LEN, dm.DM_UUID_LEN, dm.DM_MAX_TYPE_NAME)
    assert c["DM_NAME_LIST_FLAG_HAS_UUID"] == dm_ioctl.NAME_LIST_HAS_UUID
    assert c["DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID"] == dm_ioctl.NAME_LIST_NO_UUID
    assert dm.HEADER_SIZE == c["dm_ioctl.sizeof"] == 312
    for cmd in dm.Cmd:
        if f"cmd.{cmd.name}" in c:
            assert c[f"cmd.{cmd.name}"] == cmd, cmd
    for flag in dm.Flag:
        if f"flag.{flag.name}" in c:
            assert c[f"flag.{flag.name}"] == flag, flag
    assert "cmd.VERSION" in c and "flag.SECURE_DATA" in c  # the program did look


# --- the command table: valid flags and minimum versions ------------------------------

def test_every_command_has_a_spec():
    assert set(dm_ioctl.COMMANDS) == set(dm.Cmd)
    assert dm_ioctl.COMMANDS[dm.Cmd.GET_TARGET_VERSION].min_version == (4, 41, 0)
    assert dm_ioctl.COMMANDS[dm.Cmd.DEV_ARM_POLL].min_version == (4, 37, 0)


def test_flags_a_command_does_not_take_fail_before_the_ioctl(fake_mapper):
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    del kernel.requests[:]
    for cmd, flags in ((dm.Cmd.DEV_REMOVE, dm.Flag.NOFLUSH),
                       (dm.Cmd.DEV_CREATE, dm.Flag.SUSPEND),
                       (dm.Cmd.TABLE_DEPS, dm.Flag.SECURE_DATA),
                       (dm.Cmd.VERSION, dm.Flag.UUID)):
        with pytest.raises(ValueError, match=f"DM_{cmd.name} does not take") as exc:
            m._channel.call(cmd, name=b"x", flags=flags)
        assert isinstance(exc.value, errors.ValueError)
    with pytest.raises(ValueError):
        m._channel.call(dm.Cmd.DEV_STATUS, name=b"x", secure=True)  # SECURE_DATA
    assert kernel.requests == []


def test_request_version_is_the_commands_minimum(fake_mapper):
    kernel = FakeKernel("0 8 zero")
    m = fake_mapper(kernel)
    m.set_geometry("g", 1, 1, 1, 0)
    m.message("g", 0, "@cancel_deferred_remove")
    m.info("g")
    assert kernel.versions[-3:] == [(4, 6, 0), (4, 2, 0), (4, 0, 0)]


def test_commands_newer_than_the_kernel_fail_before_the_ioctl(fake_mapper):
    kernel = FakeKernel(version=(4, 36, 0))
    m = fake_mapper(kernel)
    with pytest.raises(OSError) as exc:
        m.arm_poll()
    assert exc.value.errno == errno.EOPNOTSUPP and "4.37.0" in str(exc.value)
    assert isinstance(exc.value, errors.DmError)
    assert dm.Cmd.DEV_ARM_POLL not in [r[0] for r in kernel.requests]
    # target_version() uses LIST_VERSIONS instead of GET_TARGET_VERSION (4.41)
    with pytest.raises(OSError) as exc:
        m.target_version("linear")   # the fake lists none
    assert exc.value.errno == errno.EINVAL
    assert [r[0] for r in kernel.requests][-1] == dm.Cmd.LIST_VERSIONS
    with pytest.raises(OSError):
        fake_mapper(FakeKernel(version=(5, 0, 0)))  # not interface 4: EPROTO


# --- policy, through the seam (loopcore._c.lib) -----------------------------------------

def test_remove_retries_ebusy(fake_mapper, monkeypatch):
    sleeps = []
    monkeypatch.setattr(dm_client.time, "sleep", sleeps.append)
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


# --- addressing by uuid ----------------------------------------------------------------

def test_devices_found_by_uuid(fake_mapper):
    kernel = FakeKernel("0 8 zero")
    kernel.names[b"MY\\x20uuid"] = b"the-name"
    m = fake_mapper(kernel)
    del kernel.requests[:]
    by_uuid = dm.DevId.uuid("MY uuid")
    assert isinstance(by_uuid, dm.DmUuid) and by_uuid.raw == b"MY\\x20uuid"
    assert m.info(by_uuid).name == "the-name"
    m.status(by_uuid)
    m.table(by_uuid)
    m.suspend(by_uuid)
    m.remove(by_uuid)
    assert {(r[2], r[3]) for r in kernel.requests} == {(b"", b"MY\\x20uuid")}
    # rename finds devices by name only: the name is asked first
    del kernel.requests[:]
    m.rename(by_uuid, "new")
    assert [(r[0], r[2], r[3]) for r in kernel.requests] == [
        (dm.Cmd.DEV_STATUS, b"", b"MY\\x20uuid"), (dm.Cmd.DEV_RENAME, b"the-name", b"")]
    # a plain str, a DmName and DevId.name are names
    del kernel.requests[:]
    m.info("x y")
    m.info(dm.DmName("x y"))
    m.info(dm.DevId.name("x y"))
    assert [(r[2], r[3]) for r in kernel.requests] == [(b"x\\x20y", b"")] * 3
    # errors name the uuid
    kernel.fail[dm.Cmd.DEV_STATUS] = [-errno.ENXIO]
    with pytest.raises(OSError) as exc:
        m.info(by_uuid)
    assert exc.value.filename == "uuid MY uuid"
    with pytest.raises(TypeError):
        m.create(by_uuid)
    with pytest.raises(TypeError):
        dm.DevId()


def test_names_are_checked_once_when_made():
    name = dm.DmName("a b")
    assert name == "a b" and name.raw == b"a\\x20b" and name.kernel == "a\\x20b"
    assert isinstance(name.kernel, dm.KernelName)
    assert dm.DmName("a\\x20b", "hex").raw == b"a\\x5cx20b"
    # made with its own mode, it keeps it whatever the client's mode
    assert dm.validate_name(name, "none") == b"a\\x20b"
    assert dm.validate_name(dm.KernelName("a b"), "auto") == b"a b"
    assert dm.DmUuid("u v").raw == b"u\\x20v"
    for bad in ("", "a/b", "control", "x" * 128, "a b\\x20"):
        with pytest.raises(ValueError):
            dm.DmName(bad)
    with pytest.raises(TypeError):
        dm.DmName(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        dm.DmUuid("")


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


# --- the debug trace ----------------------------------------------------------------

def test_debug_trace_names_commands_not_keys(fake_mapper, caplog, monkeypatch):
    monkeypatch.setattr(dm_client.time, "sleep", lambda s: None)
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    kernel.fail[dm.Cmd.DEV_REMOVE] = [-errno.EBUSY]
    with caplog.at_level(logging.DEBUG, logger="loopcore.dm"):
        m.create("c", table=f"0 8 crypt aes-xts-plain64 {KEY} 0 7:0 0")
        m.remove("c")
        m.list_devices()
    text = caplog.text
    for wanted in ("DM_DEV_CREATE c", "DM_TABLE_LOAD c", "SECURE_DATA", "DM_DEV_SUSPEND c",
                   "EBUSY, retry 1 of 25"):
        assert wanted in text, wanted
    assert KEY not in text
