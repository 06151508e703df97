"""``loopcore-losetup``: losetup's command line (util-linux 2.38 to 2.41), as it is.

Also ``loopcore losetup ARGS`` and a program named ``losetup`` (a
symlink to a loopcore console script): see :data:`loopcore.cli.DROP_INS`.
Only the command line is translated (:mod:`.losetup_command` reads it);
the work is the library's (:func:`loopcore.loop.attach`,
:func:`~loopcore.loop.detach`, :func:`~loopcore.loop.find`, ...), the
formats :mod:`.columns`', device references :mod:`.arguments`'.  What
differs from the loopcore CLI are losetup's defaults (direct I/O off
unless asked; ``-f FILE`` prints nothing without ``--show``), its exit
statuses (1 for a usage error too) and its messages, ``losetup: ...`` on
stderr, word for word where scripts and tests read them.
"""
from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Callable, List, Optional, Sequence

from .. import _sysfs, loop
from ..errors import Error, LoopOverlapError, NoFreeDeviceError
from ..loop import LoopDevice, LoopInfo
from . import _rules
from ._rules import CLIError, StreamError, print_made, write, write_text
from .arguments import loop_ref
from .columns import losetup_j_line, render_json, render_table
from .losetup_command import (
    CREATE,
    DETACH,
    DETACH_ALL,
    FIND_FREE,
    REMOVE,
    SET_BLOCK_SIZE,
    SET_CAPACITY,
    SET_DIRECT_IO,
    SHOW_ONE,
    Command,
    Exit,
    fail,
    parse,
    reason,
    warn,
)

__all__ = ["main"]


def _losetup_order(records: Sequence[LoopInfo]) -> List[LoopInfo]:
    """``records`` in the order losetup lists devices: /sys/block's."""
    rank = {number: i for i, number in enumerate(_sysfs.loop_listing_order())}
    return sorted(records, key=lambda r: rank.get(r.number, len(rank)))


def _print_table(cmd: Command, records: Sequence[LoopInfo]) -> None:
    columns = cmd.columns()
    if cmd.json:
        write(render_json(columns, records))
    else:
        write_text(render_table(columns, records, headings=not cmd.noheadings, raw=cmd.raw))


def _warn_size(file: str, sizelimit: int, offset: int) -> None:
    """losetup's warning for a device whose size is no whole number of sectors."""
    size = sizelimit
    if not size:
        try:
            st = os.stat(file)
        except OSError:
            return
        if stat.S_ISBLK(st.st_mode):
            return
        size = (st.st_size - offset) % (1 << 64)  # losetup's unsigned arithmetic
    if size < 512:
        warn(f"{file}: Warning: file is smaller than 512 bytes; the loop device may be "
             "useless or invisible for system tools.")
    elif size % 512:
        warn(f"{file}: Warning: file does not fit into a 512-byte sector; the end of the "
             "file will be ignored.")


def _create(cmd: Command) -> int:
    file = cmd.file or ""
    node = number = None
    if cmd.devices:
        try:
            ref = loop_ref(cmd.devices[0])
        except (Error, OSError, ValueError):
            raise _not_a_loop_device(cmd.devices[0], file) from None
        node, number = ref.node, ref.number
    try:
        device = loop.attach(file, number=number, reuse=cmd.nooverlap, read_only=cmd.read_only,
                             partscan=cmd.partscan, direct_io=bool(cmd.direct_io),
                             block_size=cmd.block_size or 0, offset=cmd.offset or 0,
                             size_limit=cmd.sizelimit)
    except LoopOverlapError:
        raise fail(f"{file}: overlapping loop device exists") from None
    except NoFreeDeviceError:
        raise fail("cannot find an unused loop device") from None
    except (Error, OSError, ValueError) as e:
        if cmd.nooverlap and isinstance(e, OSError) and e.errno == errno.EROFS:
            raise fail(f"{file}: overlapping read-only loop device exists") from None
        # losetup names the device when it could not open it, else the file
        device_failed = node is not None and isinstance(e, OSError) \
            and e.filename == node and e.errno != errno.EBUSY
        raise fail(f"{node if device_failed else file}: failed to set up loop device: "
                   f"{reason(e)}") from None
    try:
        if device.reused:
            # losetup keeps what it reuses: a mount's autoclear device stays after the umount
            try:
                device.set_autoclear(False)
            except (Error, OSError, ValueError):
                raise fail(f"{file}: failed to re-use loop device") from None
        if cmd.show:
            _print_device(device)
    finally:
        device.close()  # our fd only: the device stays bound
    _warn_size(file, cmd.sizelimit, cmd.offset or 0)
    return 0


def _not_a_loop_device(text: str, file: str) -> Exit:
    """losetup's words for ``DEV FILE`` where DEV is no loop device: it
    opens FILE, then DEV (``/dev/DEV`` for a bare name), and names DEV
    where DEV could not be opened, else FILE."""
    path = text if text.startswith("/") else "/dev/" + text
    try:
        os.stat(file)
    except OSError as e:
        return fail(f"{file if os.path.exists(path) else path}: failed to set up loop device: "
                    f"{reason(e)}")
    if not os.path.exists(path):
        return fail(f"{path}: failed to set up loop device: {os.strerror(errno.ENOENT)}")
    return fail(f"{file}: failed to set up loop device: {os.strerror(errno.ENOTTY)}")


