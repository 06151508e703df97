"""The loop subcommands' command lines: one :class:`~.table_parser.Command`
row each in :data:`COMMANDS` (options, operands, help, the handler of
:mod:`.loop`), parsed by :func:`.table_parser.parse` (getopt_long: no
argparse on the way to ``loopcore list``)."""
from __future__ import annotations

from .arguments import loop_number_arg, parse_seconds, parse_size
from .loop import (
    DETACH_WAIT_S,
    cmd_attach,
    cmd_control,
    cmd_detach,
    cmd_find,
    cmd_info,
    cmd_list,
    cmd_partitions,
    cmd_set_capacity,
)
from .table_parser import OPTIONAL_ARGUMENT, REQUIRED_ARGUMENT, Command, Operand, Option, choice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Tuple

__all__ = ["COMMANDS"]

_JSON = Option("J", "json", "json", "JSON output (as losetup -l --json)")
_OUTPUT = (
    Option("O", "output", "output", "columns, comma-separated (losetup names; +COLS adds to "
           "the defaults)", REQUIRED_ARGUMENT, "COLUMNS"),
    Option("", "output-all", "output_all", "output all columns"),
)
_TABLE = (
    Option("n", "noheadings", "noheadings", "no header line"),
    Option("", "raw", "raw", "raw output (as losetup -l --raw)"),
)
_DEVICE = (Operand("device", "DEV"),)


def _size(short: str, long: str, dest: str, help: str, metavar: str = "SIZE",
          default: object = None) -> Option:
    return Option(short, long, dest, help, REQUIRED_ARGUMENT, metavar, parse_size, default)


_ATTACH = (
    Option("f", "find", "find", "a free device (the default without DEV; accepted for "
           "losetup's -f --show)"),
    Option("", "show", "show", "print the device's path (always done; accepted for losetup)"),
    Option("L", "nooverlap", "nooverlap", "reuse a device bound to the same bytes of FILE; "
           "refuse an overlapping one"),
    Option("r", "read-only", "read_only", "read-only device"),
    Option("P", "partscan", "partscan", "scan the partition table"),
    Option("", "direct-io", "direct_io", "direct I/O to the backing file (default on, where "
           "the file allows it)", OPTIONAL_ARGUMENT, "on|off", choice("on", "off"), "on", "on"),
    _size("b", "sector-size", "sector_size", "logical block size"),
    _size("o", "offset", "offset", "start at OFFSET bytes into FILE", "OFFSET", 0),
    _size("", "sizelimit", "sizelimit", "use at most SIZE bytes of FILE", default=0),
    Option("", "autoclear", "autoclear", "detach when the last user closes the device (this "
           "command closes its own fd on exit: without another user that is at once)"),
    Option("", "make-nodes", "make_nodes", "make the /dev nodes of the device and its "
           "partitions where no devtmpfs does (a container's /dev); also "
           "LOOPCORE_MAKE_NODES=1"),
)

_COMMANDS: Tuple[Command, ...] = (
    Command("attach", cmd_attach,
            "attach FILE to a free loop device (or to DEV, made if missing); print its path; "
            "several FILEs: one device each, one a line, all or none",
            _ATTACH, (Operand("operands", "FILE", "+"),), usage="[DEV] FILE | FILE..."),
    Command("partitions", cmd_partitions,
            "register the partitions of DEV's table (partx --add), remove them "
            "(partx --delete), or list the table",
            (Option("J", "json", "json", "JSON output (list)"),),
            (Operand("action", "{add,remove,list}", convert=choice("add", "remove", "list")),
             *_DEVICE)),
    Command("detach", cmd_detach,
            "detach loop devices (DEV...: none unless each can be opened; --all: each that "
            "can be)",
            (Option("a", "all", "all", "detach every bound device"),
             Option("", "wait", "wait", "return once the kernel released each backing file "
                    "(another opener defers that), at most SECONDS (default "
                    f"{DETACH_WAIT_S:g}); then fail naming who holds the device",
                    OPTIONAL_ARGUMENT, "SECONDS", parse_seconds, None, DETACH_WAIT_S)),
            (Operand("devices", "DEV", "*"),)),
    Command("list", cmd_list, "list bound loop devices (as losetup -l)",
            (Option("a", "all", "all", "all bound devices (the default without DEV)"),
             _JSON, *_OUTPUT, *_TABLE),
            (Operand("devices", "DEV", "*", help="only these devices"),)),
    Command("find", cmd_find, "devices bound to FILE (as losetup -j)",
            (_size("o", "offset", "offset", "only devices at this offset", "OFFSET"),
             _JSON, *_OUTPUT),
            (Operand("file", "FILE"),)),
    Command("info", cmd_info, "everything about one device",
            (Option("J", "json", "json", "JSON output"),), _DEVICE),
    Command("set-capacity", cmd_set_capacity, "re-read the backing file's size", (), _DEVICE),
    Command("control", cmd_control, "/dev/loop-control: add N, remove N, get-free", (),
            (Operand("action", "{add,remove,get-free}",
                     convert=choice("add", "remove", "get-free")),
             Operand("number", "N", "?", loop_number_arg))),
)

#: each loop subcommand, by name, in --help's order
COMMANDS: Dict[str, Command] = {c.name: c for c in _COMMANDS}
