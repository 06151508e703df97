"""Typed target parameters and status (loopcore.dm.targets),
without device-mapper: format and parse round trips, validation before any
ioctl, and status lines the Debian 6.1 kernel wrote (recorded in the qemu
guest with dmsetup; the VM tests compare against the kernel live)."""
from __future__ import annotations

import dataclasses
import os
from typing import Annotated, Optional

import pytest

from loopcore import dm, errors
from loopcore.dm import thin_messages
from loopcore.dm.targets import base
from loopcore.dm.targets.declaration import Opt
from loopcore.dm.targets.kinds import DEVICE, FLAG, SECTORS, Uint
from loopcore.dm.targets.status import TargetStatus

KEY = "0000000000000000000000000000000000000000000000000000000000003039"

# "start length type params" lines as `dmsetup table` printed them (Linux
# 6.1); crypt keys masked, as dmsetup and DeviceMapper.table() show them.
KERNEL_TABLES = [
    "0 2048 linear 7:0 8",
    "0 4096 striped 2 128 7:0 0 7:1 64",
    "0 1000 zero ",
    "0 1000 error ",
    "0 2048 crypt aes-xts-plain64 " + "0" * 64 + " 0 7:2 0",
    "0 2048 crypt aes-xts-plain64 " + KEY + " 0 7:2 0",
    "0 2048 crypt capi:cbc(aes)-essiv:sha256 00000000000000000000000000000000 0 7:2 0 "
    "2 submit_from_crypt_cpus no_read_workqueue",
    "0 2048 crypt cipher_null-ecb - 0 7:2 0",
    "0 2048 crypt cipher_null-ecb 0 0 7:2 0",
    "0 2040 crypt aes-xts-plain64 :64:logon:cryptsetup:abc 0 7:2 8 2 allow_discards "
    "sector_size:4096",
    "0 129160 integrity 7:3 0 4 J 5 journal_sectors:880 interleave_sectors:32768 "
    "buffer_sectors:128 journal_watermark:50 commit_time:10000",
    "0 1 integrity 7:3 0 32 D 5 recalculate journal_sectors:968 interleave_sectors:32768 "
    "buffer_sectors:128 internal_hash:crc32c",
    "0 8192 snapshot-origin 7:4",
    "0 8192 snapshot 7:4 7:5 P 16",
    "0 8192 snapshot 7:4 7:1 N 8",
    "0 65536 thin-pool 7:4 7:5 128 32768 0 ",
    "0 65536 thin-pool 7:4 7:5 128 32768 1 no_discard_passdown ",
    "0 40960 thin 254:4 0",
    "0 40960 thin 254:4 1 7:0",
    "0 8192 mirror core 1 1024 2 7:0 0 7:1 0",
    "0 8192 mirror core 2 1024 nosync 2 7:0 0 7:1 0 1 handle_errors",
    "0 8192 mirror disk 3 7:2 1024 sync 3 7:0 0 7:1 8192 7:3 0 2 handle_errors keep_log",
    "0 65536 mirror userspace 4 lct-disk clustered-disk 7:2 1024 2 7:0 0 7:1 0",
    "0 65536 mirror userspace 4 lct-if integrated_flush clustered-core 1024 2 7:0 0 7:1 0",
]


def split(line: str) -> dm.Target:
    start, length, ttype, params = line.split(" ", 3)
    return dm.Target(int(start), int(length), ttype, params)


@pytest.mark.parametrize("line", KERNEL_TABLES)
def test_kernel_table_lines_round_trip(line):
    target = split(line)
    typed = target.parsed()
    assert type(typed) is dm.PARAMS_TYPES[target.type]
    assert str(typed) == target.params              # byte for byte, trailing spaces too
    assert type(typed).parse(str(typed)) == typed
    assert str(typed.target(target.start, target.length)) == line
    assert dm.parse_params(target.type, target.params) == typed


