"""The ``loopcore`` command line: losetup's loop commands, dmsetup's dm
ones and the dm-log-userspace server.

``loopcore list --json`` prints what ``losetup -l --json`` (util-linux
2.38) prints for the same devices and columns, key for key and byte for
byte, except that devices come in number order.  Every command, loop, dm
or dmlog, follows one contract (:mod:`._rules`): exit status 0 done, 1
failed (the error is one line on stderr naming the file or device), 2 a
usage error, 130 Ctrl-C; :func:`main` returns it, usage errors included.

One file per job:

- ``_rules``: what every subcommand follows: exit statuses, the one-line
  errors, output that cannot be written, Ctrl-C (its ``run`` applies them
  to whatever a handler returns or raises);
- ``arguments``: what users type: losetup's sizes, loop device references;
- ``columns``: losetup's ``-O`` columns and its JSON, table and raw output
  (a new column goes there);
- ``loop``: the loop subcommands' handlers, ``loop_parsers`` their
  parsers (a new one goes in both);
- ``dm``: ``loopcore dm ...``, over :mod:`loopcore.dm`: its table of
  commands, their handlers (``dm_show``, ``dm_change``), what users type
  (``dm_arguments``) and dmsetup's formats (``dm_report``, ``dm_tree``);
- ``dmlog``: ``loopcore dmlog serve`` (also ``python -m loopcore.dmlog``);
- ``losetup``: the drop-in, losetup's own command line (:data:`DROP_INS`:
  ``loopcore losetup ARGS`` or a program named ``losetup``), whose exit
  statuses and messages are losetup's, not these.
- ``dmsetup``, ``kpartx_dropin``: the drop-ins (:data:`DROP_INS`), the
  other tools' command lines translated onto ``dm``'s commands.

Subcommands outside the core: :data:`SUBCOMMAND_MODULES` maps each to its
module, which exposes ``add_parser(subparsers)`` adding a parser with
``set_defaults(func=handler)``; ``handler(args)`` returns the exit status
or raises :class:`UsageError`, :class:`CLIError` or an error of loopcore's
family.  A module is imported only when its subcommand (or the help) is
asked for, so ``loopcore list`` does not pay for device-mapper's import.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .._version import __version__
from . import _rules
from ._rules import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, PROG, CLIError, UsageError
from .loop_parsers import add_parser as _add_loop_commands
from .loop_parsers import columns_help as _columns_help

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Sequence

__all__ = [
    "main", "build_parser", "SUBCOMMAND_MODULES", "DROP_INS",
    "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "CLIError", "UsageError",
]

#: Drop-ins: another tool's command line, as it is, by the tool's name:
#: ``loopcore NAME ARGS``, or a program called NAME (a symlink).
DROP_INS: Dict[str, str] = {
    "losetup": "loopcore.cli.losetup",
    "dmsetup": "loopcore.cli.dmsetup",
    "kpartx": "loopcore.cli.kpartx_dropin",
}

#: Subcommands added by modules imported on demand (see the docstring).
SUBCOMMAND_MODULES: Dict[str, str] = {"dm": "loopcore.cli.dm", "dmlog": "loopcore.cli.dmlog"}


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: loopcore's own subcommands, plus the extension
    subcommand ``argv`` names, or every extension when it names none (help)."""
    parser = _rules.Parser(
        prog=PROG,
        description="Set up, list and control Linux loop devices.",
        epilog=("Sizes take losetup's suffixes: K, M, G ... (1024), KiB, MiB ... (1024), "
                "KB, MB ... (1000).\n\nColumns for list -O:\n" + _columns_help()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_rules.Parser)
    sub.required = True
    wanted = next((a for a in argv or () if not a.startswith("-")), None)
    _add_loop_commands(sub, wanted)  # only ``wanted`` where it is a loop command
    # every extension for the help, or for a word that names no command
    # (its error lists them all)
    every = wanted is None or (wanted not in sub.choices and wanted not in SUBCOMMAND_MODULES)
    for command, module in SUBCOMMAND_MODULES.items():
        if every or wanted == command:
            importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``loopcore`` and ``python -m loopcore``; returns the exit status.

    Never raises SystemExit: a usage error returns 2, ``--help`` 0 (a
    drop-in of :data:`DROP_INS` returns its tool's statuses instead).
    Whatever the standard streams are (closed, full, a pipe nobody reads):
    no traceback, at most one line on stderr (none where stderr is broken),
    exit status 1 when output was lost.
    """
    if argv is None:
        argv = sys.argv[1:]
        invoked_as = os.path.basename(sys.argv[0])
        if invoked_as in DROP_INS:  # a symlink named losetup, dmsetup, kpartx
            return int(importlib.import_module(DROP_INS[invoked_as]).main(argv))
    if argv and argv[0] in DROP_INS:  # everything after the name is the tool's
        return int(importlib.import_module(DROP_INS[argv[0]]).main(argv[1:]))
    with _rules.standard_streams():
        return _rules.run(build_parser(argv), argv)
