"""``loopcore dm``: its table of commands (one row per dmsetup command),
argument checks before device-mapper is touched, and where dmsetup's
formats live.  The output itself is diff-tested against dmsetup in the VM
(tests/vm/test_dmsetup_diff.py); the formats without a kernel in
tests/test_dm_report.py."""
from __future__ import annotations

import argparse
import importlib.util

import pytest

from loopcore import cli, dm
from loopcore.cli import dm as dm_cli
from loopcore.cli.dm import COMMANDS, Command, arg


def _dm_subparsers() -> "dict[str, argparse.ArgumentParser]":
    """The parser of each ``loopcore dm`` command, by name."""
    sub = argparse.ArgumentParser(prog="loopcore").add_subparsers(dest="command")
    dm_cli.add_parser(sub)
    (commands,) = [a for a in sub.choices["dm"]._actions
                   if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def test_one_parser_per_row():
    """Each row is a command (and its aliases), its handler the row's."""
    parsers = _dm_subparsers()
    names = {n for name, row in COMMANDS.items() for n in (name, *row.aliases)}
    assert set(parsers) == names
    for name, row in COMMANDS.items():
        for n in (name, *row.aliases):
            p = parsers[n]
            assert p.get_default("func") is row.handler, n
            options = {o for a in p._actions for o in a.option_strings}
            assert ("--json" in options) == row.json, n
            assert ("--manglename" in options) == row.names, n
            assert "--noudevsync" in options, n


def test_a_command_is_one_row(monkeypatch, capsys):
    """Adding a command: a row and a handler; the contract comes with it."""
    def hello(args: argparse.Namespace) -> int:
        if args.who == "nobody":
            raise ValueError("nobody to greet")
        print(f"hello {args.who} json={args.json} mangling={args.manglename}")
        return 0
    monkeypatch.setitem(COMMANDS, "hello", Command(hello, "greet", (arg("who"),), json=True))
    assert cli.main(["dm", "hello", "--json", "you"]) == 0
    assert capsys.readouterr().out == "hello you json=True mangling=auto\n"
    assert cli.main(["dm", "hello", "nobody"]) == cli.EXIT_FAILURE
    assert capsys.readouterr().err == "loopcore: nobody to greet\n"
    assert cli.main(["dm", "hello"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.count("\n") == 1


def test_dmsetup_formats_live_in_the_cli():
    assert importlib.util.find_spec("loopcore.dm.report") is None
    assert not hasattr(dm, "report")
    assert dm_cli.__all__ == ["add_parser"]


@pytest.mark.parametrize("argv, message", [
    (["info", "-c", "-o", "name,bogus"], "Unrecognised field: bogus"),
    (["info", "-u", "U", "-j", "1", "-m", "2"], "give -u or -j/-m, not both"),
    (["info", "-j", "254"], "-j MAJOR and -m MINOR go together"),
    (["table", "x", "-u", "U"], "give a device name or -u/-j/-m, not both"),
    (["ls", "--tree", "-o", "compact"], "tree option 'compact' is not supported"),
    (["wipe_table"], "no device specified"),
    (["setgeometry", "x", "1", "2"], "give the device, then cylinders"),
    (["splitname", "a-b", "-o", "name"], "Unrecognised field: name"),
])
def test_cli_usage_errors_before_control(monkeypatch, capsys, argv, message):
    def opened(**kwargs):
        raise AssertionError("/dev/mapper/control opened before the arguments were checked")
    monkeypatch.setattr(dm, "DeviceMapper", opened)
    assert cli.main(["dm", *argv]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_cli_splitname_needs_no_device_mapper(capsys):
    assert cli.main(["dm", "splitname", "vg0-lv_a-_real"]) == 0
    assert capsys.readouterr().out == "VG   LV   LVLayer\nvg0  lv_a _real  \n"
