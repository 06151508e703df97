"""losetup's command line (util-linux 2.38 to 2.41) read as losetup reads
it, for :mod:`.losetup`: its options (:mod:`.getopt_long`), their
mutual exclusions, the action they choose, and losetup's words for each
misuse (``losetup: ...`` on stderr, exit status 1).
"""
from __future__ import annotations

import errno
import os
from typing import Dict, List, Optional

from .._version import __version__
from ..errors import Error
from ._rules import one_line, write_stderr, write_text
from .arguments import LoopRef, loop_ref, parse_size
from .columns import ALL_COLUMNS, COLUMNS, DEFAULT_COLUMNS
from .getopt_long import (
    NO_ARGUMENT,
    OPTIONAL_ARGUMENT,
    REQUIRED_ARGUMENT,
    GetoptError,
    LongOption,
    getopt_long,
)

__all__ = ["PROG", "COMPATIBLE", "Exit", "warn", "fail", "reason", "Command", "parse",
           "CREATE", "DETACH", "DETACH_ALL", "FIND_FREE", "SHOW", "SHOW_ONE", "SET_CAPACITY",
           "SET_DIRECT_IO", "SET_BLOCK_SIZE", "REMOVE"]

PROG = "losetup"
#: the util-linux losetup whose command line this is
COMPATIBLE = "util-linux 2.38-2.41"

_SHORT = "ab:c:d:Dfhj:JlLno:O:PrRvV"
_LONG = tuple(LongOption(name, has_arg, key) for name, has_arg, key in (
    ("all", NO_ARGUMENT, "a"), ("set-capacity", REQUIRED_ARGUMENT, "c"),
    ("detach", REQUIRED_ARGUMENT, "d"), ("detach-all", NO_ARGUMENT, "D"),
    ("find", NO_ARGUMENT, "f"), ("nooverlap", NO_ARGUMENT, "L"), ("help", NO_ARGUMENT, "h"),
    ("associated", REQUIRED_ARGUMENT, "j"), ("json", NO_ARGUMENT, "J"),
    ("list", NO_ARGUMENT, "l"), ("sector-size", REQUIRED_ARGUMENT, "b"),
    ("noheadings", NO_ARGUMENT, "n"), ("offset", REQUIRED_ARGUMENT, "o"),
    ("output", REQUIRED_ARGUMENT, "O"), ("output-all", NO_ARGUMENT, "output-all"),
    ("sizelimit", REQUIRED_ARGUMENT, "sizelimit"), ("partscan", NO_ARGUMENT, "P"),
    ("read-only", NO_ARGUMENT, "r"), ("direct-io", OPTIONAL_ARGUMENT, "direct-io"),
    ("raw", NO_ARGUMENT, "raw"), ("show", NO_ARGUMENT, "show"),
    ("verbose", NO_ARGUMENT, "v"), ("version", NO_ARGUMENT, "V"),
    ("remove", NO_ARGUMENT, "R"),
))
_LONG_NAME = {o.key: o.name for o in reversed(_LONG)}

#: losetup's mutually exclusive options, a row each, in its order (its
#: message lists the row).  2.38's third row (-O) never fires there.
#: --remove (2.41) is named only when it is one of the two.
_EXCLUSIVE = (("D", "a", "c", "d", "f", "j", "R"), ("D", "c", "d", "f", "l", "R"),
              ("J", "raw"))

# actions, as losetup's main() chooses them
CREATE, DETACH, DETACH_ALL, FIND_FREE = "create", "detach", "detach-all", "find-free"
SHOW, SHOW_ONE, REMOVE = "show", "show-one", "remove"
SET_CAPACITY, SET_DIRECT_IO, SET_BLOCK_SIZE = "set-capacity", "set-direct-io", "set-block-size"

