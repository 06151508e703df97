"""What users type: sizes (losetup's syntax) and loop device references.

Each has one parser raising loopcore's errors, and a converter for
:mod:`.table_parser` (its ValueError is a usage error, exit status 2).
Neither uses :mod:`re`: a ``loopcore attach`` or ``detach`` process does
not import it (start-up time).
"""
from __future__ import annotations

import builtins
import os

from .. import loop
from ..errors import Error, ValueError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple

__all__ = ["parse_size", "parse_seconds", "LoopRef", "loop_ref", "loop_number_arg"]


# --- sizes ------------------------------------------------------------------------

_POWERS = "kmgtpezy"
_SUFFIXES = "KMGTPEZYkmgtpezy"
_UNITS = ("iB", "ib", "B", "b")
_HEX = "0123456789abcdefABCDEF"


def _run_of(text: str, start: int, digits: str) -> int:
    """The index past the run of ``digits`` in ``text`` from ``start``."""
    end = start
    while end < len(text) and text[end] in digits:
        end += 1
    return end


def _tail(rest: str) -> Optional[Tuple[Optional[str], str, str]]:
    """``[.FRACTION][SUFFIX[UNIT]]`` to its end, as (fraction or None,
    suffix, unit); None when ``rest`` is not that."""
    frac = None
    if rest.startswith("."):
        end = _run_of(rest, 1, "0123456789")
        frac, rest = rest[1:end], rest[end:]
    if not rest:
        return frac, "", ""
    if rest[0] in _SUFFIXES and rest[1:] in ("",) + _UNITS:
        return frac, rest[0], rest[1:]
    return None


def _split_size(text: str) -> Optional[Tuple[str, Optional[str], str, str]]:
    """(integer digits, fraction, suffix, unit) of a size, as strtoumax
    reads the number (base 0) and losetup the rest; None if it is none.
    Hex digits may end in a suffix letter (``0x1EiB``: 0x1 EiB), so the
    hex run is tried from its longest down."""
    if text[:2] in ("0x", "0X"):
        for end in range(_run_of(text, 2, _HEX), 2, -1):
            tail = _tail(text[end:])
            if tail:
                return (text[:end], *tail)
    if text[:1] == "0":
        end = _run_of(text, 1, "01234567")
    elif text[:1] in "123456789" and text:
        end = _run_of(text, 1, "0123456789")
    else:
        return None
    tail = _tail(text[end:])
    return (text[:end], *tail) if tail else None


def parse_size(text: str) -> int:
    """A size as losetup reads it: ``4096``, ``0x1000``, ``1K``/``1KiB`` (1024), ``1KB`` (1000),
    ``1.5M``; suffixes K M G T P E Z Y in either case.  ValueError otherwise.
    """
    parts = _split_size(text.lstrip())
    if parts is None or (parts[1] is not None and not parts[2]):
        raise ValueError(f"invalid size: {text!r}")
    digits, frac, suffix, unit = parts
    # strtoumax base 0: 0x hex, leading-zero octal, else decimal
    value = int(digits, 8) if len(digits) > 1 and digits[0] == "0" \
        and digits[1] not in "xX" else int(digits, 0)
    if suffix:
        base = 1000 if unit in ("B", "b") else 1024
        scale = base ** (_POWERS.index(suffix.lower()) + 1)
        value *= scale
        if frac:  # the fraction's bytes, rounded down as losetup does
            value += int(frac) * scale // 10 ** len(frac)
    if value >= 1 << 64:
        raise ValueError(f"size too large: {text!r}")
    return value


def parse_seconds(text: str) -> float:
    """A number of seconds >= 0 (``--wait=2.5``); ValueError otherwise."""
    try:
        value = float(text)
    except builtins.ValueError:  # float()'s, not loopcore's
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):  # also NaN
        raise ValueError(f"not a number of seconds: {text!r}")
    return value


# --- loop device references ------------------------------------------------------

class LoopRef:
    """A loop device as the command line named it: ``number`` (N of
    /dev/loopN) and ``node``, the node to open it by (the path given, else
    ``/dev/loopN``).  A plain class: a NamedTuple class is ~20 us of every
    process's start-up."""

    __slots__ = ("number", "node")

    def __init__(self, number: int, node: str) -> None:
        self.number, self.node = number, node

    def __repr__(self) -> str:
        return f"LoopRef({self.number}, {self.node!r})"


def loop_ref(text: str) -> LoopRef:
    """The loop device ``text`` names: ``N``, ``loopN`` or ``/dev/loopN``
    (the kernel's names: neither the device nor its node need exist), or
    any other path of a loop device's block node (``stat()``\\ ed: a
    symlink, a node made elsewhere).

    Errors: ValueError for a number no loop device can have; for a path,
    the OSError of ``stat()`` or NotALoopDeviceError, naming the path.
    """
    digits = text[9:] if text.startswith("/dev/loop") else \
        text[4:] if text.startswith("loop") else text
    # ASCII digits only: str.isdigit() alone also takes other scripts' digits
    if digits and digits.isascii() and digits.isdigit():
        from .._validate import check_number  # here: ``loopcore list`` takes no DEV

        try:
            number = check_number(int(digits))
        except ValueError as e:
            raise ValueError(f"{text}: {e}") from None
        return LoopRef(number, loop.device_path(number))
    return LoopRef(loop.loop_number_of(text, os.stat(text)), text)


def loop_number_arg(text: str) -> int:
    """:func:`loop_ref`'s number as a converter: an argument that must name
    a loop device, or the command is misused (ValueError, the error it
    stands for as its ``__cause__``)."""
    try:
        return loop_ref(text).number
    except OSError as e:  # a path that is not a loop node: say why
        raise ValueError(
            f"not a loop device number or node: {text!r} ({e.strerror or e})") from e
    except Error as e:  # ValueError: names the text already
        raise ValueError(str(e)) from e
