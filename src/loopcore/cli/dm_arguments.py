"""What ``loopcore dm`` users type, and the devices it names.

A device is named by NAME (``--manglename`` says how it is encoded) or by
dmsetup's other ways: ``-u UUID``, ``-j MAJOR -m MINOR``.  Every name and
uuid typed on the command line, and every combination of them, is checked
before ``/dev/mapper/control`` is opened (:func:`mapper`): a bad one is a
:class:`UsageError` (exit status 2) that reads the same with or without
device-mapper, or the right to use it.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Callable, List, Optional, Tuple, cast

from .. import dm, errors
from ._rules import UsageError

__all__ = ["mangling", "check_name", "check_uuid", "mapper", "has_selector", "explicit",
           "need_device", "one", "named", "on_each_device", "read_table", "uint", "uint_arg"]


def mangling(args: argparse.Namespace) -> str:
    """The ``--manglename`` mode (commands without names: dmsetup's default)."""
    return cast(str, getattr(args, "manglename", "auto"))


def check_name(args: argparse.Namespace, name: str) -> None:
    """A device name from the command line: an invalid one is a usage error."""
    try:
        dm.validate_name(name, mangling(args))
    except ValueError as e:
        raise UsageError(str(e)) from e


def check_uuid(args: argparse.Namespace, uuid: str) -> None:
    """A uuid from the command line: an invalid one is a usage error."""
    try:
        dm.validate_uuid(uuid, mangling(args))
    except ValueError as e:
        raise UsageError(str(e)) from e


def mapper(args: argparse.Namespace, *names: Optional[str]) -> dm.DeviceMapper:
    """Open the control node after checking every name and the selector
    (bad ones are usage errors, reported before device-mapper is touched)."""
    for name in names:
        if name is not None:
            check_name(args, name)
    _check_selector(args)
    udev = "off" if getattr(args, "noudevsync", False) else "auto"
    return dm.DeviceMapper(name_mangling=mangling(args), udev=udev)


# --- -u UUID, -j MAJOR -m MINOR: dmsetup's other ways to name the device ----------

def has_selector(args: argparse.Namespace) -> bool:
    """-u or -j/-m was given."""
    return getattr(args, "select_uuid", None) is not None \
        or getattr(args, "major", None) is not None or getattr(args, "minor", None) is not None


def _check_selector(args: argparse.Namespace) -> None:
    if not has_selector(args):
        return
    if args.select_uuid is not None:
        if args.major is not None or args.minor is not None:
            raise UsageError("give -u or -j/-m, not both")
        check_uuid(args, args.select_uuid)
    elif args.major is None or args.minor is None:
        raise UsageError("-j MAJOR and -m MINOR go together")
    if getattr(args, "names", None):
        raise UsageError("give a device name or -u/-j/-m, not both")


def _selected(args: argparse.Namespace, m: dm.DeviceMapper) -> dm.DevIdArg:
    """The device -u or -j/-m names: by uuid, or the name of the device with
    that number (ENXIO if there is none)."""
    if args.select_uuid is not None:
        return dm.DevId.uuid(args.select_uuid, mangling(args))
    want = os.makedev(args.major, args.minor)
    for d in m.list_devices():
        if d.devnum == want:
            return d.kernel_name
    raise errors.error_from_errno(errno.ENXIO, f"{args.major}:{args.minor}",
                                  "No such device-mapper device", dm=True)


def explicit(args: argparse.Namespace) -> bool:
    """Devices were named (no "name: " prefix on their lines then)."""
    return bool(getattr(args, "names", None)) or has_selector(args)


def need_device(args: argparse.Namespace) -> None:
    """A command that acts on named devices only: naming none is a usage error."""
    if not explicit(args):
        raise UsageError("no device specified")


def one(args: argparse.Namespace, m: dm.DeviceMapper, name: Optional[str]) -> dm.DevIdArg:
    """The one device a command acts on: NAME, or -u/-j/-m."""
    if has_selector(args):
        return _selected(args, m)
    if name is None:
        raise UsageError("no device specified")
    return name


def named(args: argparse.Namespace, m: dm.DeviceMapper) -> List[Tuple[str, dm.DevIdArg]]:
    """(label, device to call with) for the devices ``args.names`` (or -u or
    -j/-m) names, or for all: those are addressed by their stored name,
    which unmangling may not give back."""
    if has_selector(args):
        dev = _selected(args, m)
        return [(str(dev), dev)]
    if args.names:
        return [(n, n) for n in args.names]
    return [(d.name, d.kernel_name) for d in m.list_devices()]


def on_each_device(args: argparse.Namespace,
                   action: Callable[[dm.DeviceMapper, dm.DevIdArg], object]) -> int:
    """``action(mapper, device)`` for each device the command line names."""
    need_device(args)
    with mapper(args, *args.names) as m:
        for _label, n in named(args, m):
            action(m, n)
    return 0


# --- tables and numbers ------------------------------------------------------------

def read_table(args: argparse.Namespace) -> dm.Table:
    """The table from --table TEXT, a file argument, or stdin."""
    if getattr(args, "table", None) is not None:
        text = args.table
    elif getattr(args, "table_file", None):
        with open(args.table_file) as f:
            text = f.read()
    else:
        text = sys.stdin.read()
    table = dm.Table.parse(text)
    if not table:
        raise ValueError("the table is empty (give --table, a table file, or a table on stdin)")
    return table


def uint_arg(text: str) -> int:
    """A number dmsetup takes (C's base 0: ``0x10``, ``010``), not negative,
    as an argparse type.  ASCII only, no '_': int()'s other digits and
    separators are not C's."""
    if not text.isascii() or "_" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    value = int(text, 0)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def uint(text: str, what: str) -> int:
    """:func:`uint_arg` for a word checked after parsing: a usage error
    naming ``what`` otherwise."""
    try:
        return uint_arg(text)
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise UsageError(f"bad {what} {text!r}") from e