def test_parsed_fields():
    pool = split(KERNEL_TABLES[16]).parsed()
    assert pool == dm.ThinPoolParams("7:4", "7:5", 128, 32768, no_discard_passdown=True)
    thin = split("0 40960 thin 254:4 1 7:0").parsed()
    assert thin == dm.ThinParams("254:4", 1, external_origin="7:0")
    mirror = split(KERNEL_TABLES[21]).parsed()
    assert mirror == dm.MirrorParams((("7:0", 0), ("7:1", 8192), ("7:3", 0)), 1024,
                                     log="disk", log_device="7:2", sync="sync",
                                     handle_errors=True, keep_log=True)
    userspace = split(KERNEL_TABLES[23]).parsed()
    assert isinstance(userspace, dm.MirrorParams)
    assert (userspace.uuid, userspace.integrated_flush, userspace.log_device) == \
        ("lct-if", True, None)
    crypt = split(KERNEL_TABLES[9]).parsed()
    assert isinstance(crypt, dm.CryptParams)
    assert (crypt.key, crypt.allow_discards, crypt.sector_size, crypt.offset) == \
        (":64:logon:cryptsetup:abc", True, 4096, 8)
    integ = split(KERNEL_TABLES[11]).parsed()
    assert isinstance(integ, dm.IntegrityParams)
    assert (integ.mode, integ.recalculate, integ.internal_hash, integ.journal_sectors,
            integ.commit_time) == ("D", True, "crc32c", 968, None)
    snap = split(KERNEL_TABLES[14]).parsed()
    assert snap == dm.SnapshotParams("7:4", "7:1", 8, persistent=False)


def test_builders_are_the_typed_classes():
    a, b = os.makedev(7, 0), os.makedev(7, 1)
    assert dm.linear(0, 8, a, 16).parsed() == dm.LinearParams("7:0", 16)
    assert dm.striped(0, 64, 8, [a, (b, 8)]).parsed() == \
        dm.StripedParams(8, (("7:0", 0), ("7:1", 8)))
    assert dm.zero(0, 8).parsed() == dm.ZeroParams()
    assert dm.error(0, 8).parsed() == dm.ErrorParams()
    assert dm.mirror(0, 2048, [a, b], 64).parsed() == \
        dm.MirrorParams((("7:0", 0), ("7:1", 0)), 64)
    # lists are accepted and stored as tuples
    assert dm.StripedParams(8, [["7:0", 0]]) == dm.StripedParams(8, (("7:0", 0),))  # type: ignore[list-item]


def test_user_built_round_trips():
    cases = [
        dm.CryptParams("aes-xts-plain64", KEY, 16, "/dev/loop0", 0, same_cpu_crypt=True,
                       no_write_workqueue=True, integrity="28:aead", sector_size=4096,
                       iv_large_sectors=True),
        dm.VerityParams(1, "7:0", "7:1", 4096, 4096, 256, 1, "sha256", "ab" * 32, "cd" * 32,
                        mode="restart_on_corruption", ignore_zero_blocks=True,
                        check_at_most_once=True, fec_device="7:2", fec_blocks=300,
                        fec_start=0, fec_roots=2, root_hash_sig_key_desc="key:1"),
        dm.VerityParams(0, "7:0", "7:0", 512, 4096, 8, 2, "sha1", "ef" * 20),
        dm.IntegrityParams("7:3", 8, 16, "B", meta_device="7:4", block_size=4096,
                           allow_discards=True, sectors_per_bit=8192,
                           bitmap_flush_interval=1000, fix_padding=True,
                           internal_hash="hmac(sha256):" + KEY, journal_crypt="ctr(aes):" + KEY,
                           journal_mac="hmac(sha256):" + KEY),
        dm.SnapshotParams("7:4", "7:5", 32, overflow=True, discard_zeroes_cow=True,
                          discard_passdown_origin=True),
        dm.ThinPoolParams("7:4", "7:5", 2097152, 0, skip_block_zeroing=True,
                          ignore_discard=True, read_only=True, error_if_no_space=True),
        dm.MirrorParams((("7:0", 0), ("7:1", 8)), 2, log="userspace", uuid="u",
                        log_device="7:2", sync="nosync", handle_errors=True,
                        integrated_flush=True),
    ]
    for params in cases:
        assert type(params).parse(str(params)) == params, params
        assert dm.parse_params(params.target_type, str(params)) == params
    verity = str(cases[1]).split()
    # the kernel's option order: mode, flags, forward error correction, signature
    assert verity[10:] == ["13", "restart_on_corruption", "ignore_zero_blocks",
                           "check_at_most_once", "use_fec_from_device", "7:2", "fec_blocks",
                           "300", "fec_start", "0", "fec_roots", "2",
                           "root_hash_sig_key_desc", "key:1"]
    assert str(cases[2]).split()[9] == "-"          # no salt


