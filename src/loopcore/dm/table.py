"""Device-mapper tables: :class:`Target` and :class:`Table` in dmsetup's
syntax, their wire form (``struct dm_target_spec`` + parameters), and the
keys some targets' parameters hold.

The model stays raw, as the kernel's: a target is ``(start, length, type,
params)``; what the parameters mean is :mod:`loopcore.dm.targets`'
business (:meth:`Target.parsed` asks it).
"""
from __future__ import annotations

import builtins
import dataclasses
from typing import TYPE_CHECKING, Iterable, List, Tuple, Union

from .. import errors
from .ioctl import ALIGN, DM_MAX_TYPE_NAME, SPEC
from .names import decode, encode

if TYPE_CHECKING:
    from .targets import TargetParams

__all__ = ["Target", "Table", "TableArg", "as_table", "has_keys", "mask_keys", "mask_params",
           "pack_targets", "unpack_specs"]


@dataclasses.dataclass(frozen=True)
class Target:
    """One line of a table: ``start`` and ``length`` in 512-byte sectors,
    the target ``type`` and its parameter string, as dmsetup writes them."""

    start: int
    length: int
    type: str
    params: str = ""

    def __post_init__(self) -> None:
        for field in ("start", "length"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise errors.ValueError(f"target {field} must be a non-negative int, "
                                        f"got {value!r}")
            if value >= 1 << 64:
                raise errors.ValueError(f"target {field} {value} does not fit in 64 bits")
        if not isinstance(self.type, str) or not self.type:
            raise errors.ValueError(f"target type must be a non-empty str, got {self.type!r}")
        if len(encode(self.type)) >= DM_MAX_TYPE_NAME or any(c.isspace() for c in self.type) \
                or "\0" in self.type:
            raise errors.ValueError(f"bad target type {self.type!r} (max "
                                    f"{DM_MAX_TYPE_NAME - 1} bytes, no whitespace)")
        if not isinstance(self.params, str):
            raise errors.TypeError(f"target params must be a str, not "
                                   f"{type(self.params).__name__}")
        if "\0" in self.params or "\n" in self.params:
            # the params are not echoed: they may hold a key
            raise errors.ValueError(f"{self.type} target params contain NUL or a newline")

    def parsed(self) -> "TargetParams":
        """The typed parameters (:class:`~loopcore.dm.LinearParams`,
        :class:`~loopcore.dm.ThinPoolParams` ...); DmParseError for a type
        loopcore does not model or parameters it cannot read."""
        from .targets import parse_params  # targets builds on this module
        return parse_params(self.type, self.params)

    @property
    def end(self) -> int:
        """First sector after this target."""
        return self.start + self.length

    def __str__(self) -> str:
        # dmsetup prints "%llu %llu %s %s", a space after the type even
        # when the parameters are empty.
        return f"{self.start} {self.length} {self.type} {self.params}"


class Table(tuple[Target, ...]):  # not typing.Tuple, which would add a Generic base
    """A device's table: a sequence of :class:`Target`.

    ``str(table)`` is dmsetup's syntax, one target per line;
    :meth:`parse` reads that syntax back.
    """

    def __new__(cls, targets: Iterable[Target] = ()) -> "Table":
        items = tuple(targets)
        for t in items:
            if not isinstance(t, Target):
                raise errors.TypeError(f"a Table holds Target records, not {type(t).__name__}")
        return super().__new__(cls, items)

    @classmethod
    def parse(cls, text: str) -> "Table":
        """Read dmsetup's table syntax: ``start length type params`` per line.

        Blank lines and '#' comments are skipped; surrounding whitespace is
        trimmed, as dmsetup does.  Raises ValueError on a malformed line.
        """
        targets = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 3)
            if len(parts) < 3:
                raise errors.ValueError(f"table line {lineno}: expected 'start length type "
                                        f"[params]', got {raw!r}")
            try:
                start, length = int(parts[0], 10), int(parts[1], 10)
            except builtins.ValueError:
                # only the two fields: the rest of the line may hold a key
                raise errors.ValueError(f"table line {lineno}: start and length must be "
                                        f"integers, got {parts[0]!r} {parts[1]!r}") from None
            targets.append(Target(start, length, parts[2], parts[3].strip() if len(parts) > 3
                                  else ""))
        return cls(targets)

    @property
    def size(self) -> int:
        """Sectors the table covers (end of its last target)."""
        return max((t.end for t in self), default=0)

    def __str__(self) -> str:
        return "\n".join(str(t) for t in self)

    def __repr__(self) -> str:
        return f"Table({list(self)!r})"

    def __add__(self, other: Iterable[Target]) -> "Table":  # type: ignore[override]
        return Table(tuple(self) + tuple(other))


