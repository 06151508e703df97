"""The dmsetup and kpartx drop-ins' command lines, without device-mapper:
dmsetup's getopt (options anywhere, prefixes, clusters), its checks and
messages for bad command lines, exit status 1 for all of them, the
commands loopcore does not implement, and the ``loopcore dm`` argv each
command line becomes.  Where Debian's dmsetup is installed, its answer to
the same bad command lines is compared byte for byte (they fail before it
opens /dev/mapper/control)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import List, Tuple

import pytest

from loopcore import cli
from loopcore.cli import dmsetup, kpartx_dropin

DMSETUP = shutil.which("dmsetup") or "/usr/sbin/dmsetup"


def ours(capfd: pytest.CaptureFixture, argv: List[str]) -> Tuple[int, str, str]:
    capfd.readouterr()
    status = cli.main(["dmsetup", *argv])
    out, err = capfd.readouterr()
    return status, out, err


# bad command lines dmsetup rejects before it opens the control node
BAD_COMMAND_LINES = [
    ["info", "-c", "--bogus"],
    ["-z", "info"],
    ["info", "-o"],
    ["info", "--sep"],
    ["info", "--no"],                  # ambiguous prefix: dmsetup's list, in its order
    ["info", "--tree=x"],
    ["--table"],
    ["create", "x", "-u"],
    ["create", "x", "--notable", "--table", "0 8 zero"],
    ["create", "x", "--table", "0 8 zero", "-n"],
    ["-j", "1", "info"],
    ["-m", "1", "info"],
    ["--manglename", "bogus", "info"],
    ["deps", "-o", "bogus"],
    # -o outside --columns and --tree: a comma list of device labels (prefixes)
    ["ls", "-o", "bogus"], ["info", "-o", "name", "x"], ["deps", "-o", "bogus,devno"],
    ["ls", "-o", "devno,,x"], ["deps", "-o", "blk,x"],
    ["ls", "--tree", "-o", "bogus"], ["ls", "--tree", "-o", "a,,x,u"],
    ["info", "--tree", "-o", "x"],
    ["info", "--verbose"],             # --verbose takes an argument in dmsetup 1.02.185
    # glibc names the whole word, "=value" too, in these two messages
    ["info", "--bogus=x"],
    ["info", "--no=x"],
    ["info", "--col=x"],
    ["info", "--ver"],
    ["ls", "--target"],
    ["-cz", "info"],
]


@pytest.mark.parametrize("argv", BAD_COMMAND_LINES, ids=" ".join)
def test_bad_command_lines(capfd, argv):
    status, out, err = ours(capfd, argv)
    assert status == 1 and out == ""
    assert err.endswith("\nCouldn't process command line.\n") and err.count("\n") == 2
    if os.path.exists(DMSETUP):
        theirs = subprocess.run(["dmsetup", *argv], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PATH=os.path.dirname(DMSETUP)))
        assert (theirs.returncode, theirs.stdout, theirs.stderr) == (status, out, err)


@pytest.mark.parametrize("argv, line", [
    (["foo"], "Unknown command."),
    (["version", "x"], "Incorrect number of arguments."),
    (["ls", "x"], "Incorrect number of arguments."),
    (["create", "a", "b", "c"], "Incorrect number of arguments."),
    (["message", "a"], "Incorrect number of arguments."),
    (["setgeometry", "a"], "Incorrect number of arguments."),
    (["help", "x"], "Incorrect number of arguments."),
])
def test_usage_errors_are_dmsetups_first_line(capfd, argv, line):
    """dmsetup then prints its whole usage; the drop-in the line alone."""
    assert ours(capfd, argv) == (1, "", line + "\n")


@pytest.mark.parametrize("argv, line", [
    (["create"], "Please provide a name for the new device."),
    (["remove"], "No device specified."),
    (["suspend", "--noflush"], "No device specified."),
    (["rename", "a"], "No device specified."),
    (["create", "x", "/nonexistent/table"], "Couldn't open '/nonexistent/table' for reading."),
])
def test_command_failures_before_device_mapper(capfd, argv, line):
    assert ours(capfd, argv) == (1, "", f"{line}\nCommand failed.\n")


@pytest.mark.parametrize("command", dmsetup.UNIMPLEMENTED)
def test_unimplemented_commands_name_themselves(capfd, command):
    status, out, err = ours(capfd, [command, "x"])
    assert (status, out) == (1, "")
    assert err == f"dmsetup: command '{command}' is not implemented by loopcore.\n" \
                  "Command failed.\n"


@pytest.mark.parametrize("argv", [["--select", "name=x", "info"],
                                  ["create", "x", "-j", "1", "-m", "2"],
                                  ["create", "--concise", "x,,,rw,0 8 zero"],
                                  ["--readahead", "8", "create", "x"]])
def test_unimplemented_options_name_themselves(capfd, argv):
    status, out, err = ours(capfd, argv)
    assert (status, out) == (1, "") and "is not supported by loopcore" in err


def test_no_command_and_help(capfd):
    status, out, err = ours(capfd, [])
    assert (status, out) == (1, "") and err.startswith("Usage: dmsetup")
    assert ours(capfd, ["help"])[0] == ours(capfd, ["-h"])[0] == 0


@pytest.mark.parametrize("argv, expected", [
    # global options anywhere, short clusters, long prefixes, -- before names
    (["-c", "info", "-o", "name", "--noheadings", "x"],
     ["info", "-c", "-o", "name", "--noheadings", "--", "x"]),
    (["info", "x", "--columns", "--sep", ":", "-ominor"],
     ["info", "-c", "-o", "minor", "--separator", ":", "--", "x"]),
    (["--noudevsync", "remove", "--retry", "a", "b"],
     ["remove", "--retry", "--noudevsync", "--", "a", "b"]),
    (["remove", "--deferred", "-f", "--", "-a"], ["remove", "--deferred", "-f", "--", "-a"]),
    (["remove_all", "-f"], ["remove", "-f", "--all", "--"]),
    (["-y", "--verifyudev", "-v", "resume", "x"], ["resume", "--", "x"]),
    (["create", "x", "--table", "0 8 zero", "-ru", "U"],
     ["create", "-u", "U", "--table", "0 8 zero", "-r", "--", "x"]),
    (["create", "x", "--notable"], ["create", "--notable", "--", "x"]),
    (["reload", "x", "--table", "0 8 zero"], ["reload", "--table", "0 8 zero", "--", "x"]),
    (["table", "--showkeys", "--inactive", "x"], ["table", "--inactive", "--showkeys", "--", "x"]),
    (["ls", "--tree", "-o", "ascii"], ["ls", "-o", "ascii", "--tree"]),
    # tree words: dmsetup's prefixes, in its order ("a": active, "n": nodevice)
    (["ls", "--tree", "-o", "a,n,u,b,as,no"], ["ls", "-o", "active,nodevice,uuid,blkdevname,"
                                                       "ascii,nodevice", "--tree"]),
    (["info", "--tree", "-o", "ascii", "x"], ["info", "--", "x"]),
    (["--manglename", "NONE", "info", "x"], ["info", "--manglename", "none", "--", "x"]),
    (["targets"], ["targets"]),
    (["deps", "-o", "blkdevname"], ["deps", "-o", "blkdevname", "--"]),
    (["deps", "x", "-o", "devname"], ["deps", "-o", "devname", "--", "x"]),
    (["ls", "-o", "devname"], ["ls", "-o", "devname"]),
    (["deps", "-o", "blk", "x"], ["deps", "-o", "blkdevname", "--", "x"]),
    (["ls", "-o", "blkdevname,dev"], ["ls", "-o", "devno"]),
    (["info", "-o", "devn", "x"], ["info", "--", "x"]),         # info ignores it, as dmsetup
    (["info", "-c", "-o", "devno", "x"], ["info", "-c", "-o", "devno", "--", "x"]),
    (["--target", "zero", "table"], ["table", "--target", "zero", "--"]),
    (["status", "x", "--targ=linear"], ["status", "--target", "linear", "--", "x"]),
    (["ls", "--target", "-x"], ["ls", "--target=-x"]),
    (["info", "--target", "zero", "x"], ["info", "--", "x"]),      # ignored, as dmsetup
    (["table", "--concise", "--target", "zero"], ["table", "--target", "zero", "--concise", "--"]),
    (["--concise", "status", "x"], ["status", "--", "x"]),
    (["info", "-c", "-O", "-name", "-u", "-x"], ["info", "-c", "--sort=-name", "-u-x", "--"]),
    (["-u", "U", "info"], ["info", "-u", "U", "--"]),
    (["-j", "253", "-m", "0", "table"], ["table", "-j", "253", "-m", "0", "--"]),
    (["rename", "a", "--setuuid", "U"], ["rename", "--setuuid", "--", "a", "U"]),
    (["suspend", "--nolockfs", "--noflush", "x"], ["suspend", "--noflush", "--nolockfs", "--",
                                                    "x"]),
])
def test_translation(argv, expected):
    opts, words = dmsetup.parse(argv)
    assert dmsetup.translate(words[0], opts, words[1:]) == expected


def test_create_with_an_empty_table_makes_a_device_without_one(monkeypatch):
    """dmsetup creates a device with no table when stdin holds none."""
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    opts, words = dmsetup.parse(["create", "x"])
    assert dmsetup.translate("create", opts, words[1:]) == ["create", "--notable", "--", "x"]


def test_concise_quoting():
    """table --concise escapes its separators in names, uuids and params."""
    from loopcore.cli import dm_show
    assert dm_show._concise_quoted("a,b;c\\d e") == "a\\,b\\;c\\\\d e"


# --- kpartx ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    (["-a", "img"], ["-a", "--", "img"]),
    (["-av", "-p", "-part", "img"], ["-a", "-v", "-p-part", "--", "img"]),
    (["-a", "-p", "", "img"], ["-a", "-p", "", "--", "img"]),
    (["img", "-d", "-f"], ["-d", "--", "img"]),
    (["-l", "-u", "-rn", "img"], ["-u", "-r", "-n", "--", "img"]),    # the last action wins
    (["-s", "-pX", "img"], ["-l", "-s", "-pX", "--", "img"]),     # -l: kpartx's default
])
def test_kpartx_translation(argv, expected):
    assert kpartx_dropin.translate(argv) == expected


@pytest.mark.parametrize("argv, line", [
    ([], ""), (["-a"], ""), (["-a", "x", "y"], ""),
    (["-z", "x"], "kpartx: invalid option -- 'z'\n"),
    (["-a", "--long", "x"], "kpartx: invalid option -- '-'\n"),   # plain getopt: no long options
    (["-p"], "kpartx: option requires an argument -- 'p'\n"),
])
def test_kpartx_usage(capfd, argv, line):
    capfd.readouterr()
    assert cli.main(["kpartx", *argv]) == 1
    out, err = capfd.readouterr()
    assert err == line and out.startswith("Usage: kpartx")


def test_kpartx_missing_device_and_unimplemented_options(capfd, tmp_path):
    capfd.readouterr()
    missing = str(tmp_path / "nothing")
    assert cli.main(["kpartx", "-a", missing]) == 1
    assert capfd.readouterr() == (f"failed to stat() {missing}\n", "")
    assert cli.main(["kpartx", "-g", "-a", missing]) == 1
    assert capfd.readouterr() == ("", "kpartx: option -g is not implemented by loopcore\n")
    assert cli.main(["kpartx", "-t", "dos", missing]) == 1
    assert capfd.readouterr() == ("", "kpartx: option -t is not implemented by loopcore\n")


@pytest.mark.parametrize("name", ["dmsetup", "kpartx"])
def test_invoked_under_the_tools_name(tmp_path, name):
    """A symlink named like the tool runs the drop-in (its usage says so)."""
    link = tmp_path / name
    script = tmp_path / "run.py"
    script.write_text("import sys\nfrom loopcore.cli import main\nsys.exit(main())\n")
    link.symlink_to(script)
    proc = subprocess.run([sys.executable, str(link), "-z"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert f"{name}: invalid option -- 'z'" in proc.stderr
