"""Tables on the host: dmsetup's text form, target checks, and the wire
form (``dm_target_spec`` records) a table goes to and comes back from the
kernel in."""
from __future__ import annotations

import struct

import pytest

from loopcore import dm
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