def _print_device(device: LoopDevice) -> None:
    if device.reused:  # someone else's binding: never undone here
        write_text(device.path + "\n")
        return

    def undo() -> None:
        device.detach()

    try:
        print_made(device.path, undo, "detached it again", "detaching it again failed")
    except CLIError as e:
        raise fail(str(e)) from None


def _each_device(cmd: Command, what: str, call: Callable[[str], object]) -> int:
    """``call(node)`` for each device named; losetup's line for each failure."""
    status = 0
    for text in cmd.devices:
        try:
            node = loop_ref(text).node
            if cmd.act == DETACH and not os.path.exists(node):  # losetup stat()s it first
                raise FileNotFoundError(errno.ENOENT, text)
        except (Error, OSError, ValueError):
            warn(f"{text}: failed to use device: {os.strerror(errno.ENODEV)}")
            status = 1
            continue
        try:
            call(node)
        except (Error, OSError, ValueError) as e:
            warn(f"{node}: {what} failed: {reason(e)}")
            status = 1
    return status


def _on_open(method: Callable[[LoopDevice], None]) -> Callable[[str], None]:
    def call(node: str) -> None:
        device = loop.open(node)
        try:
            method(device)
        finally:
            device.close()
    return call


def _remove(node: str) -> None:
    with loop.LoopControl() as ctl:
        ctl.remove(loop_ref(node).number)


def _detach_all() -> int:
    status = 0
    for rec in loop.list_devices():
        name = loop.device_path(rec.number)
        try:
            loop.detach(name)
        except (Error, OSError, ValueError) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENXIO, errno.ENOENT):
                continue  # detached by someone else meanwhile
            warn(f"{name}: detach failed: {reason(e)}")
            status = 1
    return status


def _find_free() -> int:
    try:
        with loop.LoopControl() as ctl:
            number = ctl.get_free()
    except (Error, OSError) as e:
        raise fail(f"cannot find an unused loop device: {reason(e)}") from None
    write_text(loop.device_path(number) + "\n")
    return 0


def _show(cmd: Command) -> int:
    if cmd.file is not None:
        records = _losetup_order(loop.find(cmd.file, offset=cmd.offset))
    else:
        records = _losetup_order(loop.list_devices())
    if cmd.list:
        _print_table(cmd, records)
    else:
        write_text("".join(losetup_j_line(r) + "\n" for r in records))
    return 0


def _show_one(cmd: Command) -> int:
    number = loop_ref(cmd.devices[0]).number
    records = [r for r in loop.list_devices(include_unbound=True) if r.number == number]
    if cmd.list:
        _print_table(cmd, records)
        return 0
    if not records or not records[0].bound:
        # losetup's words: reading the backing file's name failed so
        raise fail(f"{cmd.devices[0]}: {os.strerror(errno.ENOENT)}")
    write_text(losetup_j_line(records[0]) + "\n")
    return 0


def _act(cmd: Command) -> int:
    if cmd.act == CREATE:
        return _create(cmd)
    if cmd.act == DETACH:
        return _each_device(cmd, "detach", loop.detach)
    if cmd.act == REMOVE:
        return _each_device(cmd, "remove", _remove)
    if cmd.act == SET_CAPACITY:
        return _each_device(cmd, "set capacity", _on_open(LoopDevice.set_capacity))
    if cmd.act == SET_DIRECT_IO:
        return _each_device(cmd, "set direct io", _on_open(
            lambda d: d.set_direct_io(bool(cmd.direct_io))))
    if cmd.act == SET_BLOCK_SIZE:
        return _each_device(cmd, "set logical block size", _on_open(
            lambda d: d.set_block_size(cmd.block_size or 0)))
    if cmd.act == DETACH_ALL:
        return _detach_all()
    if cmd.act == FIND_FREE:
        return _find_free()
    return _show_one(cmd) if cmd.act == SHOW_ONE else _show(cmd)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``loopcore-losetup`` (and ``loopcore losetup``, and a
    program named ``losetup``): run losetup's command line ``argv``
    (default ``sys.argv[1:]``) and return its exit status: 0 done, 1
    failed or misused (as losetup), 130 Ctrl-C."""
    args = list(sys.argv[1:] if argv is None else argv)
    with _rules.standard_streams():
        try:
            cmd = parse(args)
            return 0 if cmd is None else _act(cmd)
        except Exit as e:
            return e.status
        except StreamError as e:
            if e.errno != errno.EPIPE:
                warn(str(e))
            return 1
        except (Error, OSError, ValueError) as e:
            warn(_rules.describe(e))
            return 1
        except KeyboardInterrupt:
            return _rules.EXIT_INTERRUPTED
