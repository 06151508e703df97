"""A subcommand's command line as a table, parsed by :mod:`.getopt_long`
(the drop-ins' engine: one engine), its ``--help`` rendered from the same
table.

A :class:`Command` row holds the subcommand's :class:`Option` s and
:class:`Operand` s; :func:`parse` turns ``argv`` into :class:`Args`
(one attribute per ``dest``, ``func`` the handler) or raises
:class:`~._rules.UsageError` naming the command (exit status 2, one
line).  What getopt accepts, it accepts: clusters (``-rP``), ``-o1M``,
long options abbreviated to a unique prefix, operands anywhere, ``--``.
An option with an OPTIONAL value takes it only as ``--opt=value``; the
word after a bare ``--opt`` that the option would take as its value is
refused (a usage error), not silently made an operand: ``detach --wait
30 /dev/loop3`` must not detach ``/dev/loop30``.

Values are converted as they are parsed: a converter raises ValueError
(its message says what is wrong with the text) and the parse turns that
into the usage error ``argument -o/--offset: MESSAGE``.
"""
from __future__ import annotations

from ._rules import PROG, UsageError, terminal_columns, write_text
from .getopt_long import (
    NO_ARGUMENT,
    OPTIONAL_ARGUMENT,
    REQUIRED_ARGUMENT,
    GetoptError,
    LongOption,
    getopt_long,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["NO_ARGUMENT", "REQUIRED_ARGUMENT", "OPTIONAL_ARGUMENT", "Option", "Operand",
           "Command", "Args", "choice", "parse", "help_text", "render_help", "wrap", "two_columns",
           "HELP_OPTION"]


class Args:
    """The parsed command line: an attribute per option and operand
    (``dest``), ``func`` (the handler) and ``usage_prog`` (``loopcore
    list``: the help a handler's :class:`UsageError` points at)."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Args({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...


# Plain classes, not NamedTuples: a NamedTuple class costs a ``loopcore
# list`` process about 0.1 ms to make, and these are a table's rows.

class Option:
    """One option: ``-s``/``--long``, what it takes, where it goes.

    ``takes``: NO_ARGUMENT (a flag: True when given), REQUIRED_ARGUMENT or
    OPTIONAL_ARGUMENT (only ``--long=VALUE``; ``const`` without one).
    ``convert``: text -> value, raising ValueError saying what is wrong
    (None: the text).  ``default``: the value when the option is not given
    (a flag's is False).
    """

    __slots__ = ("short", "long", "dest", "help", "takes", "metavar", "convert", "default",
                 "const")

    def __init__(self, short: str, long: str, dest: str, help: str,
                 takes: int = NO_ARGUMENT, metavar: str = "",
                 convert: Optional[Callable[[str], object]] = None,
                 default: object = None, const: object = None) -> None:
        self.short, self.long, self.dest, self.help = short, long, dest, help
        self.takes, self.metavar, self.convert = takes, metavar, convert
        self.default, self.const = default, const

    def __repr__(self) -> str:
        return f"Option({self.flags})"

    @property
    def flags(self) -> str:
        """``-o/--offset``, as usage errors name it."""
        return "/".join(f for f in (self.short and f"-{self.short}", f"--{self.long}") if f)


class Operand:
    """One operand (a word that is no option), or several: ``nargs`` "1"
    exactly one, "?" at most one, "*" any number, "+" at least one."""

    __slots__ = ("dest", "metavar", "nargs", "convert", "help")

    def __init__(self, dest: str, metavar: str, nargs: str = "1",
                 convert: Optional[Callable[[str], object]] = None, help: str = "") -> None:
        self.dest, self.metavar, self.nargs, self.convert, self.help = \
            dest, metavar, nargs, convert, help

    def __repr__(self) -> str:
        return f"Operand({self.metavar})"

    @property
    def label(self) -> str:
        """What usage errors call it: the metavar, or the dest where the
        metavar lists the choices (``{add,remove}``), as argparse did."""
        return self.dest if self.metavar.startswith("{") else self.metavar


class Command:
    """A subcommand: its name, handler, help and command line; ``usage``
    the usage line's operands where the metavars do not say it (attach)."""

    __slots__ = ("name", "handler", "help", "options", "operands", "usage")

    def __init__(self, name: str, handler: Callable[[Args], int], help: str,
                 options: Tuple[Option, ...] = (), operands: Tuple[Operand, ...] = (),
                 usage: str = "") -> None:
        self.name, self.handler, self.help = name, handler, help
        self.options, self.operands, self.usage = options, operands, usage

    def __repr__(self) -> str:
        return f"Command({self.name})"

    @property
    def prog(self) -> str:
        """``loopcore NAME``: usage errors and the help name it."""
        return f"{PROG} {self.name}"


#: every command's -h/--help
HELP_OPTION = Option("h", "help", "help", "show this help message and exit")


def choice(*words: str) -> Callable[[str], str]:
    """A converter taking only ``words``."""
    def convert(text: str) -> str:
        if text not in words:
            listed = ", ".join(repr(w) for w in words)
            raise ValueError(f"invalid choice: {text!r} (choose from {listed})")
        return text
    return convert


def _converted(what: str, convert: Optional[Callable[[str], object]], text: str,
               prog: str) -> object:
    if convert is None:
        return text
    try:
        return convert(text)
    except ValueError as e:
        raise UsageError(f"argument {what}: {e}", prog) from None


def parse(command: Command, argv: Sequence[str]) -> Optional[Args]:
    """``argv`` (after the command's name) as :class:`Args`; None when it
    asked for ``--help`` (printed)."""
    prog = command.prog
    options = (HELP_OPTION, *command.options)
    shortopts = "".join(o.short + (":" if o.takes == REQUIRED_ARGUMENT else "")
                        for o in options if o.short)
    by_key = {o.short or o.long: o for o in options}
    longopts = [LongOption(o.long, o.takes, o.short or o.long) for o in options]
    values: Dict[str, object] = {o.dest: False if o.takes == NO_ARGUMENT else o.default
                                 for o in command.options}
    words: List[str] = []
    try:
        for key, text in getopt_long(argv, shortopts, longopts, words):
            option = by_key[key]
            if option is HELP_OPTION:
                render_help(command)
                return None
            if option.takes == NO_ARGUMENT:
                values[option.dest] = True
            elif text is None:
                values[option.dest] = option.const
            else:
                values[option.dest] = _converted(option.flags, option.convert, text, prog)
    except GetoptError as e:
        raise UsageError(str(e), prog) from None
    _refuse_separate_optional_values(command, argv)
    values.update(_operands(command, words))
    return Args(func=command.handler, usage_prog=prog, **values)


def _refuse_separate_optional_values(command: Command, argv: Sequence[str]) -> None:
    """A usage error for ``--opt VALUE`` where ``--opt`` takes an optional
    value: argparse took VALUE, getopt makes it an operand (a file to
    attach, a device to detach); neither guess is safe, so say how."""
    optional = [o for o in command.options if o.takes == OPTIONAL_ARGUMENT]
    for i, word in enumerate(argv[:-1]):
        if word == "--":
            return
        if not word.startswith("--") or "=" in word:
            continue
        named = [o for o in optional if o.long.startswith(word[2:])]
        if len(named) != 1 or named[0].convert is None:
            continue
        try:
            named[0].convert(argv[i + 1])
        except ValueError:
            continue  # not a value of it: an operand
        option = named[0]
        raise UsageError(f"argument --{option.long}: its value goes after '=': "
                         f"--{option.long}={argv[i + 1]}", command.prog)


def _operands(command: Command, words: List[str]) -> Dict[str, object]:
    """Deal ``words`` out to the command's operands, in order: a required
    one takes its word while there is one; an optional or variadic one
    leaves enough for the required ones after it."""
    values: Dict[str, object] = {}
    prog = command.prog
    at = 0
    specs = command.operands
    for n, spec in enumerate(specs):
        available = len(words) - at - sum(1 for s in specs[n + 1:] if s.nargs in ("1", "+"))
        if spec.nargs in ("1", "+") and at >= len(words):
            missing = ", ".join(s.label for s in specs[n:] if s.nargs in ("1", "+"))
            raise UsageError(f"the following arguments are required: {missing}", prog)
        take = {"1": 1, "?": min(1, max(available, 0)), "*": max(available, 0),
                "+": max(available, 1)}[spec.nargs]
        taken = [_converted(spec.label, spec.convert, w, prog) for w in words[at:at + take]]
        at += take
        values[spec.dest] = taken if spec.nargs in ("*", "+") else taken[0] if taken else None
    if at < len(words):
        raise UsageError(f"unrecognized arguments: {' '.join(words[at:])}", prog)
    return values


# --- help -----------------------------------------------------------------------

def wrap(text: str, width: int, indent: str = "") -> List[str]:
    """``text``'s words in lines of at most ``width`` columns (a longer
    word alone), each after ``indent`` (textwrap would import re)."""
    lines: List[str] = []
    line = ""
    for word in text.split():
        if line and len(indent) + len(line) + 1 + len(word) > width:
            lines.append(indent + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(indent + line)
    return lines


def two_columns(rows: Sequence[Tuple[str, str]], width: int) -> List[str]:
    """argparse's layout of ``(invocation, help)`` rows: the help in a
    column after the longest invocation (at most 24), wrapped."""
    column = min(max((len(left) for left, _ in rows), default=0) + 4, 26)
    lines: List[str] = []
    for left, text in rows:
        helped = wrap(text, width, " " * column)
        head = f"  {left}"
        if helped and len(head) <= column - 2:
            lines.append(head.ljust(column) + helped[0].lstrip())
            lines.extend(helped[1:])
        else:
            lines.append(head)
            lines.extend(helped)
    return lines


def _invocation(option: Option) -> str:
    value = option.metavar or option.dest.upper()
    long = f"--{option.long}" + ("" if option.takes == NO_ARGUMENT else
                                 f" {value}" if option.takes == REQUIRED_ARGUMENT
                                 else f"[={value}]")
    return f"-{option.short}, {long}" if option.short else long


def _usage_operands(command: Command) -> str:
    if command.usage:
        return command.usage
    shapes = {"1": "{}", "?": "[{}]", "*": "[{} ...]", "+": "{} [{} ...]"}
    return " ".join(shapes[o.nargs].format(o.metavar, o.metavar) for o in command.operands)


def help_text(command: Command) -> str:
    """``loopcore COMMAND --help``: usage, what it does, its operands and options."""
    width = terminal_columns() - 2
    lines = [f"usage: {command.prog} [options] {_usage_operands(command)}".rstrip(), ""]
    lines += wrap(command.help, width) + [""]
    described = [(o.metavar, o.help) for o in command.operands if o.help]
    if described:
        lines += ["operands:", *two_columns(described, width), ""]
    rows = [(_invocation(o), o.help) for o in (HELP_OPTION, *command.options)]
    lines += ["options:", *two_columns(rows, width)]
    return "\n".join(lines) + "\n"


def render_help(command: Command) -> None:
    """Print :func:`help_text` (output like any other: a lost help fails)."""
    write_text(help_text(command))
