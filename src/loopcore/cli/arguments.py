"""What users type: sizes (losetup's syntax) and loop device references.

Each has one parser raising loopcore's errors, and an argparse ``type=``
wrapper for arguments checked while parsing (where any error is a usage
error, exit status 2).
"""
from __future__ import annotations

import argparse
import builtins
import os
import re

from .. import loop
from .._validate import check_number
from ..errors import Error, ValueError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from .._namedtuple import NamedTuple

__all__ = ["parse_size", "size_arg", "seconds_arg", "LoopRef", "loop_ref", "loop_number_arg"]


# --- sizes ------------------------------------------------------------------------

# Patterns, compiled on first use by re's own cache: a command that reads
# no size or device name (``loopcore list``) does not compile them.
_SIZE_PATTERN = (
    r"\s*(?P<int>0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)"
    r"(?:\.(?P<frac>[0-9]*))?"
    r"(?:(?P<suffix>[KMGTPEZYkmgtpezy])(?P<unit>iB|ib|B|b)?)?\Z")
_POWERS = "kmgtpezy"


def parse_size(text: str) -> int:
    """A size as losetup reads it: ``4096``, ``0x1000``, ``1K``/``1KiB`` (1024), ``1KB`` (1000),
    ``1.5M``; suffixes K M G T P E Z Y in either case.  ValueError otherwise.
    """
    from fractions import Fraction  # here: only sizes need it (start-up time)

    m = re.match(_SIZE_PATTERN, text)
    if not m or (m.group("frac") is not None and not m.group("suffix")):
        raise ValueError(f"invalid size: {text!r}")
    digits = m.group("int")
    # strtoumax base 0: 0x hex, leading-zero octal, else decimal
    value = Fraction(int(digits, 8) if len(digits) > 1 and digits[0] == "0"
                     and digits[1] not in "xX" else int(digits, 0))
    suffix = m.group("suffix")
    if suffix:
        base = 1000 if m.group("unit") in ("B", "b") else 1024
        scale = base ** (_POWERS.index(suffix.lower()) + 1)
        if m.group("frac"):
            value += Fraction(int(m.group("frac")), 10 ** len(m.group("frac")))
        value *= scale
    result = int(value)
    if result >= 1 << 64:
        raise ValueError(f"size too large: {text!r}")
    return result


def size_arg(text: str) -> int:
    """:func:`parse_size` as an argparse type."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def seconds_arg(text: str) -> float:
    """A number of seconds >= 0 (``--wait=2.5``) as an argparse type."""
    try:
        value = float(text)
    except builtins.ValueError:  # float()'s, not loopcore's
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):  # also NaN
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


# --- loop device references ------------------------------------------------------

# ASCII digits only: str.isdigit() and \d also take other scripts' digits.
_LOOP_NAME = r"(?:(?:/dev/)?loop)?([0-9]+)\Z"


class LoopRef(NamedTuple):
    """A loop device as the command line named it."""

    #: N of /dev/loopN
    number: int
    #: the node to open it by: the path given, else ``/dev/loopN``
    node: str


def loop_ref(text: str) -> LoopRef:
    """The loop device ``text`` names: ``N``, ``loopN`` or ``/dev/loopN``
    (the kernel's names: neither the device nor its node need exist), or
    any other path of a loop device's block node (``stat()``\\ ed: a
    symlink, a node made elsewhere).

    Errors: ValueError for a number no loop device can have; for a path,
    the OSError of ``stat()`` or NotALoopDeviceError, naming the path.
    """
    m = re.match(_LOOP_NAME, text)
    if m:
        try:
            number = check_number(int(m.group(1)))
        except ValueError as e:
            raise ValueError(f"{text}: {e}") from None
        return LoopRef(number, loop.device_path(number))
    return LoopRef(loop.loop_number_of(text, os.stat(text)), text)


def loop_number_arg(text: str) -> int:
    """:func:`loop_ref`'s number as an argparse type: an argument that must
    name a loop device, or the command is misused."""
    try:
        return loop_ref(text).number
    except OSError as e:  # a path that is not a loop node: say why
        raise argparse.ArgumentTypeError(
            f"not a loop device number or node: {text!r} ({e.strerror or e})") from e
    except Error as e:  # ValueError: names the text already
        raise argparse.ArgumentTypeError(str(e)) from e