def test_options_in_any_order_are_read():
    # dmsetup users write options in their own order; the kernel's order is written back
    params = dm.CryptParams.parse(f"aes-xts-plain64 {KEY} 0 7:2 0 2 sector_size:4096 "
                                  "allow_discards")
    assert str(params).endswith("0 7:2 0 2 allow_discards sector_size:4096")
    integ = dm.IntegrityParams.parse("7:3 0 4 J 2 internal_hash:crc32c journal_sectors:100")
    assert str(integ) == "7:3 0 4 J 2 journal_sectors:100 internal_hash:crc32c"
    assert dm.SnapshotParams.parse("7:4 7:5 p 8") == dm.SnapshotParams("7:4", "7:5", 8)


def test_keys_stay_hidden():
    crypt = dm.CryptParams("aes-xts-plain64", KEY, 0, "7:0", 0)
    assert KEY not in repr(crypt)
    assert KEY in str(crypt)                        # what gets loaded
    # the table masks it as before; the masked text parses
    masked = dm.mask_keys([crypt.target(0, 8)])[0]
    assert masked.parsed() == dataclasses.replace(crypt, key="0" * 64)
    integ = dm.IntegrityParams("7:3", 0, 32, internal_hash="hmac(sha256):" + KEY)
    assert KEY not in repr(integ)
    assert dm.mask_keys([integ.target(0, 8)])[0].parsed().internal_hash == \
        "hmac(sha256):" + "0" * 64
    # parse errors do not echo a key
    with pytest.raises(errors.DmParseError) as exc:
        dm.CryptParams.parse(f"aes-xts-plain64 {KEY} 0 7:0 0 1 bogus")
    assert KEY not in str(exc.value) and "bogus" in str(exc.value)


@pytest.mark.parametrize("build", [
    lambda: dm.LinearParams("7:0", -1),
    lambda: dm.LinearParams("has space", 0),
    lambda: dm.StripedParams(0, (("7:0", 0),)),
    lambda: dm.StripedParams(8, ()),
    lambda: dm.CryptParams("aes", "xyz", 0, "7:0", 0),
    lambda: dm.CryptParams("aes", KEY, 0, "7:0", 0, sector_size=1000),
    lambda: dm.CryptParams("aes", KEY, 3, "7:0", 0, sector_size=4096),
    lambda: dm.CryptParams("two words", KEY, 0, "7:0", 0),
    lambda: dm.CryptParams("aes", KEY, 0, "7:0", 0, integrity="aead"),
    lambda: dm.VerityParams(2, "7:0", "7:1", 4096, 4096, 1, 0, "sha256", "ab"),
    lambda: dm.VerityParams(1, "7:0", "7:1", 4000, 4096, 1, 0, "sha256", "ab"),
    lambda: dm.VerityParams(1, "7:0", "7:1", 4096, 4096, 1, 0, "sha256", "xyz"),
    lambda: dm.VerityParams(1, "7:0", "7:1", 4096, 4096, 1, 0, "sha256", "ab", mode="loud"),
    lambda: dm.VerityParams(1, "7:0", "7:1", 4096, 4096, 1, 0, "sha256", "ab",
                            fec_device="7:2"),
    lambda: dm.SnapshotParams("7:0", "7:1", 12),
    lambda: dm.SnapshotParams("7:0", "7:1", 8, persistent=False, overflow=True),
    lambda: dm.SnapshotParams("7:0", "7:1", 8, discard_passdown_origin=True),
    lambda: dm.ThinPoolParams("7:0", "7:1", 64, 0),
    lambda: dm.ThinPoolParams("7:0", "7:1", 192, 0),
    lambda: dm.ThinPoolParams("7:0", "7:1", 128, -1),
    lambda: dm.ThinParams("7:0", 1 << 24),
    lambda: dm.MirrorParams((("7:0", 0),), 64),
    lambda: dm.MirrorParams((("7:0", 0), ("7:1", 0)), 1000),
    lambda: dm.MirrorParams((("7:0", 0), ("7:1", 0)), 64, log="disk"),
    lambda: dm.MirrorParams((("7:0", 0), ("7:1", 0)), 64, uuid="u"),
    lambda: dm.MirrorParams((("7:0", 0), ("7:1", 0)), 64, keep_log=True),
    lambda: dm.IntegrityParams("7:0", 0, 4, "X"),
    lambda: dm.IntegrityParams("7:0", 0, 4, block_size=1000),
    lambda: dm.IntegrityParams("7:0", 0, 4, internal_hash="hmac(sha256):zz"),
])
def test_bad_values_are_value_errors(build):
    with pytest.raises(errors.ValueError):
        build()


