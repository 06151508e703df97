"""loopcore-dmsetup against Debian's dmsetup (1.02.185), byte for byte:
stdout, stderr and exit status of the same command line on the same
devices, global options in various places, tables from stdin, --table
and a file, --notable, and the errors scripts read (a missing device, a
table the kernel refuses, an existing name, an unknown or unimplemented
command).

A command that changes devices runs with dmsetup first; what it made or
changed is then put back (with loopcore's library), and the drop-in runs
the same line: the two must print the same and leave the same state.
dmsetup runs with udev synchronisation (DM_DISABLE_UDEV unset: with it
set, dmsetup adds a warning line to stderr that the drop-in has no cause
to print).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Callable, List, Optional, Tuple

import pytest

from loopcore import cli, dm

from vmhelpers import DMSETUP, udev_settle

Result = Tuple[int, str, str]


def theirs(argv: List[str], stdin: Optional[str] = None) -> Result:
    env = {k: v for k, v in os.environ.items() if k != "DM_DISABLE_UDEV"}
    # argv[0] "dmsetup", as a script calling it through PATH (getopt's
    # messages start with it)
    proc = subprocess.run(["dmsetup", *argv], executable=DMSETUP, capture_output=True,
                          text=True, env=env,
                          input=stdin if stdin is not None else "",
                          timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def ours(capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, argv: List[str],
         stdin: Optional[str] = None) -> Result:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
    capfd.readouterr()
    status = cli.main(["dmsetup", *argv])
    out, err = capfd.readouterr()
    return status, out, err


@pytest.fixture
def both(capfd, monkeypatch):
    """both(argv, stdin=None, between=None): dmsetup, then ``between()``
    (puts back what it changed), then the drop-in; the results are equal."""

    def run(argv: List[str], stdin: Optional[str] = None,
            between: Optional[Callable[[], None]] = None) -> Result:
        expected = theirs(argv, stdin)
        if between is not None:
            between()
        got = ours(capfd, monkeypatch, argv, stdin)
        assert got == expected, argv
        return got

    return run


def state(name: str) -> Tuple[str, str, str]:
    """What dmsetup reports of ``name``: info columns, live and inactive table,
    once udev is done with it (after a ``--noudevsync`` create, udev's probe
    may still hold the device open, and the open count is a column)."""
    udev_settle()
    return (theirs(["info", "-c", "--noheadings", "-o", "name,attr,open,segments,uuid",
                    name])[1],
            theirs(["table", name])[1], theirs(["table", "--inactive", name])[1])


def removed(mapper: dm.DeviceMapper, name: str) -> Callable[[], None]:
    return lambda: mapper.remove(name, retries=10, retry_delay=0.05)


@pytest.mark.parametrize("argv, stdin", [
    (["create", "{n}"], "0 8 zero\n"),
    (["--noudevsync", "create", "-r", "{n}", "-u", "LCT-{n}"], "0 16 zero\n"),
    (["create", "{n}", "--notable"], None),
    (["-y", "create", "--verifyudev", "{n}", "--table", "0 8 zero\n8 8 error"], None),
])
def test_create(both, mapper, names, argv, stdin):
    name = names("create")
    argv = [a.replace("{n}", name) for a in argv]
    before = None

    def put_back() -> None:
        nonlocal before
        before = state(name)
        mapper.remove(name, retries=10, retry_delay=0.05)

    both(argv, stdin, put_back)
    assert state(name) == before


def test_create_from_a_table_file(both, mapper, names, tmp_path):
    name = names("file")
    table = tmp_path / "table"
    table.write_text("0 8 zero\n")
    both(["create", name, str(table)], between=removed(mapper, name))
    both(["create", names("nofile"), str(tmp_path / "missing")])


def test_create_errors(both, mapper, names):
    name = names("err")
    mapper.create(name, table=[dm.zero(0, 8)])
    both(["create", name, "--table", "0 8 zero"])                 # exists: EBUSY
    other = names("bad")
    both(["create", other, "--table", "garbage"])
    # (not a table the kernel refuses on a live device: the guest's 6.1
    # kernel then hits a BUG in dm-ima when the device is removed)
    both(["create", other, "--notable", "--table", "0 8 zero"])
    both(["create", "lct-a/b", "--table", "0 8 zero"])
    assert not mapper.exists(other)


def test_changes_and_their_errors(both, mapper, names):
    name = names("chg")
    mapper.create(name, table=[dm.zero(0, 8)])
    missing = names("missing")
    for argv in (["suspend", "{m}"], ["resume", "{m}"], ["remove", "{m}"],
                 ["--retry", "remove", "{m}"], ["clear", "{m}"], ["rename", "{m}", "{m}x"],
                 ["message", "{m}", "0", "hi"], ["reload", "{m}", "--table", "0 8 zero"],
                 ["table", "{m}"], ["status", "{m}"], ["info", "{m}"], ["info", "-c", "{m}"],
                 ["deps", "{m}"], ["setgeometry", "{m}", "1", "1", "1", "0"],
                 ["message", "{n}", "0", "hi"],
                 ["remove"], ["rename", "{n}"], ["info", "--bogus"], ["info", "--no"]):
        argv = [a.replace("{m}", missing).replace("{n}", name) for a in argv]
        status, _out, err = both(argv)
        assert status == 1 and err, argv
    both(["suspend", name], between=lambda: mapper.resume(name))
    assert mapper.info(name).suspended
    both(["resume", name], between=lambda: mapper.suspend(name))
    both(["reload", name], "0 4 zero\n")  # the drop-in's replaces dmsetup's
    assert state(name)[2] == "0 4 zero \n"
    both(["resume", name], between=lambda: mapper.load(name, [dm.zero(0, 4)]))
    # (not clear, nor a rename onto an existing name: after either, the
    # guest's 6.1 kernel BUGs in dm-ima when the device is removed)
    both(["rename", name, name + "-renamed"],
         between=lambda: mapper.rename(name + "-renamed", name))
    both(["rename", name + "-renamed", name],
         between=lambda: mapper.rename(name, name + "-renamed"))


def test_reports_with_options_anywhere(both, mapper, names, loops):
    loop = loops(1 << 20)
    base = names("base")
    info = mapper.create(base, uuid=f"LCT-{base}", table=[dm.linear(0, 64, loop)])
    top = names("top")
    mapper.create(top, table=[dm.linear(0, 64, info)])
    try:
        _reports(both, base, top, info)
    finally:
        mapper.remove(top, retries=10, retry_delay=0.05)  # before base, which it uses


def _reports(both, base: str, top: str, info: dm.DeviceInfo) -> None:
    for argv in (["info", top], ["-c", "info", top, "-o", "name,uuid", "--noheadings"],
                 ["info", top, "-C", "--separator", ",", "-o", "name,open"],
                 ["info", "-c", "-o", "major,minor,open", "--noheadings", "--separator", ":",
                  base],
                 ["--columns", "info"], ["info", "-u", f"LCT-{base}"],
                 ["-j", str(info.major), "-m", str(info.minor), "table"],
                 ["table", top, base], ["table", "--showkeys"], ["status"], ["ls"],
                 ["ls", "--tree"], ["ls", "-o", "blkdevname"], ["deps", top],
                 ["deps", "-o", "blkdevname", top],
                 # -o devname: a dm device by its name, any other by the kernel's
                 ["deps", "-o", "devname", top], ["deps", base, "-o", "devname"],
                 ["deps", "-o", "devname"], ["ls", "-o", "devname"],
                 # -o words as prefixes, dmsetup's order ("a": active, "devn": devno)
                 ["ls", "--tree", "-o", "a,u"], ["deps", "-o", "blk", top],
                 ["ls", "-o", "devn"], ["--manglename", "NONE", "info", top],
                 ["targets"], ["splitname", "vg-lv"], ["--noudevsync", "mknodes"],
                 ["mknodes", top], ["info", "-c", "-o", "name", "--sort", "-name"]):
        assert both(argv)[0] == 0, argv


def test_remove_forms(both, mapper, names):
    def fresh(name: str) -> Callable[[], None]:
        return lambda: mapper.create(name, table=[dm.zero(0, 8)])

    name = names("rm")
    fresh(name)()
    both(["remove", name], between=fresh(name))
    fresh(name)()
    both(["remove", "--deferred", "-f", name], between=fresh(name))
    fresh(name)()
    both(["--retry", "remove", name], between=fresh(name))
    mapper.create(name, uuid=f"LCT-{name}", table=[dm.zero(0, 8)])
    both(["remove", "-u", f"LCT-{name}"],
         between=lambda: mapper.create(name, uuid=f"LCT-{name}", table=[dm.zero(0, 8)]))
    assert not mapper.exists(name)


def test_target_filter_and_concise(both, mapper, names, loops):
    """--target TYPE: table and status print only that type's lines (a device
    without one prints nothing), ls only the devices that have one;
    table --concise: all devices on one line (with --target too)."""
    mixed = names("mixed")
    mapper.create(mixed, uuid=f"LCT-{mixed}", table=[dm.zero(0, 8), dm.error(8, 8)])
    linear = names("lin")
    mapper.create(linear, table=[dm.linear(0, 64, loops(1 << 20))], read_only=True)
    empty = names("empty")
    mapper.create(empty)  # no table: no line of any type
    for argv in (["table", "--target", "zero"], ["table", "--target", "error", mixed],
                 ["table", mixed, linear, "--target", "linear"],
                 ["status", "--target", "zero"], ["--target", "linear", "status", linear],
                 ["table", "--target", "zero", empty], ["table", "--target", "striped"],
                 ["ls", "--target", "zero"], ["ls", "--target", "linear", "-o", "blkdevname"],
                 ["ls", "--target", "striped"], ["ls", "--target", "error", "--tree"],
                 ["info", "--target", "zero", mixed],     # info: dmsetup ignores it
                 ["table", "--concise"], ["table", "--concise", linear, mixed],
                 ["table", "--concise", empty], ["--concise", "table", "--target", "error"],
                 ["table", "--concise", "--target", "striped"],
                 ["status", "--concise", mixed]):         # status: dmsetup ignores it
        assert both(argv)[0] == 0, argv
