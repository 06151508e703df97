"""loopcore.dm's pure-Python parts: tables, validation, buffer parsing.
No device-mapper needed (the real-kernel tests are in tests/vm)."""
from __future__ import annotations

import argparse
import struct

import pytest

from loopcore import dm, dm_cli


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
        dm.striped(0, 64, 6, ["/dev/loop0"])        # not a power of two
    with pytest.raises(ValueError):
        dm.striped(0, 24, 8, ["/dev/a", "/dev/b"])  # 3 chunks over 2 stripes
    with pytest.raises(ValueError):
        dm.striped(0, 64, 8, [])


def test_table_payload_layout_and_escaping():
    payload, count = dm._table_payload([dm.Target(0, 8, "zero"),
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
        dm._table_payload([])


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
    table = dm._parse_specs(first + second, 2)
    assert table == dm.Table([dm.Target(0, 8, "zero"), dm.Target(8, 8, "linear", "7:0 0")])


def test_parse_versions():
    def entry(name, ver, last=False):
        body = struct.pack("=I3I", 0, *ver) + name.encode() + b"\0"
        body += b"\0" * (-len(body) % 8)
        return body if last else struct.pack("=I", len(body)) + body[4:]
    data = entry("linear", (1, 4, 0)) + entry("zero", (1, 2, 0), last=True)
    versions = dm._parse_versions(data)
    assert [str(v) for v in versions] == ["linear           v1.4.0", "zero             v1.2.0"]


def test_validation_before_any_ioctl():
    """Bad names fail before the control node is even needed."""
    m = dm.DeviceMapper.__new__(dm.DeviceMapper)
    m._fd = -1
    for call in (lambda: m.info("a/b"), lambda: m.create("control"),
                 lambda: m.rename("ok", ".."), lambda: m.set_uuid("ok", ""),
                 lambda: m.create("ok", table=[])):
        with pytest.raises(ValueError):
            call()


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
    with pytest.raises(SystemExit):
        parser.parse_args(["dm", "message", "x", "-1", "m"])


def test_cli_bad_name_before_control(capsys):
    """Name errors come first, even where device-mapper is missing (this host)."""
    from loopcore import cli
    assert cli.main(["dm", "info", "a/b"]) == 1
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
    assert cli.main(["dm", *argv]) == 1
    assert capsys.readouterr().err == f"loopcore: {message}\n"


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
    """Stands in for lc_dm_ioctl: records each request, answers TABLE_STATUS
    with ``table`` and LIST_DEVICES with ``devices`` (kernel names)."""

    def __init__(self, table: str = "", devices=()) -> None:
        self.table = dm.Table.parse(table) if table else dm.Table()
        self.devices = list(devices)
        self.requests = []   # (cmd, flags, name, uuid, payload bytes)
        self.buffers = []    # the ioctl buffers, to look at after the call

    def lc_dm_ioctl(self, fd, cmd, cbuf):
        view = dm.ffi.buffer(cbuf)
        (_v0, _v1, _v2, size, start, _tc, _oc, flags, _ev, _pad, _dev, name, uuid,
         _d) = dm._HEADER.unpack_from(view, 0)
        self.requests.append((cmd, flags, name.rstrip(b"\0"), uuid.rstrip(b"\0"),
                              bytes(view[start:size])))
        self.buffers.append(cbuf)
        out, count = b"", 0
        if cmd == dm.Cmd.TABLE_STATUS:
            out, count = self.specs()
        elif cmd == dm.Cmd.LIST_DEVICES:
            out = self.name_list()
        elif cmd == dm.Cmd.VERSION:
            view[0:12] = struct.pack("=3I", 4, 47, 0)
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
    """A DeviceMapper whose ioctls go to a FakeKernel (no device-mapper here)."""
    made = []
    real = dm.DeviceMapper

    def make(kernel: FakeKernel, **kwargs) -> dm.DeviceMapper:
        monkeypatch.setattr(dm, "lib", kernel)
        monkeypatch.setattr(dm.os, "close", lambda fd: None)  # the fake fd
        kernel.lc_dm_open = lambda path: 1000
        m = real(manage_nodes=False, **kwargs)
        made.append(m)
        return m
    yield make
    for m in made:
        m._fd = -1


def test_table_masks_keys_unless_showkeys(fake_mapper):
    kernel = FakeKernel(f"0 8 crypt aes-xts-plain64 {KEY} 0 7:0 0")
    m = fake_mapper(kernel)
    assert str(m.table("c")) == f"0 8 crypt aes-xts-plain64 {'0' * 64} 0 7:0 0"
    assert str(m.table("c", showkeys=True)) == f"0 8 crypt aes-xts-plain64 {KEY} 0 7:0 0"
    assert str(m.table("c", inactive=True)).count("0" * 64) == 1
    # table reads ask the kernel to wipe its copy, and the reply buffer is wiped here
    for flags in kernel.flags_of(dm.Cmd.TABLE_STATUS):
        assert flags & dm.Flag.SECURE_DATA and flags & dm.Flag.STATUS_TABLE
    assert all(not any(bytes(dm.ffi.buffer(b))) for b, (c, *_) in zip(kernel.buffers,
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
        assert (not any(bytes(dm.ffi.buffer(kernel.buffers[i])))) is secure


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
    assert cli.main(["dm", "info", "a b\\x20"]) == 1   # refused before any ioctl
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
