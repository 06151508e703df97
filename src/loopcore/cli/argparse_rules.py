"""The rules of :mod:`._rules` for the subcommands argparse still parses:
``dm`` and ``dmlog`` (and extensions of :data:`loopcore.cli.SUBCOMMAND_MODULES`),
and the drop-ins' dm parsers.  Imported only when one of them runs: the
loop commands are parsed by :mod:`.table_parser`, without argparse.
"""
from __future__ import annotations

import argparse
import sys

from ._rules import EXIT_USAGE, one_line, terminal_columns, write_stderr, write_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn

__all__ = ["Parser"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, exit status 2, and help that is
    output like any other (a lost ``--help`` is a failure, not exit 0).

    Every parser records its ``prog`` (``loopcore dm remove``) in the parsed
    arguments, the innermost one winning, so that a :class:`UsageError` a
    handler raises points at the same help an argparse error would.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_defaults(usage_prog=self.prog)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {one_line(message)} (see '{self.prog} --help')\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's own makes a formatter for every add_argument, and each
        # imports shutil for the terminal's width (shutil brings bz2, lzma,
        # fnmatch).  The width, as shutil.get_terminal_size() finds it:
        formatter: Callable[..., argparse.HelpFormatter] = self.formatter_class
        return formatter(prog=self.prog, width=terminal_columns() - 2)

    def _print_message(self, message: str, file: object = None) -> None:
        # argparse's one funnel for help, version and usage text (3.9 to 3.13).
        # Its own drops what it cannot write (exit status 0 for lost --help
        # output) and falls back to stderr when stdout is None; help and
        # version are output like any other.  file is None: stderr was None.
        if not message:
            return
        if file is not None and file is sys.stdout:
            write_text(message)
        else:
            write_stderr(message)
