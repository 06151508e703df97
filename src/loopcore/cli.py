"""The ``loopcore`` command line: a losetup-compatible front end.

``loopcore list --json`` prints what ``losetup -l --json`` (util-linux
2.38) prints for the same devices and columns, key for key and byte for
byte, except that devices come in number order.  Errors are one line on
stderr naming the file or device (exit status 1); usage errors exit 2.

Other modules add subcommands: :data:`SUBCOMMAND_MODULES` maps each such
subcommand to its module, which exposes ``add_parser(subparsers)`` adding a
parser with ``set_defaults(func=handler)``; ``handler(args)`` returns the
exit status.  A module is imported only when its subcommand (or the help)
is asked for, so ``loopcore list`` does not pay for device-mapper's import.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import re
import sys
import unicodedata
from fractions import Fraction
from typing import Callable, Dict, Iterable, List, NamedTuple, NoReturn, Optional, Sequence, cast

from . import discovery, loop
from ._version import __version__
from .errors import error_from_errno
from .loop import LoopInfo

__all__ = ["main", "build_parser", "parse_size", "SUBCOMMAND_MODULES", "COLUMNS"]

PROG = "loopcore"

#: Subcommands that other modules add, and those modules (see the docstring).
SUBCOMMAND_MODULES: Dict[str, str] = {"dm": "loopcore.dm_cli"}

EXIT_FAILURE = 1
EXIT_USAGE = 2


class CLIError(Exception):
    """A failure to report as one line on stderr, exit status 1."""


# --- sizes --------------------------------------------------------------------

_SIZE_RE = re.compile(
    r"\s*(?P<int>0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)"
    r"(?:\.(?P<frac>[0-9]*))?"
    r"(?:(?P<suffix>[KMGTPEZYkmgtpezy])(?P<unit>iB|ib|B|b)?)?\Z")
_POWERS = "kmgtpezy"


def parse_size(text: str) -> int:
    """A size as losetup reads it: ``4096``, ``0x1000``, ``1K``/``1KiB`` (1024), ``1KB`` (1000),
    ``1.5M``; suffixes K M G T P E Z Y in either case.  ValueError otherwise.
    """
    m = _SIZE_RE.match(text)
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


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


# --- devices --------------------------------------------------------------------

_LOOP_NAME = re.compile(r"(?:/dev/)?loop(\d+)\Z")


def _number_arg(text: str) -> int:
    """N, loopN or /dev/loopN, syntactically (the device need not exist)."""
    m = _LOOP_NAME.match(text)
    if not m and not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a loop device number: {text!r}")
    number = int(m.group(1) if m else text)
    try:
        loop.check_number(number)  # the range too: a usage error, not a failed ioctl
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return number


def resolve_device(ref: str) -> int:
    """The loop device number for a path (``/dev/loop3``), ``loop3`` or ``3``.

    Paths are stat()ed: a block node whose sysfs name is loopN.
    """
    if ref.isdigit():
        return int(ref)
    if re.fullmatch(r"loop\d+", ref):
        return int(ref[4:])
    return loop.loop_number_of(ref, os.stat(ref))


def _records_by_number(include_unbound: bool) -> Dict[int, LoopInfo]:
    return {r.number: r for r in discovery.scan(include_unbound=include_unbound)}


# --- columns (util-linux 2.38 losetup) -------------------------------------------

STRING, NUMBER, BOOLEAN = "string", "number", "boolean"


class Column(NamedTuple):
    name: str
    json_type: str
    right: bool
    value: Callable[[LoopInfo], Optional[str]]
    help: str


def _bool(bit: int, unbound: str = "0") -> Callable[[LoopInfo], str]:
    return lambda r: ("1" if r.flags & bit else "0") if r.bound else unbound


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


COLUMNS: Dict[str, Column] = {c.name: c for c in (
    Column("NAME", STRING, False, lambda r: loop.device_path(r.number), "loop device name"),
    Column("AUTOCLEAR", BOOLEAN, True, _bool(4), "autoclear flag set"),
    Column("BACK-FILE", STRING, False, lambda r: r.backing_file, "device backing file"),
    Column("BACK-INO", NUMBER, True,
           lambda r: str(r.backing_inode) if r.has_status and r.backing_inode else None,
           "backing file inode number"),
    Column("BACK-MAJ:MIN", STRING, False, _back_majmin,
           "backing file major:minor device number"),
    Column("MAJ:MIN", STRING, False, _majmin, "loop device major:minor number"),
    Column("OFFSET", NUMBER, True, _if_bound(lambda r: r.offset), "offset from the beginning"),
    # Unbound: losetup falls back to "does the kernel support partscan" (yes).
    Column("PARTSCAN", BOOLEAN, True, _bool(8, unbound="1"), "partscan flag set"),
    Column("RO", BOOLEAN, True, lambda r: "1" if r.flags & 1 else "0", "read-only device"),
    Column("SIZELIMIT", NUMBER, True, _if_bound(lambda r: r.size_limit),
           "size limit of the file in bytes"),
    Column("DIO", BOOLEAN, True, _bool(16), "access backing file with direct-io"),
    Column("LOG-SEC", NUMBER, True, lambda r: str(r.block_size) if r.block_size else None,
           "logical sector size in bytes"),
)}

DEFAULT_COLUMNS = ("NAME", "SIZELIMIT", "OFFSET", "AUTOCLEAR", "RO", "BACK-FILE", "DIO",
                   "LOG-SEC")
ALL_COLUMNS = tuple(COLUMNS)


def parse_columns(spec: str) -> List[str]:
    """``-O`` list: comma-separated, case-insensitive; ``+COLS`` appends to the defaults."""
    names = list(DEFAULT_COLUMNS) if spec.startswith("+") else []
    for item in spec.lstrip("+").split(","):
        key = item.strip().upper()
        if key not in COLUMNS:
            raise CLIError(f"unknown column: {item}")
        names.append(key)
    return names


# --- output ----------------------------------------------------------------------

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


def _safe_human(value: str) -> str:
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
        elif unicodedata.category(ch) in ("Cc", "Cs"):
            out.extend("\\x%02x" % b for b in ch.encode("utf-8", "surrogateescape"))
        else:
            out.append(ch)
    return "".join(out)


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
    rows = [[_safe_human(v) for v in row] for row in rows]
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


class _StreamError(Exception):
    """A standard stream that cannot be used: closed (``>&-``), full
    (``>/dev/full``) or a pipe nobody reads (EPIPE: Python ignores SIGPIPE).

    ``reason`` says why (``No space left on device``, ``standard output is
    closed``); the message is the line :func:`main` prints.
    """

    def __init__(self, err: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.errno = err
        self.reason = reason

    @classmethod
    def closed(cls, what: str) -> "_StreamError":
        return cls(errno.EBADF, f"{what} is closed", f"{what} is closed")

    @classmethod
    def stdout_failed(cls, e: BaseException) -> "_StreamError":
        err = e.errno if isinstance(e, OSError) else None
        if err and err != errno.EBADF:
            reason = (e.strerror if isinstance(e, OSError) else None) or os.strerror(err)
            return cls(err, reason, f"cannot write to standard output: {reason}")
        return cls.closed("standard output")  # EBADF, or ValueError: a closed file object


class _ClosedStream:
    """Stands in for ``sys.stdout``/``sys.stdin`` while :func:`main` runs when
    the process started without that fd (``>&-``, ``<&-``): Python sets them
    to None, and then ``print()`` drops output without a word while
    ``.write()``/``.read()`` are AttributeErrors (tracebacks).  Any use
    raises :class:`_StreamError` instead, which main() reports in one line,
    whichever subcommand (extensions included) tried."""

    def __init__(self, what: str) -> None:
        self._what = what

    def _closed(self, *args: object, **kwargs: object) -> NoReturn:
        raise _StreamError.closed(self._what)

    write = writelines = read = readline = readlines = fileno = _closed

    def flush(self) -> None:
        """Nothing was written, so there is nothing to lose."""

    @property
    def buffer(self) -> "_ClosedStream":
        return self

    def isatty(self) -> bool:
        return False


_STREAM_NAMES = {"stdout": "standard output", "stdin": "standard input"}


def _silence(stream: object) -> None:
    """Point a failed standard stream's fd at /dev/null.

    What the failed write left in the stream's buffer would otherwise fail
    again when the interpreter flushes it at exit: an "Exception ignored"
    message and exit status 120 instead of ours.
    """
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    except (AttributeError, OSError, ValueError, _StreamError):
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)


def _write(data: bytes) -> None:
    """Write ``data`` to stdout and flush it now.

    Flushing here makes a failure (stdout closed, full, a broken pipe) the
    writing command's :class:`_StreamError`, while it can still act on it,
    instead of an error at exit after the command has reported success.
    """
    out = sys.stdout
    if out is None:
        if not data:
            return
        raise _StreamError.closed("standard output")
    try:
        out.flush()
        if data:
            out.buffer.write(data)
            out.buffer.flush()
    except _StreamError:
        raise  # the _ClosedStream stand-in
    except (OSError, ValueError) as e:
        _silence(out)
        raise _StreamError.stdout_failed(e) from e


def _write_text(text: str) -> None:
    _write(text.encode("utf-8", "surrogateescape"))


def _print_records(args: argparse.Namespace, records: List[LoopInfo]) -> None:
    if args.output_all:
        columns: List[str] = list(ALL_COLUMNS)
    elif args.output:
        columns = parse_columns(args.output)
    else:
        columns = list(DEFAULT_COLUMNS)
    if args.json:
        _write(render_json(columns, records))
    else:
        _write_text(render_table(columns, records, headings=not args.noheadings,
                                 raw=args.raw))


# --- subcommands -------------------------------------------------------------------

def _print_made(path: str, undo: Callable[[], None], undone: str, undo_failed: str) -> None:
    """Print the path of the device a command just made; undo it if that fails.

    A device nobody learnt the name of stays behind unnoticed (``losetup
    --show`` into a full disk or a closed pipe leaves it bound), so a
    command that cannot report what it made takes it back, as a half-done
    command should, and says so in one line naming the device.  The same
    for anything else that stops it here (Ctrl-C).
    """
    try:
        _write_text(path + "\n")  # flushed inside the try: see the failure while we can undo
    except BaseException as e:
        try:
            undo()
        except (OSError, ValueError) as u:
            outcome = f"{undo_failed}: {u.strerror if isinstance(u, OSError) and u.strerror else u}"
            if not isinstance(e, _StreamError):
                _error(f"{path}: {outcome}")
        else:
            outcome = undone
        if isinstance(e, _StreamError):
            raise CLIError(f"{path}: cannot print the device's name ({e.reason}); "
                           f"{outcome}") from e
        raise


def cmd_attach(args: argparse.Namespace) -> int:
    device = loop.attach(
        args.file,
        read_only=args.read_only,
        partscan=args.partscan,
        autoclear=args.autoclear,
        direct_io=args.direct_io == "on",
        block_size=args.sector_size or 0,
        offset=args.offset,
        size_limit=args.sizelimit,
    )
    try:
        _print_made(device.path, device.detach, "detached it again",
                    "detaching it again failed")
    finally:
        device.close()  # closes our fd (if detach did not); does not detach
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    if args.all == bool(args.devices):
        raise _UsageError("detach: give DEV... or --all, not both" if args.all
                          else "detach: give DEV... or --all")
    if args.all:
        targets = [loop.device_path(r.number) for r in discovery.scan()]
    else:
        targets = args.devices
    status = 0
    for dev in targets:
        try:
            loop.detach(dev if not dev.isdigit() else int(dev))
        except (OSError, ValueError) as e:
            if args.all and isinstance(e, OSError) and e.errno in (errno.ENXIO, errno.ENOENT):
                continue  # detached by someone else meanwhile
            _error(_describe(e, action="detach failed", default=dev))
            status = EXIT_FAILURE
    return status


def cmd_list(args: argparse.Namespace) -> int:
    if args.all and args.devices:
        raise _UsageError("list: give DEV... or --all, not both")
    if args.devices:
        numbers = [resolve_device(d) for d in args.devices]
        by_number = _records_by_number(include_unbound=True)
        records = []
        for dev, n in zip(args.devices, numbers):
            if n not in by_number:
                raise error_from_errno(errno.ENODEV, dev, "no such loop device")
            records.append(by_number[n])
    else:
        records = discovery.scan()
    _print_records(args, records)
    return 0


def _losetup_j_line(rec: LoopInfo) -> str:
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


def cmd_find(args: argparse.Namespace) -> int:
    records = discovery.find(args.file, offset=args.offset)
    if args.json or args.output or args.output_all:
        args.noheadings = args.raw = False
        _print_records(args, records)
    else:
        _write_text("".join(_losetup_j_line(r) + "\n" for r in records))
    return 0


def _info_fields(rec: LoopInfo) -> Dict[str, object]:
    parts = discovery.partitions(rec.number) if rec.bound else []
    bdev = rec.backing_devnum if rec.has_status else None
    return {
        "name": loop.device_path(rec.number),
        "number": rec.number,
        "maj:min": f"{rec.major}:{rec.minor}",
        "node": rec.has_node,
        "bound": rec.bound,
        "back-file": rec.backing_file,
        # True: not the full path, which sysfs cannot show (longer than a
        # page), but lo_file_name (63 bytes, '*' where cut); see LoopInfo.
        "back-file-partial": rec.backing_partial,
        "back-maj:min": f"{os.major(bdev)}:{os.minor(bdev)}" if bdev else None,
        "back-ino": rec.backing_inode if rec.has_status else None,
        "offset": rec.offset if rec.bound else None,
        "sizelimit": rec.size_limit if rec.bound else None,
        "size": rec.size_sectors * 512,
        "log-sec": rec.block_size,
        "ro": bool(rec.flags & 1),
        "autoclear": bool(rec.flags & 4),
        "partscan": bool(rec.flags & 8),
        "dio": bool(rec.flags & 16),
        "diskseq": rec.diskseq,
        "partitions": parts,
    }


def cmd_info(args: argparse.Namespace) -> int:
    number = resolve_device(args.device)
    rec = _records_by_number(include_unbound=True).get(number)
    if rec is None:
        raise error_from_errno(errno.ENODEV, args.device, "no such loop device")
    fields = _info_fields(rec)
    if args.json:
        _write_text(json.dumps(fields, indent=2, ensure_ascii=False) + "\n")
        return 0
    flags = [name for bit, name in ((1, "read-only"), (4, "autoclear"), (8, "partscan"),
                                    (16, "direct-io")) if rec.flags & bit]
    lines = [f"{fields['name']} ({fields['maj:min']})"
             + ("" if rec.has_node else " [no /dev node]")]
    if not rec.bound:
        lines.append("  not attached")
    else:
        ino = f" (dev {fields['back-maj:min']}, inode {fields['back-ino']})" \
            if fields["back-ino"] is not None else ""
        lines.append(f"  backing file: {_safe_human(rec.backing_file or '')}{ino}")
        if rec.backing_partial:
            lines.append("                (not the full path, which is too long for sysfs: "
                         "the kernel's 64-byte lo_file_name, '*' where cut)")
        lines += [
            f"  offset:       {rec.offset}",
            f"  size limit:   {rec.size_limit or 'none'}",
        ]
    lines += [
        f"  size:         {fields['size']} bytes",
        f"  block size:   {rec.block_size}",
        f"  flags:        {', '.join(flags) or 'none'}",
        f"  diskseq:      {rec.diskseq if rec.diskseq is not None else 'n/a'}",
    ]
    if rec.bound:
        lines.append(f"  partitions:   {' '.join(fields['partitions']) or 'none'}")  # type: ignore[arg-type]
    _write_text("\n".join(lines) + "\n")
    return 0


def cmd_set_capacity(args: argparse.Namespace) -> int:
    ref = args.device
    device = loop.open(int(ref) if ref.isdigit() else ref)
    try:
        device.set_capacity()
    finally:
        device.close()
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    # Arguments first: a usage error must not hinge on /dev/loop-control
    # existing or being ours to open (containers, non-root users).
    if args.action == "get-free":
        if args.number is not None:
            raise _UsageError("control get-free: takes no device number")
    elif args.number is None:
        raise _UsageError(f"control {args.action}: a device number is required")
    with loop.LoopControl() as ctl:
        if args.action == "get-free":
            # Not removed if it cannot be printed: GET_FREE reserves nothing, so
            # another process may have been handed the same device meanwhile.
            number = ctl.get_free()
        elif args.action == "add":
            number = ctl.add(cast(int, args.number))  # not None: checked above
            _print_made(loop.device_path(number), lambda: ctl.remove(number),
                        "removed it again", "removing it again failed")
            return 0
        else:
            ctl.remove(cast(int, args.number))
            return 0
    _write_text(loop.device_path(number) + "\n")
    return 0


# --- parser ----------------------------------------------------------------------------

class _UsageError(Exception):
    """Bad usage found after parsing: exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")

    def _print_message(self, message: str, file: object = None) -> None:
        # argparse's one funnel for help, version and usage text (3.9 to 3.13).
        # Its own drops what it cannot write (exit status 0 for lost --help
        # output) and falls back to stderr when stdout is None; help and
        # version are output like any other.  file is None: stderr was None.
        if not message:
            return
        if file is not None and file is sys.stdout:
            _write_text(message)
        else:
            _write_stderr(message)