@pytest.mark.parametrize("build", [
    lambda: dm.LinearParams(1792, 0),                  # a devnum: device_arg() it first
    lambda: dm.LinearParams("7:0", "8"),
    lambda: dm.ThinPoolParams("7:0", "7:1", 128, 0, read_only=1),
    lambda: dm.StripedParams(8, "7:0"),
])
def test_bad_types_are_type_errors(build):
    with pytest.raises(errors.TypeError):
        build()


@pytest.mark.parametrize("ttype, text", [
    ("linear", "7:0"),
    ("linear", "7:0 8 9"),
    ("linear", "7:0 -8"),
    ("striped", "2 8 7:0 0"),
    ("crypt", f"aes {KEY} 0 7:0 0 2 allow_discards"),
    ("thin-pool", "7:4 7:5 128 0 1 zero_new_blocks "),
    ("thin-pool", "7:4 7:5 64 0 0 "),
    ("thin", "254:4 x"),
    ("snapshot", "7:4 7:5 Q 8"),
    ("mirror", "core 1 1024 1 7:0 0"),
    ("mirror", "core 1 1024 2 7:0 0 7:1 0 1 bogus"),
    ("mirror", "fancy 1 1024 2 7:0 0 7:1 0"),
    ("mirror", "userspace 2 u clustered-magic 2 7:0 0 7:1 0"),
    ("integrity", "7:0 0 4 J 1 bogus:1"),
    ("integrity", "7:0 0 4 J 1 journal_sectors:x"),
    ("verity", "1 7:0 7:1 4096 4096 1 0 sha256 ab - 1 bogus"),
    ("zero", "1"),
    ("raid", "raid1 1 1024"),                          # a type without typed parameters
])
def test_unreadable_params_are_parse_errors(ttype, text):
    with pytest.raises(errors.DmParseError) as exc:
        dm.parse_params(ttype, text)
    assert isinstance(exc.value, ValueError)
    with pytest.raises(errors.DmParseError):
        dm.Target(0, 8, ttype, text).parsed()


# --- status ---------------------------------------------------------------------------

A = dm.DeviceHealth.ALIVE

