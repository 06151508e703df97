"""A target, typed: :class:`Target` (one table line, raw), and the bases
a target type's declaration builds on.

A target type is a frozen dataclass deriving from :class:`TargetParams`,
each field annotated with its kind (:mod:`.kinds`) and place
(:mod:`.declaration`); from that one
declaration follow the checks when it is made, ``str()`` (the kernel's
parameter string), :meth:`TargetParams.parse` (that string read back) and
``repr()`` (a field with ``repr=False`` holds a key).  The class line
names the type and its status record::

    @dataclasses.dataclass(frozen=True)
    class LinearParams(TargetParams, target_type="linear", status=EmptyStatus):
        device: Annotated[str, DEVICE]
        offset: Annotated[int, SECTORS] = 0

A status record derives from :class:`TargetStatus` the same way; its fields
are read in order (a field defaulting to None may be missing at the end).
Declaring the class registers it: :func:`parse_params` and
:func:`parse_status` find it by its type.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Dict, List, Tuple, Type, TypeVar

from ... import errors
from ..._validate import U64_MAX, check_int
from ..ioctl import DM_MAX_TYPE_NAME
from ..names import encode
from .declaration import declared
from .keys import mask_params
from .kinds import Words
from .status import EmptyStatus, TargetStatus

__all__ = ["Target", "TargetParams", "PARAMS_TYPES", "STATUS_TYPES", "parse_params", "parse_status"]


@dataclasses.dataclass(frozen=True)
class Target:
    """One line of a table: ``start`` and ``length`` in 512-byte sectors,
    the ``target_type`` and its parameter string, as dmsetup writes them.
    (``type`` is the same field, under the name older code used.)"""

    start: int
    length: int
    target_type: str
    params: str = ""

    def __post_init__(self) -> None:
        check_int("target start", self.start, maximum=U64_MAX)
        check_int("target length", self.length, maximum=U64_MAX)
        if not isinstance(self.target_type, str):
            raise errors.TypeError(f"target type must be a str, not "
                                   f"{type(self.target_type).__name__}")
        if not self.target_type or not _encodable(self.target_type) \
                or len(encode(self.target_type)) >= DM_MAX_TYPE_NAME \
                or any(c.isspace() for c in self.target_type) or "\0" in self.target_type:
            raise errors.ValueError(f"bad target type {self.target_type!r} (1 to "
                                    f"{DM_MAX_TYPE_NAME - 1} bytes, no whitespace)")
        if not isinstance(self.params, str):
            raise errors.TypeError(f"target params must be a str, not "
                                   f"{type(self.params).__name__}")
        if "\0" in self.params or len(f"{self.params}.".splitlines()) > 1 \
                or not _encodable(self.params):
            # Every line break Table.parse splits on (str.splitlines()), or
            # the table's text would not read back.  The params are not
            # echoed: they may hold a key.
            raise errors.ValueError(f"{self.target_type} target params contain NUL, a line "
                                    f"break or a lone surrogate")

    @property
    def type(self) -> str:
        """The target type (read-only alias of :attr:`target_type`)."""
        return self.target_type

    @property
    def end(self) -> int:
        """First sector after this target."""
        return self.start + self.length

    def parsed(self) -> "TargetParams":
        """The typed parameters (:class:`~loopcore.dm.LinearParams`,
        :class:`~loopcore.dm.ThinPoolParams` ...); DmParseError for a type
        loopcore does not model or parameters it cannot read."""
        return parse_params(self.target_type, self.params)

    def masked(self) -> "Target":
        """This line with its keys as zeros, as ``dmsetup table`` prints it."""
        params = mask_params(self.target_type, self.params)
        return self if params == self.params else dataclasses.replace(self, params=params)

    def __str__(self) -> str:
        # dmsetup prints "%llu %llu %s %s", a space after the type even
        # when the parameters are empty.
        return f"{self.start} {self.length} {self.target_type} {self.params}"


def _encodable(text: str) -> bool:
    """Whether ``text`` has bytes for the kernel (no lone surrogate)."""
    try:
        encode(text)
    except UnicodeEncodeError:
        return False
    return True


P = TypeVar("P", bound="TargetParams")

PARAMS_TYPES: Dict[str, Type["TargetParams"]] = {}
_PARAMS_BY_TYPE: Dict[str, Type["TargetParams"]] = {}   # with aliases (snapshot-merge)
_STATUS_BY_TYPE: Dict[str, Type["TargetStatus"]] = {}
STATUS_TYPES: Dict[str, Callable[[str], "TargetStatus"]] = {}


class TargetParams:
    """Base of the typed parameter classes: ``str()`` is the kernel's
    parameter string, :meth:`parse` reads it back, :meth:`target` makes the
    table line.  Subclasses are frozen dataclasses (see the module doc)."""

    target_type: ClassVar[str] = ""
    # the kernel writes "<#opt>" even when it is 0
    options_always: ClassVar[bool] = False

    def __init_subclass__(cls, target_type: str = "", status: Type[TargetStatus] = EmptyStatus,
                          aliases: Tuple[str, ...] = (), options_always: bool = False,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.target_type, cls.options_always = target_type, options_always
        PARAMS_TYPES[target_type] = cls
        for name in (target_type, *aliases):
            _PARAMS_BY_TYPE[name] = cls
            _STATUS_BY_TYPE[name] = status
            STATUS_TYPES[name] = functools.partial(parse_status, name)

    def __post_init__(self) -> None:
        for field in declared(type(self)).fields:
            value = getattr(self, field.name)
            if value is None and field.default is None:
                continue
            checked = field.kind.check(field.name, value)
            if checked is not value:
                object.__setattr__(self, field.name, checked)
        self.check()

    def check(self) -> None:
        """The rules between fields (one field's own are its kind's)."""

    def check_length(self, length: int) -> None:
        """What the target's length must be for these parameters."""

    def words(self) -> List[str]:
        """The parameter string's words, in the kernel's order."""
        return self.head_words() + self.option_words()

    def head_words(self) -> List[str]:
        """The positional words, in field order (a type whose words come in
        another order overrides this and :meth:`read_head`)."""
        out: List[str] = []
        for field in declared(type(self)).args:
            value = getattr(self, field.name)
            if not (value is None and field.default is None):
                out += field.kind.words(value)
        return out

    def option_words(self) -> List[str]:
        """``<#opt> <opt>...``: the optional arguments not at their default."""
        fields = declared(type(self)).opts
        if not fields and not self.options_always:
            return []
        opts: List[str] = []
        for field in fields:
            value = getattr(self, field.name)
            if value == field.default:
                continue
            form, word = field.place.form, field.place.word or field.name
            text = field.kind.text(value)
            opts += {"flag": [word], "colon": [f"{word}:{text}"], "pair": [word, text],
                     "value": [text]}[form]
        return [str(len(opts)), *opts] if opts or self.options_always else []

    def __str__(self) -> str:
        return " ".join(self.words())

    @classmethod
    def parse(cls: Type[P], params: str) -> P:
        """Read a parameter string (the kernel's ``table`` output, or one
        written by :func:`str`); :class:`~loopcore.errors.DmParseError` if
        it is not in the kernel's form or its values are out of range."""
        what = f"{cls.target_type} parameters"
        if isinstance(params, str) and not _encodable(params):
            raise errors.DmParseError(f"{what}: not text the kernel can take (a lone "
                                      f"surrogate)")
        shown = mask_params(cls.target_type, params) if isinstance(params, str) else ""
        words = Words(params, what, shown)
        try:
            values = cls.read_head(words)
            values.update(cls._read_options(words))
            words.done()
            return cls(**values)
        except errors.DmParseError:
            raise
        except (errors.ValueError, errors.TypeError) as exc:
            raise words.fail(str(exc)) from None

    @classmethod
    def read_head(cls, words: Words) -> Dict[str, Any]:
        """The positional fields' values, read from the front of ``words``."""
        out: Dict[str, Any] = {}
        for field in declared(cls).args:
            if field.default is not None or words.more():
                field.kind.read_into(words, field.name, out)
        return out

    @classmethod
    def _read_options(cls, words: Words) -> Dict[str, Any]:
        """The optional arguments' values, in any order (dmsetup users write
        their own); the kernel's order is what :meth:`option_words` writes."""
        declaration = declared(cls)
        if not words.more() or not declaration.opts:
            return {}
        count = words.int("number of optional arguments")
        opts = Words(" ".join(words.word("optional argument") for _ in range(count)),
                     words.what, words.shown)
        out: Dict[str, Any] = {}
        while opts.more():
            word = opts.word("optional argument")
            name, colon, value = word.partition(":")
            field = declaration.by_word.get(word) or (declaration.by_colon.get(name)
                                                      if colon else None)
            if field is None:
                raise words.fail(f"unknown optional argument {word!r}")
            form = field.place.form
            if form == "pair":
                value = opts.word(word)
            out[field.name] = True if form == "flag" else word if form == "value" \
                else field.kind.parse(field.name, value)
        return out

    def target(self, start: int, length: int) -> Target:
        """The table line ``start length <type> <these parameters>``."""
        line = Target(start, length, self.target_type, str(self))
        self.check_length(length)
        return line


def parse_params(target_type: str, params: str) -> TargetParams:
    """The typed parameters of a ``target_type`` target from its parameter
    string (as the kernel's ``table`` output writes it);
    :class:`~loopcore.errors.DmParseError` for a type loopcore does not
    model or text it cannot read."""
    cls = _PARAMS_BY_TYPE.get(target_type)
    if cls is None:
        raise errors.DmParseError(f"no typed parameters for target type {target_type!r} "
                                  f"(known: {', '.join(sorted(PARAMS_TYPES))})")
    return cls.parse(params)


def parse_status(target_type: str, params: str) -> TargetStatus:
    """The typed status of a ``target_type`` target from its status text
    (``StatusLine.params``); :class:`~loopcore.errors.DmParseError` for a
    type loopcore does not model or text not in the kernel's form."""
    cls = _STATUS_BY_TYPE.get(target_type)
    if cls is None:
        raise errors.DmParseError(f"no typed status for target type {target_type!r} "
                                  f"(known: {', '.join(sorted(_STATUS_BY_TYPE))})")
    return cls.read(target_type, params)
