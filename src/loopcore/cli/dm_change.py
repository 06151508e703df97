"""The ``loopcore dm`` commands that change devices: create, load/reload,
wipe_table, remove, rename, suspend, resume, clear, message, wait,
setgeometry, mknodes.

Argument checks come before :func:`.dm_arguments.mapper` opens the
control node: they must neither need device-mapper nor wait on it.  Each
handler takes the parsed arguments and returns the exit status (see
:mod:`.dm` for the table of commands).
"""
from __future__ import annotations

import argparse
from typing import cast

from .. import dm
from ._rules import UsageError, write_json, write_text
from .dm_arguments import (
    check_name,
    check_uuid,
    explicit,
    has_selector,
    mapper,
    named,
    on_each_device,
    one,
    read_table,
    uint,
)

__all__ = ["create", "load", "wipe_table", "remove", "rename", "suspend", "resume", "clear",
           "message", "wait", "setgeometry", "mknodes"]


def create(args: argparse.Namespace) -> int:
    """``create NAME [-u UUID] [--notable | TABLE]``: create, load, resume."""
    check_name(args, args.name)
    if args.uuid is not None:
        check_uuid(args, args.uuid)  # before the control node, like the name
    table = None if args.notable else read_table(args)
    with mapper(args) as m:
        info = m.create(args.name, uuid=args.uuid, table=table, read_only=args.readonly)
    if args.json:
        write_json(info.as_dict())
    return 0


def load(args: argparse.Namespace) -> int:
    """``load|reload NAME [TABLE_FILE]``, or ``-u UUID [TABLE_FILE]``."""
    if has_selector(args) and args.name is not None:
        if args.table_file is not None:
            raise UsageError("give a device name or -u/-j/-m, not both")
        args.table_file, args.name = args.name, None  # `reload -u UUID TABLE_FILE`
    if args.name is not None:
        check_name(args, args.name)
    elif not has_selector(args):
        raise UsageError("no device specified")
    table = read_table(args)
    with mapper(args) as m:
        m.load(one(args, m, args.name), table, read_only=args.readonly)
    return 0


def wipe_table(args: argparse.Namespace) -> int:
    """``wipe_table NAME...``: an error table of the same size, resumed."""
    return on_each_device(args, lambda m, n: m.wipe_table(n))


def suspend(args: argparse.Namespace) -> int:
    """``suspend [--noflush] [--nolockfs] NAME...``."""
    return on_each_device(args, lambda m, n: m.suspend(n, noflush=args.noflush,
                                                        skip_lockfs=args.nolockfs))


def resume(args: argparse.Namespace) -> int:
    """``resume NAME...``: swap in a loaded table."""
    return on_each_device(args, lambda m, n: m.resume(n))


def remove(args: argparse.Namespace) -> int:
    """``remove [-f] [--retry] [--deferred] NAME...`` or ``remove --all``."""
    if args.all and explicit(args):
        raise UsageError("remove --all takes no device names")
    if not args.all and not explicit(args):
        raise UsageError("no device specified")
    with mapper(args, *args.names) as m:
        if args.all:
            m.remove_all(deferred=args.deferred)
            return 0
        retries = dm.REMOVE_RETRIES if args.retry else 0
        for _label, n in named(args, m):
            if args.force and m.info(n).open_count > 0:
                # dmsetup's --force: an open device gets an error table
                # first, so that its users fail and let go
                m.wipe_table(n)
            m.remove(n, deferred=args.deferred, retries=retries)
    return 0


def rename(args: argparse.Namespace) -> int:
    """``rename NAME NEW_NAME``, ``rename NAME --setuuid UUID``, or with -u/-j/-m."""
    if has_selector(args):
        if args.new_name is not None:
            raise UsageError("give a device name or -u/-j/-m, not both")
        args.new_name, args.name = args.name, None  # `rename -u UUID NEW_NAME`
    if args.setuuid is not None:
        if args.new_name is not None:
            raise UsageError("give a new name or --setuuid, not both")
        check_uuid(args, args.setuuid)
    elif args.new_name is None:
        raise UsageError("no new name given")
    with mapper(args, args.name, args.new_name) as m:
        dev = one(args, m, args.name)
        if args.setuuid is not None:
            m.set_uuid(dev, args.setuuid)
        else:
            m.rename(dev, cast(str, args.new_name))  # not None: checked above
    return 0


def clear(args: argparse.Namespace) -> int:
    """``clear NAME``: drop the inactive table."""
    with mapper(args, args.name) as m:
        m.clear(one(args, m, args.name))
    return 0


def message(args: argparse.Namespace) -> int:
    """``message [NAME] SECTOR MESSAGE...``: without -u/-j/-m the first word
    is the name; the target's reply, if any, is printed."""
    words = list(args.words)
    name = None if has_selector(args) else (words.pop(0) if words else None)
    if len(words) < 2:
        raise UsageError("give the sector and the message")
    sector = uint(words[0], "sector")
    with mapper(args, name) as m:
        reply = m.message(one(args, m, name), sector, " ".join(words[1:]))
    if reply:
        write_text(reply if reply.endswith("\n") else reply + "\n")
    return 0


def wait(args: argparse.Namespace) -> int:
    """``wait NAME [EVENT_NR]``: until the event number moves past EVENT_NR."""
    name, event_nr = args.name, args.event_nr
    if has_selector(args) and name is not None:
        if event_nr is not None:
            raise UsageError("give a device name or -u/-j/-m, not both")
        name, event_nr = None, name  # `wait -u UUID EVENT_NR`
    event = uint(event_nr, "event number") if event_nr is not None else 0
    with mapper(args, name) as m:
        info = m.wait(one(args, m, name), event)
    if args.json:
        write_json(info.as_dict())
    return 0


def setgeometry(args: argparse.Namespace) -> int:
    """``setgeometry [NAME] CYLINDERS HEADS SECTORS START``."""
    words = list(args.words)
    name = None if has_selector(args) else (words.pop(0) if len(words) == 5 else None)
    if len(words) != 4:
        raise UsageError("give the device, then cylinders, heads, sectors and start")
    try:
        numbers = [uint(w, "geometry") for w in words]
    except UsageError as e:
        raise UsageError(f"bad geometry {' '.join(words)!r}") from e
    with mapper(args, name) as m:
        m.set_geometry(one(args, m, name), *numbers)
    return 0


def mknodes(args: argparse.Namespace) -> int:
    """``mknodes [NAME]``: /dev/mapper as the kernel sees it (one device or all)."""
    with mapper(args, args.name) as m:
        m.mknodes(one(args, m, args.name) if args.name or has_selector(args) else None)
    return 0
