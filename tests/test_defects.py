"""Regression tests for the 12 defects a first round of property tests
found (issue 19): secrets, partition tables the kernel would not register,
dm text, the command line.  Each test fails on the code before its fix."""
from __future__ import annotations

import argparse

import pytest

from loopcore import PartitionTableError, _c, cli, dm, errors
from loopcore.cli import dm_arguments
from loopcore.cli import dmlog as cli_dmlog
from loopcore.dm.table import has_keys, mask_params
from loopcore.dm.targets import parse_params, parse_status
from loopcore.dmlog.ctr import parse_ctr

from dmfake import KEY, FakeKernel, fake_mapper_fixture  # noqa: F401 - the fixture
from partition_images import ebr_chain_image, gpt_image, mbr_sector, read_image

MiB = 1 << 20

# --- secrets ----------------------------------------------------------------------------

CRYPT_SPACED = [f"aes-xts-plain64  {KEY} 0 7:0 0", f"aes-xts-plain64\t{KEY} 0 7:0 0",
                f" aes-xts-plain64 \t {KEY}\t0 7:0 0"]


@pytest.mark.parametrize("params", CRYPT_SPACED)
def test_crypt_key_after_two_spaces_or_a_tab_is_masked(params):
    target = dm.Target(0, 8, "crypt", params)
    assert KEY not in str(dm.mask_keys([target])) and "0" * 64 in str(dm.mask_keys([target]))
    assert has_keys([target])
    assert KEY not in repr(dm.CryptParams.parse(params))


@pytest.mark.parametrize("params", CRYPT_SPACED)
def test_crypt_key_after_two_spaces_or_a_tab_loads_secure_and_wiped(fake_mapper, params):
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    m.load("c", [dm.Target(0, 8, "crypt", params)])
    (index, flags), = [(i, f) for i, (c, f, *_) in enumerate(kernel.requests)
                       if c == dm.Cmd.TABLE_LOAD]
    assert flags & dm.Flag.SECURE_DATA
    assert not any(bytes(_c.ffi.buffer(kernel.buffers[index])))


# --- partition tables the kernel would not register -------------------------------------

def test_gpt_entry_256_is_not_a_partition():
    # 256 entries: the kernel reads entries 1 to 255 only (BLKPG refuses 256)
    image = gpt_image(4 * MiB, [(0, 2048, 2049), (254, 2050, 2051), (255, 2052, 2053)],
                      count=256)
    table = read_image(image)
    assert table is not None and [p.number for p in table.partitions] == [1, 255]


def test_msdos_logicals_stop_at_255():
    table = read_image(ebr_chain_image(260))
    assert table is not None
    numbers = [p.number for p in table.partitions]
    assert numbers[0] == 1 and numbers[1:] == list(range(5, 256))


@pytest.mark.parametrize("entry_size", [136, 256, 512])
def test_gpt_entry_size_other_than_128_is_refused(entry_size):
    image = gpt_image(4 * MiB, [(0, 2048, 4095)], entry_size=entry_size)
    with pytest.raises(PartitionTableError, match="no valid GPT header"):
        read_image(image)
    assert read_image(gpt_image(4 * MiB, [(0, 2048, 4095)])) is not None


@pytest.mark.parametrize("start", [0, 2, 2048])
def test_protective_mbr_entry_not_at_lba_1_is_refused(start):
    with pytest.raises(PartitionTableError, match="LBA"):
        read_image(gpt_image(4 * MiB, [(0, 2048, 4095)], pmbr_start=start))


# --- dm text ------------------------------------------------------------------------------

@pytest.mark.parametrize("digits", ["\u0661\u0662", "\u00b2", "\uff11", "\u09e7"])
def test_dm_numbers_are_ascii_digits_only(digits):
    with pytest.raises(errors.DmParseError):
        parse_params("linear", f"7:0 {digits}")
    with pytest.raises(errors.DmParseError):
        parse_status("thin", f"{digits} -")
    with pytest.raises(errors.ValueError, match="decimal"):
        dm.Table.parse(f"0 {digits} zero")


def test_dm_numbers_of_5000_digits_are_a_parse_error():
    huge = "1" * 5000
    with pytest.raises(errors.DmParseError, match="out of range"):
        parse_params("linear", f"7:0 {huge}")
    with pytest.raises(errors.DmParseError, match="out of range"):
        parse_status("snapshot", f"{huge}/8 1")
    with pytest.raises(errors.ValueError):
        dm.Table.parse(f"0 {huge} zero")
    # leading zeros are not digits of the value (the kernel reads them)
    assert parse_params("linear", "7:0 " + "0" * 5000 + "8") == dm.LinearParams("7:0", 8)


@pytest.mark.parametrize("call", [
    lambda: parse_params("crypt", "aes \ud800 0 7:0 0"),
    lambda: parse_params("integrity", "7:0 0 32 J 1 internal_hash:a:\udfff"),
    lambda: dm.Target(0, 8, "crypt", "aes \ud800 0 7:0 0"),
    lambda: dm.Target(0, 8, "lin\ud800ear", ""),
    lambda: dm.Table.parse("0 8 crypt aes \ud800 0 7:0 0"),
    lambda: dm.mask_keys("0 8 crypt aes \ud800 0 7:0 0"),
])
def test_a_lone_surrogate_is_a_loopcore_error(call):
    with pytest.raises(errors.ValueError):
        call()