_USAGE = """
Usage:
 {p} [options] [<loopdev>]
 {p} [options] -f | <loopdev> <file>

Set up and control loop devices.

Options:
 -a, --all                     list all used devices
 -d, --detach <loopdev>...     detach one or more devices
 -D, --detach-all              detach all used devices
 -f, --find                    find first unused device
 -c, --set-capacity <loopdev>  resize the device
 -j, --associated <file>       list all devices associated with <file>
 -L, --nooverlap               avoid possible conflict between devices

 -o, --offset <num>            start at offset <num> into file
     --sizelimit <num>         device is limited to <num> bytes of the file
 -b, --sector-size <num>       set the logical sector size to <num>
 -P, --partscan                create a partitioned loop device
 -r, --read-only               set up a read-only loop device
     --direct-io[=<on|off>]    open backing file with O_DIRECT
     --show                    print device name after setup (with -f)
 -v, --verbose                 verbose mode

 -J, --json                    use JSON --list output format
 -l, --list                    list info about all or specified (default)
 -n, --noheadings              don't print headings for --list output
 -O, --output <cols>           specify columns to output for --list
     --output-all              output all columns
     --raw                     use raw --list output format

 -h, --help                    display this help
 -V, --version                 display version

Available output columns:
"""


class Exit(Exception):
    """Stop with this exit status; the message (if any) is printed already."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def warn(message: str) -> None:
    """``losetup: MESSAGE`` on stderr, one line."""
    write_stderr(f"{PROG}: {one_line(message)}\n")


def fail(message: str) -> Exit:
    """:func:`warn`, and the :class:`Exit` (status 1) to raise."""
    warn(message)
    return Exit(1)


def try_help(message: str) -> Exit:
    """A bad option: glibc's line, then losetup's pointer to --help."""
    warn(message)
    write_stderr(f"Try '{PROG} --help' for more information.\n")
    return Exit(1)


def reason(e: BaseException) -> str:
    """strerror, as losetup's err() prints it (loopcore's own ValueError
    stands for the kernel's EINVAL)."""
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)
    return os.strerror(errno.EINVAL)


