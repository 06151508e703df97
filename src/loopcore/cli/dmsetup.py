"""``loopcore-dmsetup`` (also ``loopcore dmsetup ARGS``, and the program
run under the name ``dmsetup``): dmsetup's command line, translated onto
``loopcore dm``.

Only the argv changes hands here: the options are read by glibc's
getopt_long as dmsetup's are (:mod:`.getopt_long`: anywhere on the line,
``--`` ends them, unique prefixes of long options, ``-abc`` clusters,
glibc's messages), the command's words and the
options it uses become a ``loopcore dm`` command line, and that runs the
same handlers as ``loopcore dm`` (no second policy).  What a script sees
is dmsetup's (Debian 12, 1.02.185): its output, exit status 1 for every
failure and usage error, and its error lines (``device-mapper: remove
ioctl on NAME  failed: REASON`` then ``Command failed.``; ``Couldn't
process command line.`` after a bad option).  A usage error is one line:
dmsetup's long usage text is not repeated.  Commands and options loopcore
does not implement (stats, the udev cookie and semaphore commands,
``--select``, ...) fail with a line naming them.
"""
from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from typing import Dict, List, NamedTuple, NoReturn, Optional, Sequence, Tuple

from . import _rules, argparse_rules
from ._rules import StreamError, UsageError
from .getopt_long import (
    NO_ARGUMENT,
    REQUIRED_ARGUMENT,
    GetoptError,
    LongOption,
    getopt_long,
)

__all__ = ["main", "COMMANDS", "LONG_OPTIONS"]

PROG = "dmsetup"
EXIT_FAILURE = 1  # dmsetup's status for every failure, usage errors included

#: dmsetup's long options in its own table order (getopt lists ambiguous
#: prefixes in this order), each with whether it takes an argument.
LONG_OPTIONS: Tuple[Tuple[str, bool], ...] = tuple(
    (name.rstrip("="), name.endswith("=")) for name in (
        "readonly alias= alldevices allprograms allregions area areas= areasize= bounds= "
        "checks clear columns concise count= deferred select= exec= filemap follow= force "
        "foreground gid= group groupid= help histogram inactive interval= length= "
        "manglename= major= minor= mode= nameprefixes nogroup noflush noheadings nolockfs "
        "noopencount nosuffix notable notimesuffix udevcookie= nomonitor noudevrules "
        "noudevsync options= precise programid= raw readahead= region regions= regionid= "
        "relative retry rows segments separator= setuuid showkeys sort= start= table= "
        "target= tree uid= units= uuid= unbuffered unquoted userdata= verbose= verifyudev "
        "version yes addnodeonresume addnodeoncreate").split())
_TAKES_ARGUMENT = dict(LONG_OPTIONS)

#: dmsetup's short options and the long option each stands for (``-v``
#: takes no argument although ``--verbose`` does, as in dmsetup).
SHORT_OPTIONS: Dict[str, str] = {
    "c": "columns", "C": "columns", "f": "force", "G": "gid", "h": "help", "j": "major",
    "m": "minor", "M": "mode", "n": "notable", "o": "options", "O": "sort", "r": "readonly",
    "S": "select", "u": "uuid", "U": "uid", "v": "verbose", "y": "yes",
}
_SHORT_TAKES_ARGUMENT = set("GjmMoOSuU")

#: Options that change nothing loopcore does: dmsetup's -v only adds
#: debug lines from -vv on; -y answers the prompts of udevcomplete_all;
#: --verifyudev checks the nodes udev made, which loopcore always does.
_IGNORED = {"verbose", "yes", "verifyudev", "checks", "noopencount"}


class Command(NamedTuple):
    """A dmsetup command: the ``loopcore dm`` command it runs, its word
    counts (``max_args`` -1: any), the options it passes on, and the ioctl
    dmsetup names in its error lines."""

    dm_command: str
    min_args: int
    max_args: int
    options: Tuple[str, ...] = ()
    ioctl: str = ""


_SELECT = ("uuid", "major", "minor", "manglename", "noudevsync")
_REPORT = ("columns", "options", "noheadings", "separator", "nameprefixes", "unquoted", "sort")