@pytest.mark.parametrize("brk", ["\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
                                 "\u2029", "\r\n"])
def test_every_line_break_is_refused_in_params(brk):
    with pytest.raises(errors.ValueError, match="line break"):
        dm.Target(0, 8, "linear", f"7:0{brk}0")
    # so what Target takes reads back from its table text
    ok = dm.Table([dm.Target(0, 8, "linear", "7:0 0"), dm.Target(8, 8, "zero")])
    assert dm.Table.parse(str(ok)) == ok


def test_merge_failed_is_snapshot_merges_state():
    assert parse_status("snapshot-merge", "Merge failed") == dm.UnavailableStatus(
        "snapshot-merge", "Merge failed")
    assert parse_status("snapshot-merge", "Merge failed").failed
    # a snapshot (not merging) cannot report it
    with pytest.raises(errors.DmParseError):
        parse_status("snapshot", "Merge failed")
    assert parse_status("snapshot", "Invalid") == dm.UnavailableStatus("snapshot", "Invalid")


# --- the command line -----------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--bogus"], ["list", "--nosuch"], ["nosuchcommand"], []])
def test_cli_main_returns_2_for_usage_errors(argv, capsys):
    assert cli.main(argv) == 2  # returned, not raised as SystemExit
    err = capsys.readouterr().err
    assert err.startswith("loopcore") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["list", "--bo\ngus"], ["find", "a\nb", "c\rd"],
                                  ["attach", "--offset", "1\n2", "f"], ["x\u2028y"]])
def test_cli_usage_error_with_a_line_break_is_one_line(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert "\\n" in err or "\\r" in err or "\\u2028" in err


# --- found by the property tests (tests/test_properties_*) ----------------------------------

def test_a_hash_inside_a_word_is_not_a_comment():
    line = dm.Target(0, 8, "crypt", "aes-xts-plain64 :32:logon:disk#1 0 7:0 0")
    assert dm.Table.parse(str(dm.Table([line]))) == dm.Table([line])
    # a word starting with '#' still starts one, as before
    assert dm.Table.parse("0 8 linear 7:0 0 #x") == dm.Table([dm.Target(0, 8, "linear",
                                                                        "7:0 0")])
    # and typed parameters cannot hold such a word: their text would lose it
    with pytest.raises(errors.ValueError, match="'#'"):
        dm.CryptParams("#aes", "00", 0, "7:0", 0)
    with pytest.raises(errors.ValueError, match="'#'"):
        dm.linear(0, 8, "#dev")


def test_a_partition_cut_at_an_odd_sized_end_is_whole_sectors():
    # a 1 MiB + 100 byte image: its loop device has 2048 sectors, and a
    # partition running over the end is cut there, not at byte 1 MiB + 100
    image = bytearray(mbr_sector([(0, 0x83, 2000, 100)])) + bytes((1 << 20) + 100 - 512)
    table = read_image(image)
    assert table is not None
    part, = table.partitions
    assert (part.start, part.size) == (2000 * 512, 48 * 512)


@pytest.mark.parametrize("ctr", [b"+1024 clustered-core 64", b"1_024 clustered-core 64",
                                 b"1024 clustered-core +64", b"1024 clustered-core 6_4"])
def test_a_dmlog_ctr_number_is_decimal_digits_only(ctr):
    with pytest.raises(errors.ValueError, match="not a number"):
        parse_ctr(ctr)
    assert parse_ctr(b"1024 clustered-core 64").region_size == 64


def test_a_cli_error_naming_an_undecodable_argument_is_written(capsys):
    # argv bytes that are not UTF-8 arrive as lone surrogates; a stderr with
    # strict errors (pytest's, a wrapper's) must still get the line
    assert cli.main(["dm", "ls", "\udc80"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loopcore") and "\\udc80" in err and err.count("\n") == 1


@pytest.mark.parametrize("word", ["\u0661\u0662", "1_0", "\uff11"])
def test_cli_numbers_are_ascii_without_separators(word):
    # dm's numbers (dm message, wait, setgeometry) and dmlog serve's
    # --busy-poll-us (not run here: it would serve)
    with pytest.raises(argparse.ArgumentTypeError):
        dm_arguments.uint_arg(word)
    assert dm_arguments.uint_arg("0x10") == 16
    with pytest.raises(argparse.ArgumentTypeError):
        cli_dmlog._microseconds(word)
    assert cli_dmlog._microseconds("50") == 50


def test_a_crypt_key_after_a_non_ascii_cipher_is_masked():
    # U+20000's UTF-8 holds the byte 0xA0, a space to the kernel's isspace():
    # the key as the typed parameters read it is zeroed too
    params = f"\U00020000 {KEY} 0 7:0 0"
    assert KEY not in mask_params("crypt", params)
    assert KEY not in mask_params("crypt", f"aes\u00a0{KEY} 0 7:0 0")
