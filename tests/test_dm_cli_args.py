"""``loopcore dm``'s arguments on the host: the parser's contract, names
and argument errors refused before /dev/mapper/control is opened, and
names shown and sent as dmsetup would (through a FakeKernel)."""
from __future__ import annotations

import argparse

import pytest

from loopcore import dm
from loopcore.cli import dm as dm_cli

from dmfake import FakeKernel, fake_mapper_fixture  # noqa: F401 - the fixture


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