# Status lines from the Debian 6.1 kernel (dmsetup status in the guest).
KERNEL_STATUS = [
    ("0 2048 linear ", dm.EmptyStatus("linear")),
    ("0 1000 zero ", dm.EmptyStatus("zero")),
    ("0 1000 error ", dm.EmptyStatus("error")),
    ("0 2048 crypt ", dm.EmptyStatus("crypt")),
    ("0 8192 snapshot-origin ", dm.EmptyStatus("snapshot-origin")),
    ("0 4096 striped 2 7:0 7:1 1 AA", dm.StripedStatus(("7:0", "7:1"), (A, A))),
    ("0 4096 striped 2 7:0 7:1 1 AD",
     dm.StripedStatus(("7:0", "7:1"), (A, dm.DeviceHealth.DEAD))),
    ("0 129160 integrity 0 129160 -", dm.IntegrityStatus(0, 129160, None)),
    ("0 1 integrity 0 121904 65536", dm.IntegrityStatus(0, 121904, 65536)),
    ("0 8192 snapshot 32/131072 32", dm.SnapshotStatus(32, 131072, 32)),
    ("0 8192 snapshot 0/131072 0", dm.SnapshotStatus(0, 131072, 0)),
    ("0 8192 snapshot Invalid", dm.UnavailableStatus("snapshot", "Invalid")),
    ("0 8192 snapshot-merge Merge failed",
     dm.UnavailableStatus("snapshot-merge", "Merge failed")),
    ("0 65536 thin-pool 0 1648/16384 0/512 - rw discard_passdown queue_if_no_space - 1024 ",
     dm.ThinPoolStatus(0, 1648, 16384, 0, 512, None, "rw", "discard_passdown",
                       "queue_if_no_space", False, 1024)),
    ("0 65536 thin-pool 0 1650/16384 3/512 37 rw discard_passdown queue_if_no_space - 1024 ",
     dm.ThinPoolStatus(0, 1650, 16384, 3, 512, 37, "rw", "discard_passdown",
                       "queue_if_no_space", False, 1024)),
    ("0 65536 thin-pool 0 1649/16384 3/512 - rw no_discard_passdown queue_if_no_space - "
     "1024 ", dm.ThinPoolStatus(0, 1649, 16384, 3, 512, None, "rw", "no_discard_passdown",
                                "queue_if_no_space", False, 1024)),
    # older kernels (before 4.19) end before the metadata low watermark
    ("0 65536 thin-pool 7 10/16384 512/512 - out_of_data_space ignore_discard "
     "error_if_no_space needs_check",
     dm.ThinPoolStatus(7, 10, 16384, 512, 512, None, "out_of_data_space", "ignore_discard",
                       "error_if_no_space", True, None)),
    ("0 65536 thin-pool Fail", dm.UnavailableStatus("thin-pool", "Fail")),
    ("0 40960 thin 0 -", dm.ThinStatus(0, None)),
    ("0 40960 thin 384 383", dm.ThinStatus(384, 383)),
    ("0 40960 thin Fail", dm.UnavailableStatus("thin", "Fail")),
    ("0 8192 verity V", dm.VerityStatus(False)),
    ("0 8192 verity C", dm.VerityStatus(True)),
    ("0 8192 verity V 3", dm.VerityStatus(False, 3)),
    ("0 8192 mirror 2 7:0 7:1 8/8 1 AA 1 core",
     dm.MirrorStatus(("7:0", "7:1"), (A, A), 8, 8, ("core",))),
    ("0 8192 mirror 3 7:0 7:1 7:3 8/8 1 AAA 3 disk 7:2 A",
     dm.MirrorStatus(("7:0", "7:1", "7:3"), (A, A, A), 8, 8, ("disk", "7:2", "A"))),
    ("0 65536 mirror 2 7:0 7:1 3/64 1 AD 3 clustered-disk 7:2 A",
     dm.MirrorStatus(("7:0", "7:1"), (A, dm.DeviceHealth.DEAD), 3, 64,
                     ("clustered-disk", "7:2", "A"))),
]


@pytest.mark.parametrize("line, expected", KERNEL_STATUS)
def test_kernel_status_lines(line, expected):
    start, length, ttype, params = line.split(" ", 3)
    status = dm.StatusLine(int(start), int(length), ttype, params)
    assert status.parsed() == expected
    assert dm.parse_status(ttype, params) == expected