def _size(text: str, what: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        err = errno.ERANGE if "too large" in str(e) else errno.EINVAL
        raise fail(f"{what}: '{text}': {os.strerror(err)}") from None


def _device(text: str) -> LoopRef:
    """A loop device that must exist (losetup's is_loopdev())."""
    try:
        ref = loop_ref(text)
        if os.path.exists(ref.node):
            return ref
    except (Error, OSError, ValueError):
        pass
    raise fail(f"{text}: failed to use device: {os.strerror(errno.ENODEV)}")


class Command:
    """What the command line asks for, as losetup's main() reads it."""

    def __init__(self) -> None:
        self.act: Optional[str] = None
        self.list = self.json = self.raw = self.noheadings = self.output_all = False
        self.output: Optional[str] = None
        self.offset: Optional[int] = None
        self.sizelimit = 0
        self.block_size: Optional[int] = None
        self.read_only = self.partscan = self.show = self.nooverlap = False
        self.direct_io: Optional[bool] = None  # None: not on the command line
        self.file: Optional[str] = None
        self.devices: List[str] = []
        self.seen: Dict[int, str] = {}  # exclusive row -> its first option

    def exclusive(self, key: str) -> None:
        """losetup's check of each option against those before it."""
        for row_number, row in enumerate(_EXCLUSIVE):
            if key not in row:
                continue
            first = self.seen.setdefault(row_number, key)
            if first != key:
                names = " ".join(f"--{_LONG_NAME[k]}" for k in row
                                 if k != "R" or "R" in (first, key))
                raise fail(f"mutually exclusive arguments: {names}")

    def option(self, key: str, value: Optional[str]) -> None:
        """One option, in command-line order."""
        self.exclusive(key)
        if key in ("a", "j"):
            self.act, self.file = SHOW, value
        elif key in ("c", "d"):
            self.act = SET_CAPACITY if key == "c" else DETACH
            self.devices = [_device(value or "").node]
        elif key in ("D", "f", "R"):
            self.act = {"D": DETACH_ALL, "f": FIND_FREE, "R": REMOVE}[key]
        elif key == "b":
            self.block_size = _size(value or "", "failed to parse logical block size")
        elif key == "o":
            self.offset = _size(value or "", "failed to parse offset")
        elif key == "sizelimit":
            self.sizelimit = _size(value or "", "failed to parse size")
        elif key == "O":
            self.output, self.list = value, True
        elif key == "direct-io":
            if value not in (None, "on", "off"):
                raise fail(f"argument error: '{value}'")
            self.direct_io = value != "off"
        else:
            attribute = {"J": "json", "l": "list", "L": "nooverlap", "n": "noheadings",
                         "raw": "raw", "output-all": "output_all", "P": "partscan",
                         "r": "read_only", "show": "show"}.get(key)
            if attribute:
                setattr(self, attribute, True)
            # -v: accepted, as losetup 2.38 does, for nothing

    def choose(self, operands: List[str], argc: int) -> None:
        """losetup's choice of action from what is left (its order of checks);
        ``argc`` counts the arguments given."""
        if argc == 0 or (self.act is None and argc == 1 and (self.raw or self.json)):
            self.act, self.list = SHOW, True
        if self.act == FIND_FREE and operands:
            self.act, self.file = CREATE, operands.pop(0)
            if operands:
                raise fail("unexpected arguments")
        if self.list and self.act is None and not operands:
            self.act = SHOW
        if self.act is None and len(operands) == 1:
            if self.direct_io is not None:
                self.act = SET_DIRECT_IO
            else:
                self.act = SET_BLOCK_SIZE if self.block_size is not None else SHOW_ONE
            self.devices = [_device(operands.pop(0)).node]
        if self.act is None:
            self.act = CREATE
            if not operands:
                raise fail("no loop device specified")
            self.devices = [operands.pop(0)]
            if not operands:
                raise fail("no file specified")
            self.file = operands.pop(0)
        if self.act == REMOVE and not operands:
            raise fail("no loop device specified")
        if self.act in (DETACH, REMOVE):
            self.devices += operands
        setup_only = self.sizelimit or self.read_only or self.partscan or self.show \
            or (self.direct_io and self.act != SET_DIRECT_IO)
        if self.act != CREATE and setup_only:
            raise fail("the options --{sizelimit,partscan,read-only,show} are allowed "
                        "during loop device setup only")
        if self.offset is not None and self.act != CREATE \
                and (self.act != SHOW or not self.file):
            raise fail("the option --offset is not allowed in this context")

    def columns(self) -> List[str]:
        """The ``-O`` columns as losetup splits them (names as typed, case
        aside; ``+COLS`` adds to the defaults or to --output-all's)."""
        columns = list(ALL_COLUMNS if self.output_all else DEFAULT_COLUMNS)
        if self.output is None:
            return columns
        text = self.output[1:] if self.output.startswith("+") else self.output
        names = columns if self.output.startswith("+") else []
        begin: Optional[int] = None
        for i, char in enumerate(text):
            begin = i if begin is None else begin
            end = i + 1 if i + 1 == len(text) else i if char == "," else None
            if end is None:
                continue
            if end <= begin:  # an empty name: losetup fails without a word
                raise Exit(1)
            name = text[begin:end].upper()
            if name not in COLUMNS:
                raise fail(f"unknown column: {text[begin:]}")
            names.append(name)
            begin = None
        if not text:
            raise Exit(1)
        return names


def usage() -> str:
    """``losetup --help``'s text (the columns are :mod:`.columns`')."""
    return _USAGE.format(p=PROG) + "".join(
        f" {c.name:>12}  {c.help}\n" for c in COLUMNS.values()) + \
        f"\nFor more details see {PROG}(8).\n"


def parse(argv: List[str]) -> Optional[Command]:
    """The command ``argv`` asks for; None when it was ``--help`` or
    ``--version`` (printed).  A misuse raises :class:`Exit`, its line printed."""
    cmd = Command()
    operands: List[str] = []
    try:
        for key, value in getopt_long(argv, _SHORT, _LONG, operands):
            if key == "h":
                write_text(usage())
                return None
            if key == "V":
                write_text(f"{PROG} from loopcore {__version__} ({COMPATIBLE} command line)\n")
                return None
            cmd.option(key, value)
    except GetoptError as e:
        raise try_help(str(e)) from None
    cmd.choose(operands, len(argv))
    cmd.columns()  # an unknown column fails before anything is done
    return cmd
