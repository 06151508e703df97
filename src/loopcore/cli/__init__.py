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
- ``table_parser``: a command line as a table (options, operands, help),
  parsed by ``getopt_long`` (the drop-ins' engine too): the loop commands'
  and ``loopcore``'s own (``-h``, ``-V``, the command's name);
- ``arguments``: what users type: losetup's sizes, loop device references;
- ``columns``: losetup's ``-O`` columns and its JSON, table and raw output
  (a new column goes there);
- ``loop``: the loop subcommands' handlers, ``loop_parsers`` their
  command lines (a new one goes in both);
- ``dm``: ``loopcore dm ...``, over :mod:`loopcore.dm`: its table of
  commands, their handlers (``dm_show``, ``dm_change``), what users type
  (``dm_arguments``) and dmsetup's formats (``dm_report``, ``dm_tree``);
- ``dmlog``: ``loopcore dmlog serve`` (also ``python -m loopcore.dmlog``);
- ``argparse_rules``: ``_rules``' argparse parser, for ``dm``, ``dmlog``
  and extensions (argparse is imported only when one of them runs);
- ``losetup``: the drop-in, losetup's own command line (:data:`DROP_INS`:
  ``loopcore losetup ARGS`` or a program named ``losetup``), whose exit
  statuses and messages are losetup's, not these.
- ``dmsetup``, ``kpartx_dropin``: the drop-ins (:data:`DROP_INS`), the
  other tools' command lines translated onto ``dm``'s commands.

Subcommands outside the core: :data:`SUBCOMMAND_MODULES` maps each to its
module, which exposes ``add_parser(subparsers)`` adding an argparse parser
with ``set_defaults(func=handler)``; ``handler(args)`` returns the exit
status or raises :class:`UsageError`, :class:`CLIError` or an error of
loopcore's family.  A module (and argparse) is imported only when its
subcommand (or the help) is asked for, so ``loopcore list`` does not pay
for device-mapper's import, nor for argparse's.
"""
from __future__ import annotations

import os
import sys

from .._version import __version__
from . import _rules
from ._rules import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, PROG, CLIError, UsageError
from .getopt_long import NO_ARGUMENT, GetoptError, LongOption, getopt_long

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from types import ModuleType
    from typing import Dict, List, Optional, Sequence

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

DESCRIPTION = "Set up, list and control Linux loop devices."
#: ``loopcore``'s own options, before the command's name
_OPTIONS = [LongOption("help", NO_ARGUMENT, "h"), LongOption("version", NO_ARGUMENT, "V")]


def _module(name: str) -> ModuleType:
    """The module ``name``, imported (importlib's import_module without
    importlib: its import is a tenth of this package's own start-up)."""
    __import__(name)
    return sys.modules[name]


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The argparse parser of the extension subcommands
    (:data:`SUBCOMMAND_MODULES`: ``dm``, ``dmlog``): only the one ``argv``
    names, or every one when it names none.  The loop commands are not in
    it: :mod:`.table_parser` parses them (``loopcore list`` imports no
    argparse)."""
    from .argparse_rules import Parser

    parser = Parser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    wanted = next((a for a in argv or () if not a.startswith("-")), None)
    for command, module in SUBCOMMAND_MODULES.items():
        if wanted not in SUBCOMMAND_MODULES or wanted == command:
            _module(module).add_parser(sub)
    return parser


def _help() -> str:
    """``loopcore --help``: the commands (the loop ones from their table,
    the extensions from their parsers) and loopcore's own options."""
    import argparse

    from .columns import columns_help
    from .loop_parsers import COMMANDS
    from .table_parser import two_columns, wrap

    width = _rules.terminal_columns() - 2
    extensions = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    rows = [(name, command.help) for name, command in COMMANDS.items()]
    rows += [(a.dest, a.help or "") for a in extensions._get_subactions()]
    epilog = ("Sizes take losetup's suffixes: K, M, G ... (1024), KiB, MiB ... (1024), "
              "KB, MB ... (1000).")
    return "\n".join([
        f"usage: {PROG} [-h] [-V] COMMAND ...", "", *wrap(DESCRIPTION, width), "",
        "commands:", *two_columns(rows, width), "", "options:",
        *two_columns([("-h, --help", "show this help message and exit"),
                      ("-V, --version", "show program's version number and exit")], width),
        "", *wrap(epilog, width), "", "Columns for list -O:", columns_help(),
    ]) + "\n"


def _parse(argv: Sequence[str]) -> Optional[object]:
    """``loopcore``'s own options, then the command's: its parsed
    arguments, or None for help and the version (printed)."""
    words: List[str] = []
    try:  # "+": the command's name ends loopcore's options
        for key, _ in getopt_long(argv, "+hV", _OPTIONS, words):
            _rules.write_text(_help() if key == "h" else f"{PROG} {__version__}\n")
            return None
    except GetoptError as e:
        raise UsageError(str(e), PROG) from None
    if not words:
        raise UsageError("the following arguments are required: COMMAND", PROG)
    name = words[0]
    if name in SUBCOMMAND_MODULES:
        return build_parser([name]).parse_args(words)  # argparse's SystemExit: run's
    from .loop_parsers import COMMANDS
    from .table_parser import parse

    if name not in COMMANDS:
        choices = ", ".join(repr(c) for c in [*COMMANDS, *SUBCOMMAND_MODULES])
        raise UsageError(f"argument COMMAND: invalid choice: {name!r} (choose from {choices})",
                         PROG)
    return parse(COMMANDS[name], words[1:])


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
            return int(_module(DROP_INS[invoked_as]).main(argv))
    if argv and argv[0] in DROP_INS:  # everything after the name is the tool's
        return int(_module(DROP_INS[argv[0]]).main(argv[1:]))
    with _rules.standard_streams():
        return _rules.run(_parse, argv)