def test_status_helpers():
    pool = dm.parse_status("thin-pool", KERNEL_STATUS[14][0].split(" ", 3)[3])
    assert isinstance(pool, dm.ThinPoolStatus)
    assert (pool.free_data_blocks, pool.free_metadata_blocks, pool.read_only) == \
        (509, 16384 - 1650, False)
    mirror = dm.parse_status("mirror", "2 7:0 7:1 3/64 1 AD 3 disk 7:2 F")
    assert isinstance(mirror, dm.MirrorStatus)
    assert not mirror.in_sync and mirror.log_type == "disk"
    assert (mirror.log_device, mirror.log_health) == ("7:2", dm.DeviceHealth.FLUSH_FAILED)
    core = dm.parse_status("mirror", "2 7:0 7:1 8/8 1 AA 1 core")
    assert isinstance(core, dm.MirrorStatus) and core.log_device is None and core.in_sync
    assert dm.UnavailableStatus("thin", "-").failed is False
    assert dm.UnavailableStatus("thin-pool", "Fail").failed is True
    assert str(dm.DeviceHealth.READ_FAILED) == "R"


@pytest.mark.parametrize("ttype, text", [
    ("linear", "something"),
    ("striped", "2 7:0 7:1 1 A"),
    ("striped", "2 7:0 7:1 1 AX"),
    ("thin-pool", "0 1648/16384 0/512 - rw discard_passdown queue_if_no_space"),
    ("thin-pool", "0 1648 0/512 - rw discard_passdown queue_if_no_space - 1024"),
    ("thin-pool", "0 1/2 0/512 - maybe discard_passdown queue_if_no_space - 1024"),
    ("thin", "384"),
    ("thin", "x 383"),
    ("snapshot", "32/131072"),
    ("verity", "X"),
    ("mirror", "2 7:0 7:1 8/8 1 AA 3 core"),
    ("mirror", "2 7:0 7:1 8/8 2 AA 1 core"),
    ("mirror", "2 7:0 7:1 8/8 1 AA 3 disk 7:2 Q"),
    ("integrity", "0 129160"),
    ("raid", "2 AA 1/1 idle 0 0 -"),
])
def test_unreadable_status_is_a_parse_error(ttype, text):
    with pytest.raises(errors.DmParseError):
        dm.parse_status(ttype, text)


# --- thin-pool messages ---------------------------------------------------------------

def test_thin_messages():
    assert thin_messages.create_thin(0) == "create_thin 0"
    assert thin_messages.create_snap(2, origin_id=1) == "create_snap 2 1"
    assert thin_messages.delete(7) == "delete 7"
    assert thin_messages.set_transaction_id(0, 1) == "set_transaction_id 0 1"
    assert thin_messages.reserve_metadata_snap() == "reserve_metadata_snap"
    assert thin_messages.release_metadata_snap() == "release_metadata_snap"
    for bad in (lambda: thin_messages.create_thin(1 << 24), lambda: thin_messages.delete(-1),
                lambda: thin_messages.set_transaction_id(0, 1 << 64)):
        with pytest.raises(errors.ValueError):
            bad()
    for wrong_type in (lambda: thin_messages.create_snap(True, 0),
                       lambda: thin_messages.set_transaction_id("0", 1)):
        with pytest.raises(errors.TypeError):
            wrong_type()


# --- one declaration: builders, params and parsers share it ---------------------------

def test_builders_take_the_params_rules():
    # the kernel's striped rule: any chunk from 1 sector, a length of whole chunks per stripe
    assert dm.striped(0, 66, 3, ["/dev/a", "/dev/b"]) == \
        dm.StripedParams(3, (("/dev/a", 0), ("/dev/b", 0))).target(0, 66)
    for bad_length in (64, 3):
        with pytest.raises(errors.ValueError):
            dm.striped(0, bad_length, 3, ["/dev/a", "/dev/b"])
        with pytest.raises(errors.ValueError):
            dm.StripedParams(3, (("/dev/a", 0), ("/dev/b", 0))).target(0, bad_length)
    for build in (lambda: dm.striped(0, 64, 0, ["/dev/a"]),
                  lambda: dm.StripedParams(0, (("/dev/a", 0),))):
        with pytest.raises(errors.ValueError):
            build()
    # a mirror's region must fit its length, whichever way it is made
    legs = (("7:0", 0), ("7:1", 0))
    with pytest.raises(errors.ValueError):
        dm.mirror(0, 32, [os.makedev(7, 0), os.makedev(7, 1)], 64)
    with pytest.raises(errors.ValueError):
        dm.MirrorParams(legs, 64).target(0, 32)
    long_dev = "/dev/" + "x" * 330
    with pytest.raises(errors.ValueError):
        dm.MirrorParams(legs, 64, log="userspace", uuid="u", log_device=long_dev).target(0, 64)


