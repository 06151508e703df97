"""The kinds of value a target's fields hold: how each is checked (wrong
type: TypeError, wrong value: ValueError, the ints through
:func:`loopcore._validate.check_int`), written as the kernel's words and
read back from them; and the devices a table line names.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ... import errors
from ..._validate import U64_MAX, check_int

__all__ = ["DeviceArg", "device_arg", "sectors", "leg_pairs", "decimal", "Words", "Kind", "Uint",
           "Device", "Word", "Hex", "Choice", "Flag", "Legs", "SECTORS", "DEVICE", "FLAG", "LEGS"]

# A device for a table line: a path, a devnum, or an object with .devnum
# (a LoopDevice).
DeviceArg = Union[str, "os.PathLike[str]", int, object]


def device_arg(device: DeviceArg) -> str:
    """A device for a table line: "major:minor" for a devnum (int) or an
    object with a ``devnum`` (a LoopDevice), else the path as given.

    The kernel splits parameters on whitespace and libdevmapper passes
    backslashes literally, so a path with whitespace cannot be named:
    ValueError (pass the device or its devnum instead).
    """
    if isinstance(device, bool):
        raise errors.TypeError("device must be a path, a devnum or an object with .devnum")
    if isinstance(device, int):
        return f"{os.major(device)}:{os.minor(device)}"
    devnum = getattr(device, "devnum", None)
    if isinstance(devnum, int):
        return f"{os.major(devnum)}:{os.minor(devnum)}"
    if isinstance(device, (str, os.PathLike)):
        path = os.fspath(device)
        if not isinstance(path, str) or not path or any(c.isspace() for c in path) \
                or "\0" in path or path.startswith("#"):
            # '#' would start a comment in the table's text
            raise errors.ValueError(f"device path {path!r} is empty, contains whitespace or "
                                    "starts with '#'; pass the device number instead")
        return path
    raise errors.TypeError(f"device must be a path, a devnum or an object with .devnum, "
                           f"not {type(device).__name__}")


def sectors(name: str, value: object) -> int:
    """``value`` if it is an int (not a bool) from 0 to 2**64-1: a count
    of 512-byte sectors."""
    return check_int(name, value, maximum=U64_MAX)


def leg_pairs(name: str, devices: Sequence[object]) -> Tuple[Tuple[str, int], ...]:
    """(device, offset) pairs from devices in any form :func:`device_arg`
    takes, or (device, offset) pairs of them (offset 0 when not given)."""
    if isinstance(devices, (str, bytes)) or not isinstance(devices, Sequence):
        raise errors.TypeError(f"{name} must be a sequence of devices or (device, offset) "
                               f"pairs")
    return tuple((device_arg(entry[0]), entry[1]) if isinstance(entry, tuple)
                 else (device_arg(entry), 0) for entry in devices)


# The most digits a kernel number has (%llu of 2**64-1), leading zeros aside:
# a longer word is out of range without the int() that Python limits.
_MAX_DIGITS = len(str(U64_MAX))


def decimal(name: str, word: str) -> int:
    """The number a word of ASCII decimal digits writes (the kernel's %u,
    %llu); ValueError for anything else (other scripts' digits too) and
    for more digits than a 64-bit number has."""
    if not word.isascii() or not word.isdigit():
        raise errors.ValueError(f"{name} must be a decimal number, got {word[:40]!r}")
    if len(word.lstrip("0")) > _MAX_DIGITS:
        raise errors.ValueError(f"{name} has {len(word)} digits: out of range")
    return int(word.lstrip("0") or "0")


class Words:
    """The words of a parameter or status text, read front to back; what is
    not in the kernel's form is a DmParseError naming the target type and
    the text as ``shown`` (its keys masked)."""

    def __init__(self, text: str, what: str, shown: str) -> None:
        if not isinstance(text, str):
            raise errors.TypeError(f"{what} must be a str, not {type(text).__name__}")
        self.words = text.split()
        self.pos = 0
        self.what = what
        self.shown = shown

    def fail(self, why: str) -> errors.DmParseError:
        return errors.DmParseError(f"{self.what} {self.shown!r}: {why}")

    def more(self) -> bool:
        return self.pos < len(self.words)

    def word(self, what: str) -> str:
        if not self.more():
            raise self.fail(f"{what} is missing")
        self.pos += 1
        return self.words[self.pos - 1]

    def int(self, what: str) -> int:
        return decimal(what, self.word(what))

    def done(self) -> None:
        if self.more():
            raise self.fail(f"unexpected {' '.join(self.words[self.pos:])!r} at the end")

# --- kinds ----------------------------------------------------------------------------


class Kind:
    """One field's kind: check a value, write it as words, read it back."""

    def check(self, name: str, value: Any) -> Any:
        """``value`` (or its normal form), else TypeError/ValueError."""
        return value

    def text(self, value: Any) -> str:
        return str(value)

    def words(self, value: Any) -> List[str]:
        return [self.text(value)]

    def parse(self, name: str, word: str) -> Any:
        """The value one word stands for (ValueError if it does not)."""
        return word

    def read_into(self, words: Words, name: str, out: Dict[str, Any]) -> None:
        """Read this field (and any it carries) into ``out``."""
        out[name] = self.parse(name, words.word(name))


class Uint(Kind):
    """A decimal number from ``minimum`` to ``maximum``; ``dash``: ``-``
    stands for None (status only)."""

    def __init__(self, minimum: int = 0, maximum: int = U64_MAX, *, power_of_two: bool = False,
                 multiple: int = 1, dash: bool = False) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.power_of_two, self.multiple, self.dash = power_of_two, multiple, dash

    def check(self, name: str, value: Any) -> int:
        check_int(name, value, minimum=self.minimum, maximum=self.maximum)
        if self.power_of_two and value & (value - 1):
            raise errors.ValueError(f"{name} must be a power of two, got {value}")
        if value % self.multiple:
            raise errors.ValueError(f"{name} must be a multiple of {self.multiple}, "
                                    f"got {value}")
        return int(value)

    def parse(self, name: str, word: str) -> Optional[int]:
        return None if self.dash and word == "-" else decimal(name, word)


class Word(Kind):
    """One word of printable text (the kernel splits on whitespace), of the
    form ``pattern`` (described by ``form``) when given."""

    def __init__(self, pattern: str = "", form: str = "") -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.form = form

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise errors.TypeError(f"{name} must be a str, not {type(value).__name__}")
        if not value or any(c.isspace() or not c.isprintable() for c in value) \
                or value.startswith("#"):
            # a word starting with '#' would start a comment in the table's text
            raise errors.ValueError(f"{name} must be one word of printable characters, "
                                    f"not starting with '#', got {value!r}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise errors.ValueError(f"{name} must be {self.form}")
        return value


class Device(Word):
    """A device as :func:`device_arg` writes it: "major:minor" or a path."""

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise errors.TypeError(f"{name} must be a str (\"major:minor\" or a path; "
                                   f"see device_arg()), not {type(value).__name__}")
        return device_arg(value)


class Hex(Word):
    """An even number of hex digits; ``empty``: "" too, written as ``-``."""

    def __init__(self, empty: bool = False) -> None:
        super().__init__()
        self.empty = empty

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise errors.TypeError(f"{name} must be a str of hex digits, not "
                                   f"{type(value).__name__}")
        if (not value and not self.empty) or len(value) % 2 \
                or not all(c in "0123456789abcdefABCDEF" for c in value):
            raise errors.ValueError(f"{name} must be an even number of hex digits")
        return value

    def text(self, value: Any) -> str:
        return value or "-"

    def parse(self, name: str, word: str) -> str:
        return "" if self.empty and word == "-" else word


class Choice(Kind):
    """One of ``values``."""

    def __init__(self, *values: str) -> None:
        self.values = values

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise errors.TypeError(f"{name} must be a str, not {type(value).__name__}")
        return self.parse(name, value)

    def parse(self, name: str, word: str) -> str:
        if word not in self.values:
            raise errors.ValueError(f"{name} must be one of {', '.join(self.values)}, "
                                    f"got {word!r}")
        return word


class Flag(Kind):
    """A bool: an optional argument present or not."""

    def check(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise errors.TypeError(f"{name} must be a bool, not {type(value).__name__}")
        return value


class Legs(Kind):
    """(device, offset) pairs, stored as a tuple of tuples; written
    ``<device> <offset>...`` (the count is the target's business)."""

    def check(self, name: str, value: Any) -> Tuple[Tuple[str, int], ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise errors.TypeError(f"{name} must be a sequence of (device, offset) pairs")
        out = []
        for entry in value:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise errors.TypeError(f"{name}: each entry is a (device, offset) pair, "
                                       f"got {entry!r}")
            out.append((DEVICE.check(f"{name} device", entry[0]),
                        SECTORS.check(f"{name} offset", entry[1])))
        return tuple(out)

    def words(self, value: Any) -> List[str]:
        return [word for device, offset in value for word in (device, str(offset))]

    def read(self, words: Words, name: str, count: int) -> Tuple[Tuple[str, int], ...]:
        return tuple((words.word(f"{name} device"), words.int(f"{name} offset"))
                     for _ in range(count))


SECTORS = Uint()
DEVICE = Device()
FLAG = Flag()
LEGS = Legs()
