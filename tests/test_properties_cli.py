"""Properties of the command line (hypothesis): ``loopcore.cli.main(argv)``
with arbitrary argv returns 0, 1 or 2, writes at most one line on stderr
and never a traceback, and never raises.

Only commands that change nothing are run (list, find, info, help and
version, dm's read-only commands, and words that name no command), so
that no example attaches, detaches or removes anything: a word in a
command's place that names (or abbreviates) another command is not drawn.
"""
from __future__ import annotations

from typing import List

from hypothesis import given
from hypothesis import strategies as st

from loopcore import cli
from loopcore.cli.dm import COMMANDS as DM_COMMANDS
from loopcore.cli.loop_parsers import COMMANDS as LOOP_TABLE

from properties import examples

SAFE_LOOP = ["list", "find", "info"]
SAFE_DM = ["ls", "table", "status", "info", "splitname", "deps", "targets", "version",
           "target-version"]
LOOP_COMMANDS = [*LOOP_TABLE, *cli.SUBCOMMAND_MODULES]


def _names_no_command(word: str, commands: List[str]) -> bool:
    return bool(word) and not any(c.startswith(word) for c in commands)


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               max_size=12)
OPTION_WORDS = st.sampled_from([
    "-a", "--all", "-J", "--json", "-O", "NAME,SIZELIMIT", "NAME,BOGUS", "--output-all", "-n",
    "--noheadings", "--raw", "-o", "1K", "--offset", "1x", "--help", "-h", "-V", "--", "-",
    "/dev/loop0", "/dev/loop999999", "/nonexistent", "/", "loop0", "7:0", "-1", "--showkeys",
    "--columns", "--noheadings", "-c", "--tree", "--target", "crypt", "x" * 200, "a\nb",
    "\u2028", "\udc80"])
ARGS = st.lists(st.one_of(OPTION_WORDS, TEXT), max_size=5)
ARGV = st.one_of(
    st.tuples(st.sampled_from(SAFE_LOOP + ["--help", "-V", "--bogus"]), ARGS).map(
        lambda t: [t[0], *t[1]]),
    st.tuples(st.sampled_from(SAFE_DM), ARGS).map(lambda t: ["dm", t[0], *t[1]]),
    st.tuples(TEXT.filter(lambda w: _names_no_command(w, LOOP_COMMANDS)), ARGS).map(
        lambda t: [t[0], *t[1]]),
    st.tuples(TEXT.filter(lambda w: _names_no_command(w, list(DM_COMMANDS))), ARGS).map(
        lambda t: ["dm", t[0], *t[1]]),
    ARGS.filter(lambda a: not a or a[0].startswith("-") and a[0] != "--").filter(
        lambda a: all(not w or _names_no_command(w, LOOP_COMMANDS) for w in a)),
)


@examples(300)
@given(ARGV)
def test_any_argv_exits_0_1_or_2_with_at_most_one_line(capsysbinary, argv):
    # bytes: a listing prints a backing file's name as the kernel has it,
    # which need not be UTF-8
    capsysbinary.readouterr()
    status = cli.main(argv)
    err = capsysbinary.readouterr().err.decode("utf-8", "surrogateescape")
    assert status in (0, 1, 2), (argv, status, err)
    assert "Traceback" not in err
    assert len(err.splitlines()) <= 1 and (not err or err.endswith("\n")), (argv, err)
    if status == 2:
        assert err.startswith("loopcore"), (argv, err)


def test_the_loop_commands_are_known():
    # the filter above needs the real list: a new command is excluded too
    assert {"attach", "detach", "list", "set-capacity", "control"} <= set(LOOP_COMMANDS)
