"""The loop subcommands' parsers: one function per command, each adding
its options and its handler (:mod:`.loop`); a process builds only the
parser of the command it runs."""
from __future__ import annotations

import argparse

from .arguments import loop_number_arg, size_arg
from .columns import COLUMNS
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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, TypeVar

    _P = TypeVar("_P", bound=argparse.ArgumentParser)

__all__ = ["add_parser", "columns_help"]


def columns_help() -> str:
    """The ``--help`` epilog's list of ``list -O`` columns."""
    return "\n".join(f"  {c.name:>12}  {c.help}" for c in COLUMNS.values())


def _add_output_options(p: argparse.ArgumentParser, *, table: bool = True) -> None:
    p.add_argument("-J", "--json", action="store_true", help="JSON output (as losetup -l --json)")
    p.add_argument("-O", "--output", metavar="COLUMNS",
                   help="columns, comma-separated (losetup names; +COLS adds to the defaults)")
    p.add_argument("--output-all", action="store_true", help="output all columns")
    if table:
        p.add_argument("-n", "--noheadings", action="store_true", help="no header line")
        p.add_argument("--raw", action="store_true", help="raw output (as losetup -l --raw)")


def add_parser(sub: "argparse._SubParsersAction[_P]", wanted: Optional[str] = None) -> None:
    """Add the loop subcommands to ``sub``: only ``wanted`` where it names
    one (a process runs one command; building every parser was most of
    argparse's share of a ``loopcore list``), else all of them."""
    for name, adder in _ADDERS.items():
        if wanted not in _ADDERS or name == wanted:
            adder(sub, name)


def _add_attach(sub: "argparse._SubParsersAction[_P]", name: str) -> None:
    p = sub.add_parser(name, help="attach FILE to a free loop device (or to DEV, made "
                                  "if missing); print its path; several FILEs: one "
                                  "device each, one a line, all or none",
                       usage="%(prog)s [options] [DEV] FILE | FILE...")
    p.add_argument("operands", nargs="+", metavar="[DEV] FILE | FILE...")
    p.add_argument("-f", "--find", action="store_true",
                   help="a free device (the default without DEV; accepted for losetup's "
                        "-f --show)")
    p.add_argument("--show", action="store_true",
                   help="print the device's path (always done; accepted for losetup)")
    p.add_argument("-L", "--nooverlap", action="store_true",
                   help="reuse a device bound to the same bytes of FILE; refuse an "
                        "overlapping one")
    p.add_argument("-r", "--read-only", action="store_true", help="read-only device")
    p.add_argument("-P", "--partscan", action="store_true", help="scan the partition table")
    p.add_argument("--direct-io", nargs="?", const="on", default="on", choices=("on", "off"),
                   help="direct I/O to the backing file (default on, where the file allows it)")
    p.add_argument("-b", "--sector-size", type=size_arg, metavar="SIZE",
                   help="logical block size")
    p.add_argument("-o", "--offset", type=size_arg, default=0, metavar="OFFSET",
                   help="start at OFFSET bytes into FILE")
    p.add_argument("--sizelimit", type=size_arg, default=0, metavar="SIZE",
                   help="use at most SIZE bytes of FILE")
    p.add_argument("--autoclear", action="store_true",
                   help="detach when the last user closes the device (this command closes "
                        "its own fd on exit: without another user that is at once)")
    p.add_argument("--make-nodes", action="store_true",
                   help="make the /dev nodes of the device and its partitions where no "
                        "devtmpfs does (a container's /dev); also LOOPCORE_MAKE_NODES=1")
    p.set_defaults(func=cmd_attach)


def _add_partitions(sub: "argparse._SubParsersAction[_P]", name: str) -> None:
    p = sub.add_parser(name,
                       help="register the partitions of DEV's table (partx --add), remove "
                            "them (partx --delete), or list the table")
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("device", metavar="DEV")
    p.add_argument("-J", "--json", action="store_true", help="JSON output (list)")
    p.set_defaults(func=cmd_partitions)


def _add_detach(sub: "argparse._SubParsersAction[_P]", name: str) -> None:
    p = sub.add_parser(name, help="detach loop devices (DEV...: none unless each can be "
                                  "opened; --all: each that can be)")
    p.add_argument("devices", nargs="*", metavar="DEV")
    p.add_argument("-a", "--all", action="store_true", help="detach every bound device")
    p.add_argument("--wait", nargs="?", const=str(DETACH_WAIT_S), metavar="SECONDS",
                   help="return once the kernel released each backing file (another "
                        f"opener defers that), at most SECONDS (default {DETACH_WAIT_S:g}); "
                        "then fail naming who holds the device (write --wait=SECONDS: "
                        "--wait DEV waits the default)")
    p.set_defaults(func=cmd_detach)


def _add_list(sub: "argparse._SubParsersAction[_P]", name: str) -> None:
    p = sub.add_parser(name, help="list bound loop devices (as losetup -l)")
    p.add_argument("devices", nargs="*", metavar="DEV", help="only these devices")
    p.add_argument("-a", "--all", action="store_true",
                   help="all bound devices (the default without DEV)")
    _add_output_options(p)
    p.set_defaults(func=cmd_list)


def _add_find(sub: "argparse._SubParsersAction[_P]", name: str) -> None:
    p = sub.add_parser(name, help="devices bound to FILE (as losetup -j)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--offset", type=size_arg, metavar="OFFSET",
                   help="only devices at this offset")
    _add_output_options(p, table=False)
    p.set_defaults(func=cmd_find)


def _add_info(sub: "argparse._SubParsersAction[_P]", name: str) -> None:
    p = sub.add_parser(name, help="everything about one device")
    p.add_argument("device", metavar="DEV")
    p.add_argument("-J", "--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_info)


def _add_set_capacity(sub: "argparse._SubParsersAction[_P]", name: str) -> None:
    p = sub.add_parser(name, help="re-read the backing file's size")
    p.add_argument("device", metavar="DEV")
    p.set_defaults(func=cmd_set_capacity)


def _add_control(sub: "argparse._SubParsersAction[_P]", name: str) -> None:
    p = sub.add_parser(name, help="/dev/loop-control: add N, remove N, get-free")
    p.add_argument("action", choices=("add", "remove", "get-free"))
    p.add_argument("number", nargs="?", type=loop_number_arg, metavar="N")
    p.set_defaults(func=cmd_control)


#: each loop subcommand's parser, by name, in --help's order
_ADDERS = {
    "attach": _add_attach,
    "partitions": _add_partitions,
    "detach": _add_detach,
    "list": _add_list,
    "find": _add_find,
    "info": _add_info,
    "set-capacity": _add_set_capacity,
    "control": _add_control,
}
