"""The bases of the typed status records and the kinds of field only a
status has.  A status record is a frozen dataclass deriving from
:class:`TargetStatus`, its fields annotated with their kinds and read in
order from the kernel's status text (its ``*_status`` function with
STATUSTYPE_INFO, as ``dmsetup status`` prints it); a target reporting a
state word instead of its numbers gives :class:`UnavailableStatus`.
"""
from __future__ import annotations

import builtins
import dataclasses
import enum
from typing import Any, ClassVar, Dict, Tuple

from ... import errors
from .declaration import declared
from .kinds import Choice, Kind, Uint, Words

__all__ = ["DeviceHealth", "TargetStatus", "EmptyStatus", "UnavailableStatus", "Fraction",
           "Carried", "WordBool", "Counted", "Health", "CARRIED"]


class DeviceHealth(str, enum.Enum):
    """A device's health character in a striped or mirror status (and a
    mirror's disk log): A alive; D dead (striped) or write failure;
    S sync, R read, F flush failure; U unclassified."""

    ALIVE = "A"
    DEAD = "D"
    SYNC_FAILED = "S"
    READ_FAILED = "R"
    FLUSH_FAILED = "F"
    UNCLASSIFIED = "U"

    def __str__(self) -> str:
        return self.value


# --- kinds ---------------------------------------------------------------------------

class Fraction(Uint):
    """``<used>/<total>``: this field is the first number, ``total`` names
    the field that gets the second."""

    def __init__(self, total: str) -> None:
        super().__init__()
        self.total = total

    def read_into(self, words: Words, name: str, out: Dict[str, Any]) -> None:
        used, slash, total = words.word(name).partition("/")
        if not slash:
            raise errors.ValueError(f"{name} must be <used>/<total>, got {used!r}")
        out[name], out[self.total] = self.parse(name, used), self.parse(self.total, total)


class Carried(Kind):
    """A field another field's kind reads (the total of a fraction)."""

    def read_into(self, words: Words, name: str, out: Dict[str, Any]) -> None:
        pass


class WordBool(Kind):
    """A bool written as one of two words."""

    def __init__(self, true: str, false: str) -> None:
        self.true, self.false = true, false

    def parse(self, name: str, word: str) -> bool:
        return Choice(self.true, self.false).parse(name, word) == self.true


class Counted(Kind):
    """``<n> <word>...`` as a tuple of the words (``nonempty``: n >= 1)."""

    def __init__(self, nonempty: bool = False) -> None:
        self.nonempty = nonempty

    def read_into(self, words: Words, name: str, out: Dict[str, Any]) -> None:
        count = words.int(f"number of {name}")
        if self.nonempty and not count:
            raise errors.ValueError(f"no {name}")
        out[name] = tuple(words.word(name) for _ in range(count))


class Health(Kind):
    """``1 <one health character per device>`` (of ``out["devices"]``)."""

    def read_into(self, words: Words, name: str, out: Dict[str, Any]) -> None:
        if words.word("health count") != "1":
            raise errors.ValueError("the health characters' count must be 1")
        out[name] = self.chars(words.word(name), len(out["devices"]))

    @staticmethod
    def chars(chars: str, count: int) -> Tuple[DeviceHealth, ...]:
        if len(chars) != count:
            raise errors.ValueError(f"{count} health characters expected, got {chars!r}")
        try:
            return tuple(DeviceHealth(c) for c in chars)
        except builtins.ValueError:
            raise errors.ValueError(f"unknown health character in {chars!r}") from None


CARRIED = Carried()


# --- records -------------------------------------------------------------------------

class TargetStatus:
    """Base of the typed status records: :meth:`read` reads the kernel's
    status text; ``states`` (a class keyword) are the words a target
    reports instead of its numbers (then an :class:`UnavailableStatus`)."""

    states: ClassVar[Tuple[str, ...]] = ()

    def __init_subclass__(cls, states: Tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.states = states

    @classmethod
    def read(cls, target_type: str, text: str) -> "TargetStatus":
        """The status of a ``target_type`` target from its status text."""
        words = Words(text, f"{target_type} status", text)
        if text.strip() in cls.states_of(target_type):
            return UnavailableStatus(target_type, text.strip())
        try:
            values = cls.read_fields(target_type, words)
            words.done()
        except errors.DmParseError:
            raise
        except errors.ValueError as exc:
            raise words.fail(str(exc)) from None
        return cls(**values)

    @classmethod
    def states_of(cls, target_type: str) -> Tuple[str, ...]:
        """The state words a ``target_type`` target reports (a class
        serving several types overrides this when they differ)."""
        return cls.states

    @classmethod
    def read_fields(cls, target_type: str, words: Words) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for field in declared(cls).fields:
            if field.default is not None or words.more():
                field.kind.read_into(words, field.name, out)
        return out


@dataclasses.dataclass(frozen=True)
class EmptyStatus(TargetStatus):
    """The status of a target that reports nothing (linear, zero, error,
    crypt, snapshot-origin)."""

    target_type: str

    @classmethod
    def read_fields(cls, target_type: str, words: Words) -> Dict[str, Any]:
        if words.more():
            raise words.fail("this target reports no status")
        return {"target_type": target_type}


@dataclasses.dataclass(frozen=True)
class UnavailableStatus(TargetStatus):
    """A state word in place of the numbers: ``Fail`` or ``Error`` (thin
    pool, thin), ``-`` (a thin volume without its device yet), ``Invalid``,
    ``Overflow`` or ``Unknown`` (snapshot, snapshot-merge), ``Merge failed``
    (snapshot-merge only)."""

    target_type: str
    state: str

    @property
    def failed(self) -> bool:
        """The target cannot serve I/O any more (not a passing state)."""
        return self.state in ("Fail", "Error", "Invalid", "Overflow", "Merge failed")