#: Every dmsetup command the drop-in runs, and what it becomes.
COMMANDS: Dict[str, Command] = {
    "create": Command("create", 0, 2, ("uuid", "notable", "table", "readonly", "manglename",
                                       "noudevsync"), "create"),
    "remove": Command("remove", 0, -1, ("retry", "deferred", "force", *_SELECT), "remove"),
    "remove_all": Command("remove", 0, 0, ("force", "deferred", "noudevsync"), "remove"),
    "suspend": Command("suspend", 0, -1, ("noflush", "nolockfs", *_SELECT), "suspend"),
    "resume": Command("resume", 0, -1, _SELECT, "resume"),
    "load": Command("load", 0, 2, ("table", "readonly", *_SELECT), "reload"),
    "reload": Command("reload", 0, 2, ("table", "readonly", *_SELECT), "reload"),
    "clear": Command("clear", 0, 1, _SELECT, "clear"),
    "wipe_table": Command("wipe_table", 0, -1, _SELECT, "reload"),
    "rename": Command("rename", 1, 2, ("setuuid", *_SELECT), "rename"),
    "message": Command("message", 2, -1, _SELECT, "message"),
    "ls": Command("ls", 0, 0, ("options", "tree", "target", "noudevsync"), "names"),
    "info": Command("info", 0, -1, (*_REPORT, *_SELECT), "info"),
    "deps": Command("deps", 0, -1, ("options", *_SELECT), "deps"),
    "status": Command("status", 0, -1, ("inactive", "target", *_SELECT), "status"),
    "table": Command("table", 0, -1, ("inactive", "showkeys", "target", "concise", *_SELECT),
                     "table"),
    "wait": Command("wait", 0, 2, _SELECT, "waitevent"),
    "mknodes": Command("mknodes", 0, -1, _SELECT, "info"),
    "targets": Command("targets", 0, 0, (), "targets"),
    "version": Command("version", 0, 0, (), "version"),
    "setgeometry": Command("setgeometry", 4, 5, _SELECT, "setgeometry"),
    "splitname": Command("splitname", 1, 2, _REPORT, ""),
    "target-version": Command("target-version", 1, -1, (), "get_target_version"),
}

#: dmsetup's commands loopcore does not implement.
UNIMPLEMENTED = ("stats", "measure", "mangle", "udevcreatecookie", "udevreleasecookie",
                 "udevflags", "udevcomplete", "udevcomplete_all", "udevcookies")

# the loopcore dm flag of each dmsetup long option a command may pass on
# (the option's argument follows where dmsetup's takes one); an option
# here that a command does not use is ignored, as dmsetup ignores it
_FLAGS: Dict[str, str] = {
    "columns": "-c", "options": "-o", "noheadings": "--noheadings",
    "separator": "--separator", "nameprefixes": "--nameprefixes", "unquoted": "--unquoted",
    "sort": "--sort", "uuid": "-u", "major": "-j", "minor": "-m",
    "manglename": "--manglename", "noudevsync": "--noudevsync", "notable": "--notable",
    "table": "--table", "readonly": "-r", "retry": "--retry", "deferred": "--deferred",
    "force": "-f", "noflush": "--noflush", "nolockfs": "--nolockfs", "setuuid": "--setuuid",
    "tree": "--tree", "inactive": "--inactive", "showkeys": "--showkeys", "target": "--target",
    "concise": "--concise",
}


class CommandLineError(Exception):
    """A command line dmsetup would not run: its line, then ``Couldn't
    process command line.``"""


class CommandError(Exception):
    """A command that failed before loopcore was asked: its line, then
    ``Command failed.``"""


class _Usage(Exception):
    """A usage error dmsetup answers with its usage text (one line here)."""


def _fail(message: str) -> NoReturn:
    raise CommandLineError(message)


# --- dmsetup's getopt -------------------------------------------------------------------

_LONG = tuple(LongOption(name, REQUIRED_ARGUMENT if takes else NO_ARGUMENT, name)
              for name, takes in LONG_OPTIONS)
_SHORT = "".join(letter + ":" * (letter in _SHORT_TAKES_ARGUMENT) for letter in SHORT_OPTIONS)


def parse(argv: Sequence[str]) -> Tuple[Dict[str, List[str]], List[str]]:
    """({long option: [values]}, words) as dmsetup's getopt_long reads
    ``argv``: options anywhere, ``--`` ends them."""
    opts: Dict[str, List[str]] = {}
    words: List[str] = []
    try:
        for key, value in getopt_long(argv, _SHORT, _LONG, words):
            opts.setdefault(SHORT_OPTIONS.get(key, key), []).append(value or "")
    except GetoptError as e:
        _fail(f"{PROG}: {e}")
    return opts, words


def _check_switches(opts: Dict[str, List[str]], command: str) -> None:
    """dmsetup's own checks of the options, before it runs the command."""
    if "table" in opts and "notable" in opts:
        _fail("--table and --notable are incompatible.")
    if ("major" in opts) != ("minor" in opts):
        _fail("Please specify both major number and minor number.")
    for mode in opts.get("manglename", []):
        if mode.lower() not in ("none", "hex", "auto"):   # (dmsetup: strcasecmp)
            _fail("Unknown name mangling mode.")