# What load() and create() take: a Table, Targets, or dmsetup's text.
TableArg = Union[Table, Iterable[Target], str]


def as_table(table: TableArg) -> Table:
    """``table`` as a :class:`Table` (text is parsed)."""
    if isinstance(table, Table):
        return table
    if isinstance(table, str):
        return Table.parse(table)
    return Table(table)


# --- the wire form ---------------------------------------------------------------

def pack_targets(table: Iterable[Target]) -> Tuple[bytearray, int]:
    """TABLE_LOAD payload and target count: dm_target_spec + params per
    target, 8-aligned, ``next`` relative to the current spec.  Backslashes
    are doubled as libdevmapper does, so the kernel's unescaping hands
    targets the text.  Built in one buffer, so that a caller can wipe the
    keys in it."""
    items = []
    for t in table:
        if not isinstance(t, Target):
            raise errors.TypeError(f"a table holds Target records, not {type(t).__name__}")
        params = encode(t.params.replace("\\", "\\\\")) + b"\0"
        size = SPEC.size + len(params)
        items.append((t, params, size + (-size % ALIGN)))
    if not items:
        raise errors.ValueError("a table needs at least one target")
    payload = bytearray(sum(size for _t, _p, size in items))
    pos = 0
    for t, params, size in items:
        SPEC.pack_into(payload, pos, t.start, t.length, 0, size, encode(t.type))
        payload[pos + SPEC.size:pos + SPEC.size + len(params)] = params
        pos += size
    return payload, len(items)


def unpack_specs(payload: bytes, count: int) -> List[Tuple[int, int, str, str]]:
    """TABLE_STATUS (and DEV_WAIT) output: ``(start, length, type, text)``
    per target, where ``next`` is relative to the payload start."""
    found = []
    pos = 0
    for _ in range(count):
        start, length, _status, nxt, ttype = SPEC.unpack_from(payload, pos)
        p0 = pos + SPEC.size
        p1 = payload.find(b"\0", p0)
        found.append((start, length, decode(ttype),
                      decode(payload[p0:p1 if p1 >= 0 else len(payload)])))
        if nxt <= pos:
            break
        pos = nxt
    return found


# --- keys --------------------------------------------------------------------------
#
# dmsetup table prints zeros in place of keys unless --showkeys, byte for
# byte over the text the kernel returned:
# - crypt ("cipher key iv_offset device offset ..."): the word after the
#   first space, unless it starts with ':' (":32:logon:desc" names a key in
#   the kernel keyring, which is no secret);
# - integrity: for the first occurrence of each of these option names, if a
#   ':' comes before the next space after it ("name:algorithm:key"), the
#   rest of that word.
# A new target type whose parameters hold a key gets its rule here.
_KEYED_TYPES = ("crypt", "integrity")
_INTEGRITY_KEYED = (b"internal_hash:", b"journal_crypt:", b"journal_mac:")


def _zero_word(raw: bytearray, pos: int) -> None:
    while pos < len(raw) and raw[pos] != 0x20:
        raw[pos] = 0x30  # '0'
        pos += 1


def mask_params(target_type: str, params: str) -> str:
    """One target's parameters with its keys as zeros (see :func:`mask_keys`)."""
    if target_type not in _KEYED_TYPES:
        return params
    raw = bytearray(encode(params))
    if target_type == "crypt":
        space = raw.find(b" ")
        if space >= 0 and raw[space + 1:space + 2] != b":":
            _zero_word(raw, space + 1)
    else:
        for option in _INTEGRITY_KEYED:
            at = raw.find(option)
            if at < 0:
                continue
            pos = at + len(option)
            while pos < len(raw) and raw[pos] not in b" :":
                pos += 1
            if pos < len(raw) and raw[pos] == 0x3A:  # ':' before a space: a key follows
                _zero_word(raw, pos + 1)
    return raw.decode("utf-8", "surrogateescape")


def mask_keys(table: TableArg) -> Table:
    """``table`` with dm-crypt and dm-integrity keys replaced by zeros, as
    ``dmsetup table`` prints it without ``--showkeys``.  Keyring references
    (a crypt key starting with ':') and other targets are left alone."""
    return Table(dataclasses.replace(t, params=mask_params(t.type, t.params))
                 if t.type in _KEYED_TYPES else t for t in as_table(table))


def has_keys(table: Iterable[Target]) -> bool:
    """Whether any target's parameters hold a key (then the table goes to
    and from the kernel with SECURE_DATA)."""
    return any(mask_params(t.type, t.params) != t.params for t in table)
