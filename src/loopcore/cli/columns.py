"""losetup's columns and output formats (util-linux 2.38), byte for byte.

A new ``list -O`` column is one :class:`Column` in :data:`COLUMNS`: its
losetup name, JSON type, alignment, the cell for a :class:`LoopInfo`
(None: empty, ``null`` in JSON) and its help line.  :func:`render_json`
and :func:`render_table` print what ``losetup -l --json`` and
``losetup -l [--raw] [-n]`` print for the same devices and columns;
:func:`losetup_j_line` what ``losetup -j FILE`` prints.
"""
from __future__ import annotations

import os

from .. import loop
from ..loop import LoopInfo
from ._rules import CLIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterable, List, Optional, Sequence

__all__ = ["Column", "COLUMNS", "DEFAULT_COLUMNS", "ALL_COLUMNS", "parse_columns", "render_json",
           "render_table", "losetup_j_line", "safe_human", "columns_help"]

STRING, NUMBER, BOOLEAN = "string", "number", "boolean"


class Column:
    """One losetup column: its ``name``, ``json_type`` (how --json prints
    it: STRING, NUMBER or BOOLEAN), ``right`` (right-aligned in the
    table), ``value`` (the cell for a record: None is empty, ``null`` in
    JSON) and ``help``.  A plain class: a NamedTuple class is ~20 us of
    every ``loopcore list``."""

    __slots__ = ("name", "json_type", "right", "value", "help")

    def __init__(self, name: str, json_type: str, right: bool,
                 value: Callable[[LoopInfo], Optional[str]], help: str) -> None:
        self.name, self.json_type, self.right, self.value, self.help = \
            name, json_type, right, value, help

    def __repr__(self) -> str:
        return f"Column({self.name!r})"


def _flag(name: str, unbound: str = "0") -> Callable[[LoopInfo], str]:
    """A flag's cell: LoopInfo's property ``name`` (``autoclear`` ...)."""
    return lambda r: ("1" if getattr(r, name) else "0") if r.bound else unbound


def _if_bound(get: Callable[[LoopInfo], object]) -> Callable[[LoopInfo], Optional[str]]:
    return lambda r: str(get(r)) if r.bound else None


def _back_majmin(r: LoopInfo) -> Optional[str]:
    if not r.has_status or not r.backing_devnum:
        return None
    return "%8u:%-3u" % (os.major(r.backing_devnum), os.minor(r.backing_devnum))


def _majmin(r: LoopInfo) -> Optional[str]:
    # losetup stat()s /dev/loopN and wants major 7.
    if not r.has_node or r.major != loop.LOOP_MAJOR:
        return None
    return "%3u:%-3u" % (r.major, r.minor)


#: losetup's columns, in the order of its --help (the tests compare).
COLUMNS: Dict[str, Column] = {c.name: c for c in (
    Column("NAME", STRING, False, lambda r: loop.device_path(r.number), "loop device name"),
    Column("AUTOCLEAR", BOOLEAN, True, _flag("autoclear"), "autoclear flag set"),
    Column("BACK-FILE", STRING, False, lambda r: r.backing_file, "device backing file"),
    Column("BACK-INO", NUMBER, True,
           lambda r: str(r.backing_inode) if r.has_status and r.backing_inode else None,
           "backing file inode number"),
    Column("BACK-MAJ:MIN", STRING, False, _back_majmin,
           "backing file major:minor device number"),
    Column("MAJ:MIN", STRING, False, _majmin, "loop device major:minor number"),
    Column("OFFSET", NUMBER, True, _if_bound(lambda r: r.offset), "offset from the beginning"),
    # Unbound: losetup falls back to "does the kernel support partscan" (yes).
    Column("PARTSCAN", BOOLEAN, True, _flag("partscan", unbound="1"), "partscan flag set"),
    # Bound or not: sysfs "ro" is the disk's (BLKROSET counts too).
    Column("RO", BOOLEAN, True, lambda r: "1" if r.read_only else "0",
           "read-only device"),
    Column("SIZELIMIT", NUMBER, True, _if_bound(lambda r: r.size_limit),
           "size limit of the file in bytes"),
    Column("DIO", BOOLEAN, True, _flag("direct_io"), "access backing file with direct-io"),
    Column("LOG-SEC", NUMBER, True, lambda r: str(r.block_size) if r.block_size else None,
           "logical sector size in bytes"),
)}

DEFAULT_COLUMNS = ("NAME", "SIZELIMIT", "OFFSET", "AUTOCLEAR", "RO", "BACK-FILE", "DIO",
                   "LOG-SEC")
ALL_COLUMNS = tuple(COLUMNS)


def columns_help() -> str:
    """The ``--help`` list of ``list -O`` columns, one a line."""
    return "\n".join(f"  {c.name:>12}  {c.help}" for c in COLUMNS.values())