#: dmsetup's -o words naming devices (ls, deps), and its --tree -o words,
#: each in the order dmsetup tries a prefix against them
_DEVICE_LABELS = ("devno", "blkdevname", "devname")
_TREE_WORDS = ("device", "blkdevname", "nodevice", "status", "table", "active", "open",
               "uuid", "rw", "utf", "vt100", "ascii", "inverted", "compact", "notrunc")


def _words(value: str, words: Sequence[str], what: str) -> List[str]:
    """``value`` as dmsetup reads an -o list: comma-separated prefixes, each
    the first of ``words`` it begins; else ``WHAT not recognised: REST.``"""
    found, rest = [], value
    while rest:
        item, _comma, after = rest.partition(",")
        word = next((w for w in words if w.startswith(item)), "")
        if not word:
            _fail(f"{what} not recognised: {rest}.")
        found.append(word)
        rest = after
    return found


def _options_as_read(opts: Dict[str, List[str]], command: str) -> Dict[str, List[str]]:
    """``opts`` with -o as dmsetup reads it where it is not --columns' fields
    (splitname's always are): with --tree tree words (ls draws them), else a
    device label (ls and deps print it; the last word wins); the commands
    that do neither ignore it."""
    if "options" not in opts:
        return opts
    columns = "columns" in opts or command == "splitname"
    if "tree" in opts:
        value = ",".join(_words(opts["options"][-1], _TREE_WORDS, "Tree options"))
        used = command == "ls"
    elif columns:
        return opts
    else:
        value = (_words(opts["options"][-1], _DEVICE_LABELS, "Option") or ["devno"])[-1]
        used = command in ("ls", "deps")
    if columns:
        return opts
    read = {k: v for k, v in opts.items() if k != "options"}
    if used:
        read["options"] = [value]
    return read


# --- translation -------------------------------------------------------------------------

def _table_text(opts: Dict[str, List[str]], words: List[str], name_words: int) -> List[str]:
    """The table as ``--table TEXT``: from --table, the file word, or stdin
    (dmsetup reads stdin only when it is not a terminal)."""
    if "table" in opts:
        return []
    if len(words) > name_words:
        path = words.pop()
        try:
            with open(path) as f:
                return ["--table", f.read()]
        except OSError as e:
            raise CommandError(f"Couldn't open '{path}' for reading.") from e
    if sys.stdin is None or sys.stdin.isatty():
        return ["--table", ""]
    return ["--table", sys.stdin.read()]


def _atoi(text: str) -> int:
    """C's atoi, as dmsetup reads -j and -m: the leading digits, else 0."""
    match = re.match(r"\s*[+-]?\d+", text)
    return max(int(match.group()), 0) if match else 0


def _option(flag: str, value: str) -> List[str]:
    """``flag value`` for loopcore dm's parser, joined when the value starts
    with '-' (``--sort -name``), which argparse would take for an option."""
    if not value.startswith("-"):
        return [flag, value]
    return [f"{flag}={value}" if flag.startswith("--") else flag + value]


def translate(command: str, opts: Dict[str, List[str]], words: List[str]) -> List[str]:
    """The ``loopcore dm`` argv for dmsetup's ``command`` with ``opts`` and ``words``."""
    spec = COMMANDS[command]
    for name in opts:
        # (create --concise reads a concise table: not implemented)
        not_here = command == "create" and name in ("major", "minor", "concise")
        if not_here or (name not in spec.options and name not in _IGNORED
                            and name not in _FLAGS):
            raise CommandLineError(f"{PROG}: option '--{name}' is not supported by loopcore.")
    opts = _options_as_read(opts, command)
    argv = [spec.dm_command]
    for name in spec.options:
        for value in opts.get(name, []):
            if name in ("major", "minor"):
                value = str(_atoi(value))
            elif name == "manglename":
                value = value.lower()
            argv += _option(_FLAGS[name], value) if _TAKES_ARGUMENT[name] else [_FLAGS[name]]
    words = list(words)
    selected = "uuid" in opts or "major" in opts
    if command == "create":
        if not words:
            raise CommandError("Please provide a name for the new device.")
        if "/" in words[0]:
            raise CommandError(f'Name "{words[0]}" invalid. It contains "/".')
        if "notable" not in opts:
            table = _table_text(opts, words, 1)
            if table and not table[1].strip():
                table = ["--notable"]  # no table given: dmsetup creates the device without
            argv += table
    elif command in ("load", "reload"):
        argv += _table_text(opts, words, 0 if selected else 1)
    elif command == "remove_all":
        argv.append("--all")
    elif command in ("remove", "suspend", "resume", "wipe_table") and not words \
            and not selected:
        raise CommandError("No device specified.")
    elif command == "rename" and len(words) < 2 and not selected and "setuuid" not in opts:
        raise CommandError("No device specified.")
    # "--": a name starting with '-' stays a name (commands without names take none)
    return [*argv, "--", *words] if words or spec.dm_command in _NAMED else argv


