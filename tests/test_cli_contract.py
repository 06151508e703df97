"""The contract every ``loopcore`` command follows, loop, dm and dmlog alike:
exit status 0 done, 1 failed, 2 usage error (returned by ``cli.main``,
never raised), 130 Ctrl-C; an error is one line on stderr naming the file
or device; output that cannot be written is a failure, not a traceback;
extension subcommands and lazy imports.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import List, Tuple

import pytest

import loopcore
from loopcore import cli
from loopcore.cli.loop_parsers import COMMANDS as LOOP_COMMANDS

from cli_runner import (
    STDOUT_REASONS,
    assert_clean_stderr,
    loopcore_cmd,
    loopcore_redirected,
    one_line,
)
from conftest import attached, bound_under, fresh_number

MiB = 1 << 20


# --- error paths -----------------------------------------------------------------------

USAGE_ERRORS = [
    [],
    ["frobnicate"],
    ["--bogus"],
    ["attach"],
    ["attach", "-o", "abc", "/x"],
    ["attach", "--sizelimit", "1Q", "/x"],
    ["attach", "-b", "", "/x"],
    ["attach", "--direct-io=maybe", "/x"],
    ["attach", "--direct-io", "off", "/x"],  # an optional value only as --direct-io=off
    ["detach", "--wait", "30", "/dev/loop3"],  # not /dev/loop30: --wait=30
    ["attach", "-L", "/x", "/y"],          # FILE...: reuse takes one file
    ["attach", "/dev/loop0", "/x", "/y"],  # DEV FILE: a chosen device takes one
    ["detach"],
    ["detach", "--all", "/dev/loop0"],
    ["list", "--all", "/dev/loop0"],
    ["list", "--bogus"],
    ["find"],
    ["find", "-o", "x", "/x"],
    ["info"],
    ["set-capacity"],
    ["control"],
    ["control", "frob"],
    ["control", "add"],
    ["control", "remove"],
    ["control", "add", "abc"],
    ["control", "add", "-1"],
    ["control", "add", "2147483648"],      # past the C int LOOP_CTL_ADD takes
    ["control", "remove", "loop99999999999999999999"],
    ["control", "get-free", "3"],
    ["dm"],
    ["dm", "frob"],
    ["dm", "info", "--bogus"],
    ["dm", "info", "a/b"],                 # a name dm refuses, before device-mapper
    ["dm", "remove"],                      # found by the handler, not argparse
    ["dmlog"],
    ["dmlog", "serve", "extra"],
    ["dmlog", "serve", "--busy-poll-us", "-1"],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=lambda a: " ".join(a) or "<none>")
def test_usage_errors_exit_2(argv):
    r = loopcore_cmd(*argv)
    assert r.returncode == 2, r.stderr
    assert r.stdout == b""
    one_line(r.stderr)


@pytest.mark.parametrize("argv", [a for a in USAGE_ERRORS if a[:1] != ["control"]],
                         ids=lambda a: " ".join(a) or "<none>")
def test_main_returns_the_usage_status(argv, capsys):
    """``cli.main`` returns 2 for argparse's usage errors as for a handler's:
    a caller embedding it gets the status, not SystemExit."""
    assert cli.main(argv) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("loopcore") and err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [["--help"], ["-V"], ["dm", "--help"], ["dm", "info", "-h"],
                                  ["dmlog", "serve", "--help"]], ids=" ".join)
def test_main_returns_0_for_help_and_version(argv, capsys):
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith(("usage: loopcore", "loopcore ")) and err == ""


@pytest.mark.parametrize("name", list(LOOP_COMMANDS))
def test_a_loop_commands_help_is_rendered_from_its_table(name, capsys):
    command = LOOP_COMMANDS[name]
    for flag in ("--help", "-h"):
        assert cli.main([name, flag]) == 0
        out, err = capsys.readouterr()
        assert out.startswith(f"usage: loopcore {name} ") and err == "", out
        for option in command.options:
            shown = f"-{option.short}, --{option.long}" if option.short else f"--{option.long}"
            assert shown in out, (name, option)
        assert command.help.split()[0] in out
    assert cli.main(["--help"]) == 0
    assert f"\n  {name} " in capsys.readouterr().out


def test_control_usage_errors_before_opening_loop_control(monkeypatch, capsys):
    """Usage errors come before /dev/loop-control is opened, so they read the
    same as root, as a user and in a container without the node."""
    def opened() -> None:
        raise AssertionError("/dev/loop-control opened before the arguments were checked")
    monkeypatch.setattr(loopcore.loop, "LoopControl", opened)
    for argv in (["control", "add"], ["control", "remove"], ["control", "get-free", "3"]):
        assert cli.main(argv) == cli.EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert err.startswith("loopcore: control ") and err.count("\n") == 1, err


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_runtime_errors_exit_1(tmp_path, make_image):
    img = make_image(size=MiB)
    missing = tmp_path / "missing.img"
    cases: List[Tuple[List[str], str]] = [
        (["attach", str(missing)], f"loopcore: {missing}: No such file or directory"),
        (["attach", str(tmp_path)], f"loopcore: {tmp_path}: "),
        (["attach", "-b", "1000", str(img)], "block_size must be a power of two"),
        (["attach", "-o", "2M", str(img)], f"loopcore: {img}: offset 2097152 is "),
        (["detach", "/dev/null"], "loopcore: /dev/null: detach failed: not a loop device"),
        (["detach", str(missing)],
         f"loopcore: {missing}: detach failed: No such file or directory"),
        (["list", "/dev/null"], "loopcore: /dev/null: not a loop device"),
        (["list", str(missing)], f"loopcore: {missing}: No such file or directory"),
        (["list", "-O", "NAME,FOO"], "loopcore: unknown column: FOO"),
        (["list", "loop99999999"], "loopcore: loop99999999: no such loop device"),
        (["info", "/dev/null"], "loopcore: /dev/null: not a loop device"),
        (["info", "99999999"], "loopcore: 99999999: no such loop device"),
        (["set-capacity", "/dev/null"], "loopcore: /dev/null: not a loop device"),
        (["set-capacity", str(missing)], f"loopcore: {missing}: No such file or directory"),
        (["find", "", "--json"], "loopcore: backing path is empty"),
        (["control", "remove", "99999999"], "loopcore: /dev/loop99999999: "),
    ]
    for argv, message in cases:
        r = loopcore_cmd(*argv)
        assert r.returncode == 1, (argv, r.stderr)
        assert r.stdout == b"", argv
        line = one_line(r.stderr)
        assert line.startswith(message) or message in line, (argv, line)
    assert loopcore.find(img) == []


# --- output that cannot be written ---------------------------------------------------------
# stdout closed (sys.stdout is None), full (ENOSPC) or a pipe nobody reads
# (EPIPE; Python ignores SIGPIPE), and stderr likewise: no traceback, no
# "Exception ignored" at exit, no hang.  attach and control add, which make
# what they print, undo it when they cannot print it.

@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("stderr", ["keep", "closed"])
@pytest.mark.parametrize("stdout", ["full", "closed", "broken-pipe"])
def test_attach_that_cannot_print_detaches(make_image, tmp_path, stdout, stderr):
    img = make_image()
    r = loopcore_redirected(["attach", str(img)], stdout=stdout, stderr=stderr)
    # Nobody learnt which device it was: it must not stay bound.
    assert bound_under(tmp_path) == {}
    assert r.returncode == 1, r.stderr
    lines = assert_clean_stderr(r.stderr, stdout)
    if stderr == "keep":
        assert len(lines) == 1
        assert re.fullmatch(r"loopcore: /dev/loop\d+: cannot print the device's name "
                            rf"\({STDOUT_REASONS[stdout]}\); detached it again", lines[0]), lines[0]
    else:
        assert lines == []


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("stdout", ["full", "closed", "broken-pipe"])
def test_control_add_that_cannot_print_removes(stdout):
    n = fresh_number()
    try:
        r = loopcore_redirected(["control", "add", str(n)], stdout=stdout)
        assert not os.path.exists(f"/sys/block/loop{n}"), "the device it could not print stayed"
        assert r.returncode == 1
        assert assert_clean_stderr(r.stderr, stdout) == [
            f"loopcore: /dev/loop{n}: cannot print the device's name "
            f"({STDOUT_REASONS[stdout]}); removed it again"]
    finally:
        if os.path.exists(f"/sys/block/loop{n}"):
            with loopcore.LoopControl() as ctl:
                ctl.remove(n)



@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_every_subcommand_with_broken_stdout_or_stderr(make_image):
    """Each subcommand under each broken stream: the exit status it would
    have (1 where its output was lost), at most one line on stderr."""
    from concurrent.futures import ThreadPoolExecutor
    img = make_image()
    broken = ("full", "closed", "broken-pipe")
    with attached((img, {})) as (dev,):
        # (argv, writes to stdout, exit status with every stream fine)
        printing: List[Tuple[List[str], bool, int]] = [
            (["list"], True, 0), (["list", "--json", dev.path], True, 0),
            (["list", "--raw", "-n"], True, 0), (["find", str(img)], True, 0),
            (["find", "--json", str(img)], True, 0), (["info", dev.path], True, 0),
            (["info", "--json", dev.path], True, 0), (["control", "get-free"], True, 0),
            (["--help"], True, 0), (["--version"], True, 0), (["dm", "--help"], True, 0),
            (["dmlog", "serve", "--help"], True, 0),
        ]
        silent: List[Tuple[List[str], bool, int]] = [
            (["set-capacity", dev.path], False, 0), (["detach", "/dev/null"], False, 1),
            (["list", "/dev/null"], False, 1), (["frobnicate"], False, 2),
        ]
        # stdout broken for every command; stderr broken for those that print
        # errors (and one that succeeds); both for a few.
        runs = [(argv, writes, status, out, "keep") for argv, writes, status in printing + silent
                for out in broken]
        runs += [(argv, writes, status, "keep", err) for argv, writes, status in
                 silent[1:] + printing[:1] for err in broken]
        runs += [(argv, writes, status, mode, mode) for argv, writes, status in
                 (printing[0], printing[8], silent[1]) for mode in broken]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda run: loopcore_redirected(
                run[0], stdout=run[3], stderr=run[4]), runs))
        for (argv, writes, status, out, err), r in zip(runs, results):
            context = (argv, out, err)
            lost = writes and out != "keep"
            assert r.returncode == (cli.EXIT_FAILURE if lost else status), (context, r.stderr)
            lines = assert_clean_stderr(r.stderr, context)
            if err == "keep" and lost and out != "broken-pipe":
                assert len(lines) == 1 and STDOUT_REASONS[out] in lines[0], (context, lines)
        assert loopcore.find(img)[0].number == dev.number  # still bound: nothing undid it


# --- extension hook ------------------------------------------------------------------------

EXTENSION = '''
def add_parser(subparsers):
    p = subparsers.add_parser("{name}", help="test extension")
    p.add_argument("--fail", choices=("oserror", "valueerror"))
    p.set_defaults(func=handler)

def handler(args):
    import errno
    if args.fail == "oserror":
        raise OSError(errno.EIO, "Input/output error", "/dev/ext0")
    if args.fail == "valueerror":
        raise ValueError("bad value for ext")
    print("extension ran")
    return 3
'''


@pytest.fixture
def extension_dir(tmp_path, monkeypatch):
    pkg = tmp_path / "lcext"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(EXTENSION.format(name="ext-good"))
    (pkg / "broken.py").write_text("import lcext.not_there_either\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return pkg


def test_extension_subcommands(extension_dir, monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES",
                        {"ext-good": "lcext.good", "ext-broken": "lcext.broken"})
    assert cli.main(["ext-good"]) == 3
    assert capsys.readouterr().out == "extension ran\n"
    assert cli.main(["ext-good", "--fail", "oserror"]) == 1
    assert capsys.readouterr().err == "loopcore: /dev/ext0: Input/output error\n"
    assert cli.main(["ext-good", "--fail", "valueerror"]) == 1
    assert capsys.readouterr().err == "loopcore: bad value for ext\n"
    # only the named extension is imported: the broken one is not touched
    # by a core subcommand or by another extension's (a usage error runs the
    # core handler without needing /dev/loop-control, so this holds anywhere)...
    assert cli.main(["control", "add"]) == cli.EXIT_USAGE
    capsys.readouterr()
    # ...but a module that fails to import is a bug, not a missing command
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser(["ext-broken"])
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser([])  # help lists every extension


@pytest.mark.parametrize("argv, imported", [
    (["list", "--json", "/dev/null"], []),
    (["dm", "splitname", "a-b"], ["loopcore.cli.dm", "loopcore.dm"]),
    (["dmlog", "serve", "--lock-file", "/nonexistent-dir/lock"],
     ["loopcore.cli.dmlog", "loopcore.dmlog"]),
])
def test_a_command_imports_only_its_own_module(argv, imported):
    """``loopcore list`` does not import device-mapper or the dmlog server;
    ``loopcore dm`` does not import the dmlog server, and the other way round."""
    watched = ("loopcore.dm", "loopcore.dmlog", "loopcore.cli.dm", "loopcore.cli.dmlog")
    code = (f"import sys, loopcore.cli as c; c.main({argv!r}); "
            f"print(sorted(m for m in sys.modules if m in {watched!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == str(imported), out.stderr


def test_version_from_one_source():
    from importlib.metadata import version

    from loopcore._version import __version__
    assert loopcore.__version__ == __version__ == version("loopcore")
    for flag in ("--version", "-V"):
        proc = loopcore_cmd(flag)
        assert proc.returncode == 0
        assert proc.stdout.decode() == f"loopcore {__version__}\n"
