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

import pytest
from hypothesis import example, given
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


# --- the loop commands' parser against references --------------------------------------

def _gnu(command, argv):
    """What Python's getopt.gnu_getopt (glibc's rules, another
    implementation) makes of ``argv`` for ``command``'s table: {dest:
    value} and the operands, or None where it refuses the command line."""
    import getopt

    from loopcore.cli.table_parser import REQUIRED_ARGUMENT
    options = [o for o in command.options]
    shortopts = "h" + "".join(o.short + (":" if o.takes == REQUIRED_ARGUMENT else "")
                              for o in options if o.short)
    longopts = ["help"] + [o.long + ("=" if o.takes == REQUIRED_ARGUMENT else "")
                           for o in options]
    try:
        pairs, operands = getopt.gnu_getopt(argv, shortopts, longopts)
    except getopt.GetoptError:
        return None
    values = {}
    for flag, value in pairs:
        (option,) = [o for o in options if flag in (f"-{o.short}", f"--{o.long}")]
        values[option.dest] = value if option.takes == REQUIRED_ARGUMENT else True
    return values, operands


LIST_WORDS = st.lists(st.sampled_from(
    ["-a", "--all", "-J", "--js", "--json", "-O", "NAME", "--output", "--output=RO", "--out",
     "--output-all", "--output-a", "-n", "-nJ", "-nO", "-OBACK-FILE", "--raw", "--r", "-x",
     "--bogus", "--", "-", "loop0", "7", "/dev/loop1", "--all=1"]), max_size=7)


@examples(300)
@given(LIST_WORDS)
def test_the_table_parser_reads_options_as_getopt_does(argv):
    from loopcore.cli.table_parser import parse
    command = LOOP_TABLE["list"]
    theirs = _gnu(command, argv)
    if theirs is None:
        with pytest.raises(cli.UsageError):
            parse(command, argv)
        return
    if "-h" in argv or "--help" in argv:
        return  # help, not a parse
    values, operands = theirs
    args = parse(command, argv)
    assert args is not None
    for option in command.options:
        expected = values.get(option.dest, False if option.takes == 0 else option.default)
        assert getattr(args, option.dest) == expected, (argv, option.long)
    assert args.devices == operands


_SIZE = (r"\s*(?P<int>0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)(?:\.(?P<frac>[0-9]*))?"
         r"(?:(?P<suffix>[KMGTPEZYkmgtpezy])(?P<unit>iB|ib|B|b)?)?\Z")


def _reference_size(text):
    """losetup's size grammar as the regular expression it was: the value,
    or None where it is no size."""
    import re
    from fractions import Fraction
    m = re.match(_SIZE, text)
    if not m or (m.group("frac") is not None and not m.group("suffix")):
        return None
    digits = m.group("int")
    value = Fraction(int(digits, 8) if len(digits) > 1 and digits[0] == "0"
                     and digits[1] not in "xX" else int(digits, 0))
    if m.group("suffix"):
        base = 1000 if m.group("unit") in ("B", "b") else 1024
        scale = base ** ("kmgtpezy".index(m.group("suffix").lower()) + 1)
        if m.group("frac"):
            value += Fraction(int(m.group("frac")), 10 ** len(m.group("frac")))
        value *= scale
    return int(value) if int(value) < 1 << 64 else None


SIZE_TEXT = st.one_of(
    st.text(st.sampled_from("0123456789xX.abcdefABEKMGTPZYkmiBb \t"), max_size=10),
    st.from_regex(_SIZE, fullmatch=True))


@examples(500)
@given(SIZE_TEXT)
@example("0x1EiB")  # a hex run that gives back its last digit as the suffix
@example("0x1eb")
@example(" 0x1.5K")
@example("08")
def test_parse_size_is_the_grammar_it_was(text):
    from loopcore.cli.arguments import parse_size
    expected = _reference_size(text)
    if expected is None:
        with pytest.raises(ValueError):
            parse_size(text)
    else:
        assert parse_size(text) == expected, text


@examples(300)
@given(st.one_of(st.from_regex(r"(?:(?:/dev/)?loop)?[0-9]{1,11}", fullmatch=True),
                 st.text(st.sampled_from("/devlop0123456789\u0661x"), max_size=12)))
def test_loop_names_are_the_grammar_they_were(text):
    import re

    from loopcore.cli.arguments import loop_ref
    m = re.match(r"(?:(?:/dev/)?loop)?([0-9]+)\Z", text)
    try:
        ref = loop_ref(text)
    except (OSError, ValueError):
        assert not m or int(m.group(1)) > 2**31 - 1, text
        return
    if m:
        assert ref.number == int(m.group(1)) and ref.node == f"/dev/loop{ref.number}"
    else:
        assert ref.node == text  # a path, stat()ed: a loop node