# the loopcore dm commands that take device names (or table words)
_NAMED = frozenset(c.dm_command for c in COMMANDS.values()) - {"ls", "targets", "version"}


# --- errors as dmsetup words them --------------------------------------------------------

_TABLE_LINE = re.compile(r"table line (\d+):")


def _error_lines(command: str, words: List[str], e: BaseException) -> str:
    """dmsetup's line for a failure of ``command`` on ``words``."""
    spec = COMMANDS[command]
    if isinstance(e, OSError) and e.errno is not None:
        if e.errno == errno.ENXIO and spec.dm_command in ("info", "status"):
            return "Device does not exist."
        if command == "create" and e.errno != errno.EBUSY:
            ioctl = "reload"
        else:
            ioctl = spec.ioctl
        reason = os.strerror(e.errno)
        where = e.filename if isinstance(e.filename, str) else ""
        if where.endswith("/control"):
            return f"{where}: open failed: {reason}"
        if not ioctl or not where:
            return f"{where}: {reason}" if where else reason
        # libdevmapper's "NAME UUID" of the device the ioctl addressed
        if where.startswith("uuid "):
            name, uuid = "", where[len("uuid "):]
        else:
            name, uuid = os.path.basename(where), ""
        return f"device-mapper: {ioctl} ioctl on {name} {uuid} failed: {reason}"
    match = _TABLE_LINE.search(str(e))
    if match and isinstance(e, ValueError):
        return f"Invalid format on line {match.group(1)} of table ."
    return _rules.one_line(_rules.describe(e))


class _Parser(argparse_rules.Parser):
    """``loopcore dm``'s parser, whose errors come back as exceptions: the
    drop-in words them as dmsetup does."""

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{PROG}: {_rules.one_line(message)}")


def _dm_parser() -> argparse.ArgumentParser:
    from . import dm as dm_cli  # device-mapper's imports only when a command runs

    top = _Parser(prog=PROG, add_help=False)
    dm_cli.add_parser(top.add_subparsers(dest="command", parser_class=_Parser))
    return top


def _run(command: str, opts: Dict[str, List[str]], words: List[str]) -> int:
    argv = translate(command, opts, words)
    args = _dm_parser().parse_args(["dm", *argv])
    try:
        status = int(args.func(args) or 0)
        _rules.write(b"")
    except StreamError as e:
        if e.errno != errno.EPIPE:
            _rules.write_stderr(f"{e}\n")
        return EXIT_FAILURE
    except UsageError as e:
        raise CommandError(str(e)) from e
    except (_rules.CLIError, OSError, ValueError, TypeError) as e:
        raise CommandError(_error_lines(command, words, e)) from e
    return EXIT_FAILURE if status else 0


USAGE = ("Usage: dmsetup [OPTIONS] COMMAND [ARGS] (loopcore's dmsetup: "
         "see 'loopcore dm --help')\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``loopcore-dmsetup``; returns dmsetup's exit status."""
    if argv is None:
        argv = sys.argv[1:]
    with _rules.standard_streams():
        try:
            opts, words = parse(argv)
            _check_switches(opts, words[0] if words else "")
            if "help" in opts:
                _rules.write_stderr(USAGE)
                return 0
            if "version" in opts:
                words = ["version"]
            if not words:
                raise _Usage("")
            command, words = words[0], words[1:]
            if command == "help":
                if words:
                    raise _Usage("Incorrect number of arguments.")
                _rules.write_stderr(USAGE)
                return 0
            if command in UNIMPLEMENTED:
                raise CommandError(f"{PROG}: command '{command}' is not implemented "
                                   f"by loopcore.")
            spec = COMMANDS.get(command)
            if spec is None:
                raise _Usage("Unknown command.")
            if len(words) < spec.min_args or (spec.max_args >= 0
                                              and len(words) > spec.max_args):
                raise _Usage("Incorrect number of arguments.")
            return _run(command, opts, words)
        except CommandLineError as e:
            _rules.write_stderr(f"{e}\nCouldn't process command line.\n")
        except CommandError as e:
            _rules.write_stderr(f"{e}\nCommand failed.\n")
        except _Usage as e:
            _rules.write_stderr(f"{e}\n" if str(e) else USAGE)
        except KeyboardInterrupt:
            return _rules.EXIT_INTERRUPTED
    return EXIT_FAILURE
