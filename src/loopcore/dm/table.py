"""Device-mapper tables: :class:`Table`, a sequence of
:class:`~loopcore.dm.Target` lines, in dmsetup's syntax; their wire form
(``struct dm_target_spec`` + parameters); a table with its keys masked.

The model stays raw, as the kernel's: a target is ``(start, length,
target_type, params)``; what the parameters mean is
:mod:`loopcore.dm.targets`' business, which this module builds on.
"""
from __future__ import annotations

import re
from typing import Iterable, List, Tuple, Union

from .. import errors
from .ioctl import ALIGN, SPEC
from .names import decode, encode
from .targets.base import Target
from .targets.keys import has_keys, mask_params
from .targets.kinds import decimal

__all__ = ["Target", "Table", "TableArg", "as_table", "has_keys", "mask_keys", "mask_params",
           "pack_targets", "unpack_specs"]

# '#' at the start of a word (of the line, or after whitespace)
_COMMENT = re.compile(r"(?:^|\s)#")


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
        trimmed, as dmsetup does.  A comment starts with a word that starts
        with '#' (a '#' inside a word, as in a path or a keyring
        description, is text).  Raises ValueError on a malformed line.
        """
        targets = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = _COMMENT.split(raw, 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 3)
            if len(parts) < 3:
                raise errors.ValueError(f"table line {lineno}: expected 'start length type "
                                        f"[params]', got {raw!r}")
            try:
                start, length = decimal("start", parts[0]), decimal("length", parts[1])
            except errors.ValueError:
                # only the two fields: the rest of the line may hold a key
                raise errors.ValueError(f"table line {lineno}: start and length must be "
                                        f"decimal numbers, got {parts[0][:40]!r} "
                                        f"{parts[1][:40]!r}") from None
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
        SPEC.pack_into(payload, pos, t.start, t.length, 0, size, encode(t.target_type))
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

def mask_keys(table: TableArg) -> Table:
    """``table`` with dm-crypt and dm-integrity keys replaced by zeros, as
    ``dmsetup table`` prints it without ``--showkeys``.  Keyring references
    (a crypt key starting with ':') and other targets are left alone."""
    return Table(t.masked() for t in as_table(table))
