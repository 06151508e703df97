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
    assert dm.validate_name("with space") == b"with space"
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
