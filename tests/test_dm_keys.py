"""Keys in tables: masked like ``dmsetup table`` unless asked for, sent
and read with SECURE_DATA, loopcore's buffers wiped, never in an error
message or the debug trace."""
from __future__ import annotations

import errno
import logging

import pytest

from loopcore import _c, dm
from loopcore.dm import lifecycle as dm_lifecycle

from dmfake import KEY, FakeKernel, fake_mapper_fixture  # noqa: F401 - the fixture

# --- keys: masked like dmsetup table, unless showkeys ---------------------------------

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


def test_table_errors_do_not_echo_keys():
    for bad in (f"O 8 crypt aes-xts-plain64 {KEY} 0 7:0 0",
                f"0 8x crypt aes-xts-plain64 {KEY} 0 7:0 0"):
        with pytest.raises(ValueError) as exc:
            dm.Table.parse(bad)
        assert KEY not in str(exc.value)
    with pytest.raises(ValueError) as exc:
        dm.Target(0, 8, "crypt", f"aes {KEY}\n 0 7:0 0")
    assert KEY not in str(exc.value)


# --- the debug trace ----------------------------------------------------------------

def test_debug_trace_names_commands_not_keys(fake_mapper, caplog, monkeypatch):
    monkeypatch.setattr(dm_lifecycle.time, "sleep", lambda s: None)
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