@pytest.mark.parametrize("build", [
    lambda: dm.linear(0, "8", "7:0"),
    lambda: dm.linear(True, 8, "7:0"),
    lambda: dm.zero(0, 8.0),
    lambda: dm.striped(0, 64, True, ["/dev/a"]),
    lambda: dm.striped(0, 64, 8, "/dev/a"),             # a str is not a list of devices
    lambda: dm.mirror(0, 64, [os.makedev(7, 0), os.makedev(7, 1)], "8"),
    lambda: dm.Target("0", 8, "zero"),
    lambda: dm.Target(0, 8, 3),
    lambda: dm.VerityParams(1, "7:0", "7:1", 4096, 4096, 1, 0, "sha256", "ab", mode=1),
    lambda: dm.MirrorParams((("7:0", 0), ("7:1", 0)), 64, log=None),
    lambda: dm.IntegrityParams("7:0", 0, False),
    lambda: thin_messages.delete("1"),
])
def test_wrong_types_are_type_errors_everywhere(build):
    with pytest.raises(errors.TypeError):
        build()


def test_target_type_has_one_name():
    line = dm.zero(0, 8)
    assert line.target_type == line.type == "zero"
    status = dm.StatusLine(0, 8, "zero", "")
    assert status.target_type == line.target_type
    with pytest.raises(AttributeError):
        line.type = "error"                             # type: ignore[misc]


def test_snapshot_merge_reads_as_a_snapshot():
    assert dm.parse_params("snapshot-merge", "7:4 7:5 P 8") == \
        dm.SnapshotParams("7:4", "7:5", 8)
    assert dm.parse_status("snapshot-merge", "1/2 3") == dm.SnapshotStatus(1, 2, 3)


def test_a_new_target_type_is_one_declaration():
    # (the annotations name module-level imports: they are read with get_type_hints)
    @dataclasses.dataclass(frozen=True)
    class ToyStatus(TargetStatus, states=("Broken",)):
        hits: Annotated[int, SECTORS]
        misses: Annotated[Optional[int], Uint(dash=True)] = None

    try:
        @dataclasses.dataclass(frozen=True)
        class ToyParams(dm.TargetParams, target_type="toy-test", status=ToyStatus):
            device: Annotated[str, DEVICE]
            block: Annotated[int, Uint(1, 8)] = 1
            fast: Annotated[bool, Opt(FLAG)] = False
            depth: Annotated[Optional[int], Opt(SECTORS, "colon")] = None

        toy = ToyParams("7:0", 2, fast=True, depth=9)
        assert str(toy) == "7:0 2 2 fast depth:9"
        assert dm.parse_params("toy-test", "7:0 2 2 depth:9 fast") == toy
        assert dm.Target(0, 8, "toy-test", "7:0 1").parsed() == ToyParams("7:0")
        with pytest.raises(errors.ValueError):
            ToyParams("7:0", 9)
        with pytest.raises(errors.TypeError):
            ToyParams("7:0", fast=1)                    # type: ignore[arg-type]
        with pytest.raises(errors.DmParseError):
            dm.parse_params("toy-test", "7:0 1 1 slow")
        assert dm.parse_status("toy-test", "5 -") == ToyStatus(5, None)
        assert dm.parse_status("toy-test", "5") == ToyStatus(5)
        assert dm.parse_status("toy-test", "Broken") == dm.UnavailableStatus("toy-test", "Broken")
    finally:
        for registry in (base.PARAMS_TYPES, base._PARAMS_BY_TYPE, base._STATUS_BY_TYPE,
                         base.STATUS_TYPES):
            registry.pop("toy-test", None)
