"""glibc's ``getopt_long``, for the drop-ins that take another tool's
command line as it is (``loopcore-losetup``, ``loopcore-dmsetup``, and
``loopcore-kpartx``, whose plain getopt is this with ``longopts`` None).

What glibc accepts, they accept: short options clustered (``-fP``), a
short option's argument joined or next (``-o1M``, ``-o 1M``), long
options abbreviated to a unique prefix (``--sh``), ``--opt=value`` and
``--opt value``, optional arguments only as ``--opt=value``, operands
anywhere (permuted to the end; with POSIXLY_CORRECT set, or ``+``
leading ``shortopts``, the first ends the options, as there), ``--``
ending the options.  A misuse is a
:class:`GetoptError` carrying glibc's own message (without the program
name), so a drop-in prints what the tool it stands in for prints.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is no run-time import of a ``loopcore list`` process
    from typing import Iterator, List, Optional, Sequence, Tuple

__all__ = ["NO_ARGUMENT", "REQUIRED_ARGUMENT", "OPTIONAL_ARGUMENT", "LongOption",
           "GetoptError", "getopt_long"]

NO_ARGUMENT, REQUIRED_ARGUMENT, OPTIONAL_ARGUMENT = 0, 1, 2


class LongOption:
    """One entry of a ``struct option`` table: ``name``, ``has_arg``, and
    ``key``, what the parse yields for it (its short letter, or its long
    name).  A plain class: a NamedTuple class is ~20 us of every
    process's start-up."""

    __slots__ = ("name", "has_arg", "key")

    def __init__(self, name: str, has_arg: int, key: str) -> None:
        self.name, self.has_arg, self.key = name, has_arg, key

    def __repr__(self) -> str:
        return f"LongOption({self.name!r}, {self.has_arg}, {self.key!r})"


class GetoptError(Exception):
    """A command line getopt_long refuses; the message is glibc's line."""


def _long(arg: str, argv: Sequence[str], i: int, longopts: Sequence[LongOption],
          ) -> Tuple[LongOption, Optional[str], int]:
    """The long option ``arg`` (``--name[=value]``) names, its value, and
    the index of the next argument."""
    body = arg[2:]
    name, eq, value = body.partition("=")
    exact = [o for o in longopts if o.name == name]
    matches = exact or [o for o in longopts if o.name.startswith(name)]
    if not matches:
        raise GetoptError(f"unrecognized option '--{body}'")
    if len(matches) > 1:
        names = " ".join(f"'--{o.name}'" for o in matches)
        raise GetoptError(f"option '--{body}' is ambiguous; possibilities: {names}")
    opt = matches[0]
    if opt.has_arg == NO_ARGUMENT and eq:
        raise GetoptError(f"option '--{opt.name}' doesn't allow an argument")
    if opt.has_arg == REQUIRED_ARGUMENT and not eq:
        if i + 1 >= len(argv):
            raise GetoptError(f"option '--{opt.name}' requires an argument")
        return opt, argv[i + 1], i + 2
    return opt, value if eq else None, i + 1


def getopt_long(argv: Sequence[str], shortopts: str,
                longopts: Optional[Sequence[LongOption]],
                operands: List[str]) -> Iterator[Tuple[str, Optional[str]]]:
    """Yield ``(key, value)`` for each option of ``argv`` (without the
    program name), in order; append the operands to ``operands``.

    ``shortopts`` is getopt's string (``"ab:c"``: ``b`` takes an argument;
    a leading ``+``: the first operand ends the options).
    ``longopts`` None is plain ``getopt``: ``--name`` is then a cluster of
    short letters, the first of them ``-`` (glibc's ``invalid option -- '-'``).
    Raises :class:`GetoptError` at the first misuse, after yielding the
    options before it (a tool checks each option as it comes).
    """
    permute = not shortopts.startswith("+") and "POSIXLY_CORRECT" not in os.environ
    shortopts = shortopts.lstrip("+")
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            operands.extend(argv[i + 1:])
            return
        if arg.startswith("--") and longopts is not None:
            opt, value, i = _long(arg, argv, i, longopts)
            yield opt.key, value
            continue
        if not arg.startswith("-") or arg == "-":
            if not permute:
                operands.extend(argv[i:])
                return
            operands.append(arg)
            i += 1
            continue
        i += 1
        for pos in range(1, len(arg)):
            letter = arg[pos]
            at = shortopts.find(letter)
            if at < 0 or letter == ":":
                raise GetoptError(f"invalid option -- '{letter}'")
            if shortopts[at + 1:at + 2] != ":":
                yield letter, None
                continue
            if pos + 1 < len(arg):
                yield letter, arg[pos + 1:]
            elif i < len(argv):
                yield letter, argv[i]
                i += 1
            else:
                raise GetoptError(f"option requires an argument -- '{letter}'")
            break
