"""``loopcore-kpartx`` (also ``loopcore kpartx ARGS``, and the program run
under the name ``kpartx``): kpartx's command line, translated onto
``loopcore dm kpartx``.

kpartx's options (multipath-tools 0.9.4: ``-a -d -u -l -r -p SEP -s -n
-v -f``, the last of ``-a/-d/-u/-l`` winning) and one device or image
become a ``loopcore dm kpartx`` command line, run by the same handler (no
second policy): an image file gets a loop device of its own, which ``-d``
detaches, as kpartx does.  A bad command line prints the usage on stdout
and exits 1, as kpartx; a device that is not there prints kpartx's
``failed to stat() PATH``.  ``-g`` (force GPT) and ``-t TYPE`` are not
implemented: they fail with a line naming them.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import List, NoReturn, Optional, Sequence

from . import _rules, argparse_rules
from ._rules import StreamError, UsageError
from .getopt_long import GetoptError, getopt_long

__all__ = ["main", "translate"]

PROG = "kpartx"
EXIT_FAILURE = 1
USAGE = ("Usage: kpartx [-a|-d|-u|-l] [-r] [-p SEP] [-f] [-s|-n] [-v] wholedisk "
         "(loopcore's kpartx: see 'loopcore dm kpartx --help')\n")
#: kpartx's getopt string, read by :mod:`.getopt_long` ("p:" and "t:" take an argument)
SHORT_OPTIONS = "rladfgvp:t:snu"
_ACTIONS = {"a": "-a", "d": "-d", "u": "-u", "l": "-l"}
_FLAGS = {"r": "-r", "s": "-s", "n": "-n", "v": "-v"}
# -f (force devmap creation) is accepted and changes nothing: loopcore
# makes the maps -a asks for anyway
_UNSUPPORTED = "gt"


class _Usage(Exception):
    """A command line kpartx answers with its usage (its getopt line first)."""


def _usage(message: str = "") -> NoReturn:
    raise _Usage(message)


def translate(argv: Sequence[str]) -> List[str]:
    """The ``loopcore dm kpartx`` argv for kpartx's ``argv``."""
    action = "-l"
    flags: List[str] = []
    words: List[str] = []
    try:
        for letter, value in getopt_long(argv, SHORT_OPTIONS, None, words):
            if letter in _UNSUPPORTED:
                raise UsageError(f"option -{letter} is not implemented by loopcore")
            if letter == "p":
                # joined: argparse would take a separator such as "-part" for an option
                flags += [f"-p{value}"] if value else ["-p", ""]
            elif letter in _ACTIONS:
                action = _ACTIONS[letter]
            elif letter in _FLAGS:
                flags.append(_FLAGS[letter])
    except GetoptError as e:
        _usage(f"{PROG}: {e}")
    if len(words) != 1:
        _usage()
    return [action, *flags, "--", words[0]]


class _Parser(argparse_rules.Parser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _run(argv: List[str]) -> int:
    from . import dm as dm_cli  # device-mapper's imports only when a command runs

    top = _Parser(prog=PROG, add_help=False)
    dm_cli.add_parser(top.add_subparsers(dest="command", parser_class=_Parser))
    args = top.parse_args(["dm", "kpartx", *argv])
    return int(args.func(args) or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``loopcore-kpartx``; returns kpartx's exit status."""
    if argv is None:
        argv = sys.argv[1:]
    with _rules.standard_streams():
        try:
            translated = translate(argv)
            device = translated[-1]
            if not os.path.exists(device):
                _rules.write_text(f"failed to stat() {device}\n")
                return EXIT_FAILURE
            return EXIT_FAILURE if _run(translated) else 0
        except _Usage as e:
            if str(e):
                _rules.write_stderr(f"{e}\n")
            try:
                _rules.write_text(USAGE)
            except StreamError:
                pass
        except StreamError as e:
            if e.errno != errno.EPIPE:
                _rules.write_stderr(f"{PROG}: {e}\n")
        except UsageError as e:
            _rules.write_stderr(f"{PROG}: {_rules.one_line(str(e))}\n")
        except (_rules.CLIError, OSError, ValueError, TypeError) as e:
            _rules.write_stderr(f"{PROG}: {_rules.one_line(_rules.describe(e))}\n")
        except KeyboardInterrupt:
            return _rules.EXIT_INTERRUPTED
    return EXIT_FAILURE