def _add_output_options(p: argparse.ArgumentParser, *, table: bool = True) -> None:
    p.add_argument("-J", "--json", action="store_true", help="JSON output (as losetup -l --json)")
    p.add_argument("-O", "--output", metavar="COLUMNS",
                   help="columns, comma-separated (losetup names; +COLS adds to the defaults)")
    p.add_argument("--output-all", action="store_true", help="output all columns")
    if table:
        p.add_argument("-n", "--noheadings", action="store_true", help="no header line")
        p.add_argument("--raw", action="store_true", help="raw output (as losetup -l --raw)")


def _core_parser() -> "tuple[argparse.ArgumentParser, argparse._SubParsersAction[_Parser]]":
    """The parser with loopcore's own subcommands, and its subparsers action."""
    columns_help = "\n".join(f"  {c.name:>12}  {c.help}" for c in COLUMNS.values())
    parser = _Parser(
        prog=PROG,
        description="Set up, list and control Linux loop devices.",
        epilog=("Sizes take losetup's suffixes: K, M, G ... (1024), KiB, MiB ... (1024), "
                "KB, MB ... (1000).\n\nColumns for list -O:\n" + columns_help),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("attach", help="attach FILE to a free loop device; print its path")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-r", "--read-only", action="store_true", help="read-only device")
    p.add_argument("-P", "--partscan", action="store_true", help="scan the partition table")
    p.add_argument("--direct-io", nargs="?", const="on", default="on", choices=("on", "off"),
                   help="direct I/O to the backing file (default on, where the file allows it)")
    p.add_argument("-b", "--sector-size", type=_size_arg, metavar="SIZE",
                   help="logical block size")
    p.add_argument("-o", "--offset", type=_size_arg, default=0, metavar="OFFSET",
                   help="start at OFFSET bytes into FILE")
    p.add_argument("--sizelimit", type=_size_arg, default=0, metavar="SIZE",
                   help="use at most SIZE bytes of FILE")
    p.add_argument("--autoclear", action="store_true",
                   help="detach when the last user closes the device (this command closes "
                        "its own fd on exit: without another user that is at once)")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("detach", help="detach loop devices")
    p.add_argument("devices", nargs="*", metavar="DEV")
    p.add_argument("-a", "--all", action="store_true", help="detach every bound device")
    p.set_defaults(func=cmd_detach)

    p = sub.add_parser("list", help="list bound loop devices (as losetup -l)")
    p.add_argument("devices", nargs="*", metavar="DEV", help="only these devices")
    p.add_argument("-a", "--all", action="store_true",
                   help="all bound devices (the default without DEV)")
    _add_output_options(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("find", help="devices bound to FILE (as losetup -j)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--offset", type=_size_arg, metavar="OFFSET",
                   help="only devices at this offset")
    _add_output_options(p, table=False)
    p.set_defaults(func=cmd_find)

    p = sub.add_parser("info", help="everything about one device")
    p.add_argument("device", metavar="DEV")
    p.add_argument("-J", "--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("set-capacity", help="re-read the backing file's size")
    p.add_argument("device", metavar="DEV")
    p.set_defaults(func=cmd_set_capacity)

    p = sub.add_parser("control", help="/dev/loop-control: add N, remove N, get-free")
    p.add_argument("action", choices=("add", "remove", "get-free"))
    p.add_argument("number", nargs="?", type=_number_arg, metavar="N")
    p.set_defaults(func=cmd_control)

    return parser, sub


# --- errors and main --------------------------------------------------------------------

def _describe(e: BaseException, *, action: str = "", default: str = "") -> str:
    if isinstance(e, OSError):
        reason = e.strerror or os.strerror(e.errno or 0) or str(e)
        where = e.filename if e.filename is not None else default
        where = os.fsdecode(where) if isinstance(where, (bytes, os.PathLike)) else where
        head = f"{where}: " if where not in (None, "") else ""
        return f"{head}{action + ': ' if action else ''}{reason}"
    return f"{default + ': ' if default and default not in str(e) else ''}{e}"


def _write_stderr(text: str) -> None:
    """Write to stderr; where it is closed or broken, nothing (the exit
    status is all that is left to say it with)."""
    err = sys.stderr
    if err is None:
        return
    try:
        err.write(text)
        err.flush()
    except (OSError, ValueError):
        _silence(err)


def _error(message: str) -> None:
    message = " ".join(str(message).split("\n"))
    _write_stderr(f"{PROG}: {message}\n")


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: loopcore's own subcommands, plus the extension
    subcommand ``argv`` names, or every extension when it names none (help)."""
    parser, sub = _core_parser()
    wanted = next((a for a in argv or () if not a.startswith("-")), None)
    for command, module in SUBCOMMAND_MODULES.items():
        if wanted is None or wanted == command or wanted not in sub.choices:
            importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``loopcore`` and ``python -m loopcore``; returns the exit status.

    Whatever the standard streams are (closed, full, a pipe nobody reads):
    no traceback, at most one line on stderr (none where stderr is broken),
    exit status 1 when output was lost.
    """
    if argv is None:
        argv = sys.argv[1:]
    stand_ins = [name for name in ("stdout", "stdin") if getattr(sys, name) is None]
    for name in stand_ins:
        setattr(sys, name, _ClosedStream(_STREAM_NAMES[name]))
    try:
        return _run(argv)
    finally:
        for name in stand_ins:
            setattr(sys, name, None)


def _run(argv: Sequence[str]) -> int:
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)  # SystemExit for --help, --version, usage errors
        func = getattr(args, "func", None)
        if func is None:
            parser.error(f"{args.command}: this subcommand has no handler")
        status = int(func(args) or 0)
        _write(b"")  # what a handler left buffered (extensions print): lost output fails
        return status
    except _UsageError as e:
        _error(f"{e} (see '{PROG} --help')")
        return EXIT_USAGE
    except _StreamError as e:
        # A reader that went away (``loopcore list | head``) needs no word.
        if e.errno != errno.EPIPE:
            _error(str(e))
        return EXIT_FAILURE
    except CLIError as e:
        _error(str(e))
        return EXIT_FAILURE
    except (OSError, ValueError, TypeError) as e:
        if isinstance(e, BrokenPipeError):  # an extension's own write to stdout
            _silence(sys.stdout)
            return EXIT_FAILURE
        _error(_describe(e))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
