"""``loopcore dm ...``: a dmsetup-like command line over :mod:`loopcore.dm`.

:data:`COMMANDS` is the whole command line: each row names a command, its
handler, its help and its arguments; :func:`add_parser` turns the rows
into argparse parsers.  Adding a dmsetup command is one row here and one
handler in :mod:`.dm_show` (commands that print) or :mod:`.dm_change`
(commands that change devices); ``kpartx`` is :mod:`.dm_kpartx`'s.
Every command takes ``--noudevsync``;
:attr:`Command.names` adds ``--manglename``, :attr:`Command.json`
``--json``.  Handlers follow :mod:`._rules` (the loop commands' rules
too), and check names and argument combinations before
``/dev/mapper/control`` is opened (:mod:`.dm_arguments`).  Output follows
dmsetup's: the report formats are in :mod:`.dm_report` and
:mod:`.dm_tree`.

:func:`loopcore.cli.build_parser` imports this module only when ``dm`` (or
the help) is asked for, so the loop commands do not import device-mapper.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, NamedTuple, Tuple, TypeVar

from .. import dm
from . import dm_change, dm_kpartx, dm_show
from .dm_arguments import uint_arg
from .dm_tree import TREE_OPTIONS

__all__ = ["add_parser"]

_P = TypeVar("_P", bound=argparse.ArgumentParser)


class Arg(NamedTuple):
    """One ``add_argument`` call: its flags (or name) and keywords."""

    flags: Tuple[str, ...]
    options: Dict[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    """An :class:`Arg` written as the ``add_argument`` call it stands for."""
    return Arg(flags, options)


class Command(NamedTuple):
    """A row of :data:`COMMANDS`."""

    handler: Callable[[argparse.Namespace], int]
    help: str
    arguments: Tuple[Arg, ...] = ()
    #: takes ``--json``
    json: bool = False
    #: takes device names or uuids, so ``--manglename``
    names: bool = True
    aliases: Tuple[str, ...] = ()


def _flag(*flags: str, help: str) -> Arg:
    return arg(*flags, action="store_true", help=help)


_NOUDEVSYNC = "do not wait for udev (make /dev/mapper nodes directly)"

# -u UUID, -j MAJOR -m MINOR: dmsetup's other ways to name the device
SELECTORS = (
    arg("-u", "--uuid", dest="select_uuid", metavar="UUID", help="the device with this uuid"),
    arg("-j", "--major", type=uint_arg, help="the device with this major ..."),
    arg("-m", "--minor", type=uint_arg, help="... and this minor number"),
)
NAME = arg("name", nargs="?")
NAMES = arg("names", nargs="*", metavar="NAME")
TABLE_SOURCE = (
    arg("--table", metavar="TABLE", help="the table text ('start length type params' per line)"),
    arg("table_file", nargs="?", metavar="TABLE_FILE",
        help="read the table from this file (default: stdin)"),
    _flag("-r", "--readonly", help="read-only table"),
)
# dmsetup's report options (info -c, splitname)
REPORT = (
    arg("-o", "--options", metavar="FIELDS",
        help="comma-separated fields ('+F' adds to the default ones)"),
    _flag("--noheadings", help="no heading line (and ':'-separated, as dmsetup)"),
    arg("--separator", metavar="SEP", help="separate fields with SEP"),
    _flag("--nameprefixes", help="print DM_FIELD='value'"),
    _flag("--unquoted", help="with --nameprefixes: no quotes"),
    arg("-O", "--sort", metavar="FIELDS", help="sort by these fields ('-F' descending)"),
)
INACTIVE = _flag("--inactive", help="the inactive table")
TARGET = arg("--target", metavar="TYPE", help="only the lines (ls: devices) of this target type")

#: Every ``loopcore dm`` command, in the order its help lists them.
COMMANDS: Dict[str, Command] = {
    "ls": Command(dm_show.ls, "list devices: name (major:minor)", (
        arg("-o", "--output", help="devno (default), devname or blkdevname; with --tree, tree "
                                   "options: " + ",".join(TREE_OPTIONS)),
        _flag("--tree", help="draw the dependency tree"),
        TARGET,
    ), json=True),
    "create": Command(dm_change.create, "create a device, load its table and resume it", (
        arg("name"),
        arg("-u", "--uuid"),
        _flag("--notable", help="create without a table (suspended)"),
        *TABLE_SOURCE,
    ), json=True),
    "load": Command(dm_change.load, "load an inactive table (resume makes it live)",
                    (NAME, *TABLE_SOURCE, *SELECTORS), aliases=("reload",)),
    "wipe_table": Command(dm_change.wipe_table, "replace the table with an error target of "
                          "the same size, and resume", (NAMES, *SELECTORS)),
    "remove": Command(dm_change.remove, "remove devices", (
        NAMES,
        _flag("--deferred", help="remove on last close if open"),
        _flag("--retry", help="retry EBUSY 25 times, 200 ms apart (libdevmapper's policy)"),
        _flag("-f", "--force", help="give an open device an error table first (wipe_table)"),
        _flag("--all", help="remove every device not in use"),
        *SELECTORS,
    )),
    "rename": Command(dm_change.rename, "rename a device, or set its uuid with --setuuid", (
        NAME, arg("new_name", nargs="?"), arg("--setuuid", metavar="UUID"), *SELECTORS,
    )),
    "suspend": Command(dm_change.suspend, "suspend devices", (
        NAMES,
        _flag("--noflush", help="do not flush queued I/O"),
        _flag("--nolockfs", help="do not freeze a file system"),
        *SELECTORS,
    )),
    "resume": Command(dm_change.resume, "resume devices (swapping in a loaded table)",
                      (NAMES, *SELECTORS)),
    "clear": Command(dm_change.clear, "drop a device's inactive table", (NAME, *SELECTORS)),
    "table": Command(dm_show.table, "print the table of devices (all without names)", (
        NAMES, INACTIVE,
        _flag("--showkeys", help="print dm-crypt and dm-integrity keys (default: zeros)"),
        TARGET, _flag("--concise", help="all devices on one line, as "
                      "NAME,UUID,MINOR,rw|ro,TABLE[,TABLE...][;...]"),
        *SELECTORS,
    ), json=True),
    "status": Command(dm_show.status, "print the status of devices (all without names)",
                      (NAMES, INACTIVE, TARGET, *SELECTORS), json=True),
    "info": Command(dm_show.info, "print device information (all without names)",
                    (NAMES, _flag("-c", "-C", "--columns",
                                  help="one line per device, in columns (-o picks them)"),
                     *REPORT, *SELECTORS), json=True),
    "splitname": Command(dm_show.splitname, "split an LVM device name into VG, LV and layer", (
        arg("name"), arg("subsystem", nargs="?", default="LVM"),
        _flag("-c", "-C", "--columns", help="(the only format)"), *REPORT,
    ), names=False),
    "deps": Command(dm_show.deps, "print the devices a device uses", (
        NAMES, arg("-o", "--output", choices=dm_show.DEVICE_LABELS, default="devno"),
        *SELECTORS,
    ), json=True),
    "message": Command(dm_change.message, "send a message to a target (or '@...' to dm core)",
                       (arg("words", nargs="+", metavar="[NAME] SECTOR MESSAGE"), *SELECTORS)),
    "wait": Command(dm_change.wait, "wait until the device's event number moves past EVENT_NR",
                    (NAME, arg("event_nr", nargs="?"), *SELECTORS), json=True),
    "setgeometry": Command(dm_change.setgeometry, "set the device's CHS geometry", (
        arg("words", nargs="+", metavar="[NAME] CYLINDERS HEADS SECTORS START"), *SELECTORS,
    )),
    "targets": Command(dm_show.targets, "list the kernel's target types and versions",
                       json=True, names=False),
    "target-version": Command(dm_show.target_version, "print target types' versions",
                              (arg("targets", nargs="+", metavar="TARGET"),), names=False),
    "version": Command(dm_show.version, "print the kernel's device-mapper interface version",
                       names=False),
    "mknodes": Command(dm_change.mknodes, "make /dev/mapper match the kernel's devices",
                       (NAME, *SELECTORS)),
    "kpartx": Command(dm_kpartx.run, "map a disk's or image's partitions (like kpartx)", (
        arg("-a", dest="action", action="store_const", const="add", default="list",
            help="add a map per partition"),
        arg("-d", dest="action", action="store_const", const="delete",
            help="delete the maps (and detach an image's loop device)"),
        arg("-u", dest="action", action="store_const", const="update",
            help="add, and delete maps of partitions that are gone"),
        arg("-l", dest="action", action="store_const", const="list",
            help="list the maps -a would make (the default)"),
        arg("-r", action="store_true", dest="readonly", help="read-only maps"),
        arg("-p", dest="delimiter", metavar="SEP",
            help="between the disk's name and the number (default: 'p' after a digit)"),
        arg("-s", action="store_true", dest="sync",
            help="wait for udev to make the nodes (the default)"),
        arg("-n", action="store_true", dest="nosync", help="do not wait for udev"),
        arg("-v", action="store_true", dest="verbose",
            help="print each map made or deleted, as kpartx -v"),
        arg("device", metavar="DEVICE|IMAGE"),
    ), json=True, names=False),
}


def add_parser(subparsers: "argparse._SubParsersAction[_P]") -> None:
    """Add ``dm`` and a parser per row of :data:`COMMANDS` to ``subparsers``."""
    top = subparsers.add_parser("dm", help="device-mapper devices (like dmsetup)",
                                description="Device-mapper through /dev/mapper/control, "
                                            "with dmsetup's output formats.")
    top.add_argument("--noudevsync", action="store_true", help=_NOUDEVSYNC)
    sub = top.add_subparsers(dest="dm_command", metavar="COMMAND")
    sub.required = True
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help,
                           aliases=list(command.aliases))
        if command.json:
            p.add_argument("--json", action="store_true", help="print JSON")
        if command.names:
            p.add_argument("--manglename", choices=dm.MANGLING_MODES, default="auto",
                           help="name and uuid mangling, as dmsetup's: 'auto' (default) "
                                "stores characters udev does not allow as \\xNN and shows "
                                "them decoded; 'none' uses names as stored")
        # after the command too, as dmsetup takes it anywhere; SUPPRESS keeps
        # `dm --noudevsync COMMAND` from being reset by this default
        p.add_argument("--noudevsync", action="store_true", default=argparse.SUPPRESS,
                       help=_NOUDEVSYNC)
        for a in command.arguments:
            p.add_argument(*a.flags, **a.options)
        p.set_defaults(func=command.handler)