def parse_columns(spec: str) -> List[str]:
    """``-O`` list: comma-separated, case-insensitive; ``+COLS`` appends to the defaults.

    An unknown column is a :class:`CLIError` (exit status 1, as losetup's).
    """
    names = list(DEFAULT_COLUMNS) if spec.startswith("+") else []
    for item in spec.lstrip("+").split(","):
        key = item.strip().upper()
        if key not in COLUMNS:
            raise CLIError(f"unknown column: {item}")
        names.append(key)
    return names


# --- JSON ---------------------------------------------------------------------------

def _json_quote(data: bytes) -> bytes:
    """libsmartcols' JSON string quoting (bytes >= 0x80 pass through)."""
    out = bytearray(b'"')
    for c in data:
        if c in (0x22, 0x5C):
            out += b"\\" + bytes((c,))
        elif c >= 0x20:
            out.append(c)
        else:
            out += {8: b"\\b", 9: b"\\t", 10: b"\\n", 12: b"\\f", 13: b"\\r"}.get(
                c, b"\\u00%02x" % c)
    out += b'"'
    return bytes(out)


def render_json(columns: Sequence[str], records: Iterable[LoopInfo]) -> bytes:
    """What ``losetup -l --json -O columns`` prints, byte for byte."""
    cols = [COLUMNS[c] for c in columns]
    keys = [_json_quote(c.name.lower().encode()) for c in cols]
    objects = []
    for rec in records:
        fields = []
        for col, key in zip(cols, keys):
            value = col.value(rec)
            if col.json_type == BOOLEAN:
                text = b"false" if not value or value[0] in "0Nn" else b"true"
            elif not value:
                text = b"null"
            elif col.json_type == NUMBER:
                text = value.encode()
            else:
                text = _json_quote(os.fsencode(value))
            fields.append(b"         " + key + b": " + text)
        objects.append(b"{\n" + b",\n".join(fields) + b"\n      }")
    body = b"      " + b",".join(objects) if objects else b""
    return b'{\n   "loopdevices": [\n' + body + b"\n   ]\n}\n"


# --- tables -------------------------------------------------------------------------

def safe_human(value: str) -> str:
    """libsmartcols' human-output encoding: unprintables as \\xHH."""
    raw = os.fsencode(value)
    text = raw.decode("utf-8", "surrogateescape")
    out = []
    for i, ch in enumerate(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append("\\x%02x" % (code - 0xDC00))
        elif ch == "\\" and text[i + 1:i + 2] == "x":
            out.append("\\x5c")
        elif code < 0x20 or code == 0x7F or (code > 0x7F and _is_control(ch)):
            out.extend("\\x%02x" % b for b in ch.encode("utf-8", "surrogateescape"))
        else:
            out.append(ch)
    return "".join(out)


def _is_control(ch: str) -> bool:
    # unicodedata only for a name that is not ASCII (ASCII's Cc: the
    # tests above): a listing of ASCII paths does without its import
    import unicodedata

    return unicodedata.category(ch) in ("Cc", "Cs")


def _raw_cell(value: str) -> str:
    out = []
    for b in os.fsencode(value):
        if b in (0x20, 0x09, 0x5C) or b < 0x20 or b >= 0x7F:
            out.append("\\x%02x" % b)
        else:
            out.append(chr(b))
    return "".join(out)


def render_table(columns: Sequence[str], records: Iterable[LoopInfo], *,
                 headings: bool = True, raw: bool = False) -> str:
    """What ``losetup -l`` prints to a pipe (``raw``: ``losetup -l --raw``)."""
    cols = [COLUMNS[c] for c in columns]
    rows = [[col.value(rec) or "" for col in cols] for rec in records]
    if not rows:
        return ""
    lines = []
    if raw:
        if headings:
            lines.append(" ".join(c.name for c in cols))
        lines.extend(" ".join(_raw_cell(v) for v in row) for row in rows)
        return "\n".join(lines) + "\n"
    rows = [[safe_human(v) for v in row] for row in rows]
    widths = [max([len(c.name)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols)]

    def line(cells: List[str]) -> str:
        parts = []
        for i, (col, cell) in enumerate(zip(cols, cells)):
            last = i == len(cols) - 1
            if col.right:
                parts.append(cell.rjust(widths[i]) if cell else " " * widths[i])
            elif last:
                parts.append(cell)
            else:
                parts.append(cell.ljust(widths[i]))
        return " ".join(parts)

    if headings:
        lines.append(line([c.name for c in cols]))
    lines.extend(line(row) for row in rows)
    return "\n".join(lines) + "\n"


# --- losetup -j -----------------------------------------------------------------------

def losetup_j_line(rec: LoopInfo) -> str:
    """One line of ``losetup -j FILE`` / ``losetup -a``."""
    name = loop.device_path(rec.number)
    backing = rec.backing_file or ""
    if rec.has_status and (rec.backing_devnum or rec.backing_inode):
        text = "%s: [%04d]:%d (%s)" % (name, rec.backing_devnum, rec.backing_inode, backing)
    else:
        text = "%s: []: (%s)" % (name, backing)
    if rec.offset:
        text += ", offset %d" % rec.offset
    if rec.size_limit:
        text += ", sizelimit %d" % rec.size_limit
    return text
