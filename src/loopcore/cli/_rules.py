"""The rules every ``loopcore`` subcommand follows, loop, dm and dmlog alike.

- Exit status: 0 done, 1 failed (:data:`EXIT_FAILURE`), 2 usage error
  (:data:`EXIT_USAGE`: a bad option or argument, a bad combination of
  them, an invalid name typed on the command line), 130 Ctrl-C;
  :func:`run` returns it, the parser's own usage errors included.
- Errors are one line on stderr, ``loopcore: FILE: what happened``,
  naming the file or device; nothing a user can type gives a traceback.
- Output goes through :func:`write` / :func:`write_text` /
  :func:`write_json`: bytes exactly
  (names that are not UTF-8 come out as they are), flushed at once, and
  output that cannot be written (stdout closed, full, a pipe nobody reads)
  is a failure, exit 1.  A command that made something it then cannot name
  undoes it (:func:`print_made`).

A handler (``func`` in the parsed arguments) returns the exit status or
raises: :class:`UsageError`, :class:`CLIError`, any :class:`loopcore.Error`,
or a builtin ``OSError``/``ValueError``/``TypeError``; :func:`run` turns
each into its line and status.
"""
from __future__ import annotations

import errno
import os
import sys

from ..errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, NoReturn, Optional, Sequence, Union

__all__ = [
    "PROG", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "CLIError", "UsageError",
    "StreamError", "write", "write_text", "write_json", "write_stderr", "error",
    "one_line",
    "describe", "print_made", "standard_streams", "terminal_columns", "run",
]

PROG = "loopcore"

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


class CLIError(Exception):
    """A failure to report as one line on stderr, exit status 1."""


class UsageError(Exception):
    """Bad usage (a bad option or operand, a bad combination of them, an
    invalid name): one line on stderr, exit status 2.  ``prog`` names the
    command whose help the line points at (None: the parsed arguments'
    ``usage_prog``, else ``loopcore``)."""

    def __init__(self, message: str, prog: Optional[str] = None) -> None:
        super().__init__(message)
        self.prog = prog


# --- standard streams ------------------------------------------------------------

class StreamError(Exception):
    """A standard stream that cannot be used: closed (``>&-``), full
    (``>/dev/full``) or a pipe nobody reads (EPIPE: Python ignores SIGPIPE).

    ``reason`` says why (``No space left on device``, ``standard output is
    closed``); the message is the line :func:`run` prints.
    """

    def __init__(self, err: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.errno = err
        self.reason = reason

    @classmethod
    def closed(cls, what: str) -> "StreamError":
        return cls(errno.EBADF, f"{what} is closed", f"{what} is closed")

    @classmethod
    def stdout_failed(cls, e: BaseException) -> "StreamError":
        err = e.errno if isinstance(e, OSError) else None
        if err and err != errno.EBADF:
            reason = (e.strerror if isinstance(e, OSError) else None) or os.strerror(err)
            return cls(err, reason, f"cannot write to standard output: {reason}")
        return cls.closed("standard output")  # EBADF, or ValueError: a closed file object


class _ClosedStream:
    """Stands in for ``sys.stdout``/``sys.stdin`` while a command runs when
    the process started without that fd (``>&-``, ``<&-``): Python sets them
    to None, and then ``print()`` drops output without a word while
    ``.write()``/``.read()`` are AttributeErrors (tracebacks).  Any use
    raises :class:`StreamError` instead, which :func:`run` reports in one
    line, whichever subcommand (extensions included) tried."""

    def __init__(self, what: str) -> None:
        self._what = what

    def _closed(self, *args: object, **kwargs: object) -> NoReturn:
        raise StreamError.closed(self._what)

    write = writelines = read = readline = readlines = fileno = _closed

    def flush(self) -> None:
        """Nothing was written, so there is nothing to lose."""

    @property
    def buffer(self) -> "_ClosedStream":
        return self

    def isatty(self) -> bool:
        return False


_STREAM_NAMES = {"stdout": "standard output", "stdin": "standard input"}


class _StandIns:
    """:func:`standard_streams`' context manager (a class: contextlib's
    import would be a tenth of a ``loopcore list`` process's own imports)."""

    def __init__(self) -> None:
        self._names: List[str] = []

    def __enter__(self) -> None:
        self._names = [name for name in _STREAM_NAMES if getattr(sys, name) is None]
        for name in self._names:
            setattr(sys, name, _ClosedStream(_STREAM_NAMES[name]))

    def __exit__(self, *exc_info: object) -> None:
        for name in self._names:
            setattr(sys, name, None)


def standard_streams() -> _StandIns:
    """Put a :class:`_ClosedStream` in place of a missing ``sys.stdout`` or
    ``sys.stdin`` while the block runs, and None back after (the
    interpreter's own state is not ours to keep changed)."""
    return _StandIns()


def _silence(stream: object) -> None:
    """Point a failed standard stream's fd at /dev/null.

    What the failed write left in the stream's buffer would otherwise fail
    again when the interpreter flushes it at exit: an "Exception ignored"
    message and exit status 120 instead of ours.
    """
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    except (AttributeError, OSError, ValueError, StreamError):
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)


def write(data: bytes) -> None:
    """Write ``data`` to stdout and flush it now.

    Flushing here makes a failure (stdout closed, full, a broken pipe) the
    writing command's :class:`StreamError`, while it can still act on it,
    instead of an error at exit after the command has reported success.
    """
    out = sys.stdout
    if out is None:
        if not data:
            return
        raise StreamError.closed("standard output")
    try:
        out.flush()  # what was print()ed before, in order
        if data:
            out.buffer.write(data)
            out.buffer.flush()
    except StreamError:
        raise  # the _ClosedStream stand-in
    except (OSError, ValueError) as e:
        _silence(out)
        raise StreamError.stdout_failed(e) from e


def write_text(text: str) -> None:
    """:func:`write` for text: file names that are not UTF-8 (decoded with
    surrogateescape, as ``os.fsdecode`` does) come out as the same bytes."""
    write(text.encode("utf-8", "surrogateescape"))


def write_json(obj: object, *, ensure_ascii: bool = True) -> None:
    """:func:`write_text` of ``obj`` as indented JSON, one document per command."""
    import json  # here: most commands print no JSON (start-up time)

    write_text(json.dumps(obj, indent=2, ensure_ascii=ensure_ascii) + "\n")


def write_stderr(text: str) -> None:
    """Write to stderr; where it is closed or broken, nothing (the exit
    status is all that is left to say it with)."""
    err = sys.stderr
    if err is None:
        return
    try:
        err.write(text)
        err.flush()
    except (OSError, ValueError):
        _silence(err)


# Every character str.splitlines() breaks a line at (a terminal or a log
# reader may too), as its escape: a file name or an argument holding one
# stays visible and the message stays one line.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message: str) -> str:
    """``message`` with its line breaks escaped (``\\n`` ...), and the lone
    surrogates of undecodable argv bytes as Python's stderr writes them
    (``\\udc80``), so that a stream with strict errors takes it too."""
    text = str(message).translate(_LINE_BREAKS)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error(message: str) -> None:
    """``loopcore: MESSAGE`` on stderr, on one line whatever MESSAGE holds."""
    write_stderr(f"{PROG}: {one_line(message)}\n")


def describe(e: BaseException, *, action: str = "", default: str = "") -> str:
    """The error line for ``e`` (without ``loopcore: ``): ``FILE: ACTION:
    REASON`` for an OSError, where FILE is its filename or ``default``."""
    if isinstance(e, OSError):
        reason = e.strerror or os.strerror(e.errno or 0) or str(e)
        where = e.filename if e.filename is not None else default
        where = os.fsdecode(where) if isinstance(where, (bytes, os.PathLike)) else where
        head = f"{where}: " if where not in (None, "") else ""
        return f"{head}{action + ': ' if action else ''}{reason}"
    return f"{default + ': ' if default and default not in str(e) else ''}{e}"


def print_made(paths: Union[str, Sequence[str]], undo: Callable[[], None], undone: str,
               undo_failed: str) -> None:
    """Print the path of the device a command just made (or of each, one
    a line); undo it (all of them) if that fails.

    A device nobody learnt the name of stays behind unnoticed (``losetup
    --show`` into a full disk or a closed pipe leaves it bound), so a
    command that cannot report what it made takes it back, as a half-done
    command should, and says so in one line naming the devices.  The same
    for anything else that stops it here (Ctrl-C).
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    named = ", ".join(paths)
    try:
        # flushed inside the try: see the failure while we can undo
        write_text("".join(path + "\n" for path in paths))
    except BaseException as e:
        try:
            undo()
        except (OSError, ValueError) as u:
            outcome = f"{undo_failed}: {u.strerror if isinstance(u, OSError) and u.strerror else u}"
            if not isinstance(e, StreamError):
                error(f"{named}: {outcome}")
        else:
            outcome = undone
        if isinstance(e, StreamError):
            what = "the device's name" if len(paths) == 1 else "the devices' names"
            raise CLIError(f"{named}: cannot print {what} ({e.reason}); {outcome}") from e
        raise


# --- parsing and running -----------------------------------------------------------

def terminal_columns() -> int:
    """``$COLUMNS``, else the width of the terminal on stdout, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (ValueError, OSError):
            columns = 0
    return columns or 80


def run(parse: Callable[[Sequence[str]], Optional[object]], argv: Sequence[str]) -> int:
    """Parse ``argv`` with ``parse``, run the handler it names, and return
    the exit status these rules give for what happened: returned, never
    raised as SystemExit, for a usage error (the parser's or a handler's)
    as for anything else.

    ``parse`` returns the parsed arguments (``func`` the handler, and
    ``command``, ``usage_prog``), None when it printed help or the version,
    or raises :class:`UsageError`; an argparse parser's SystemExit (the
    dm and dmlog subcommands) is its exit status.
    """
    args: Optional[object] = None
    try:
        try:
            args = parse(argv)
        except SystemExit as e:  # argparse's way out: --help, --version, usage errors
            return e.code if isinstance(e.code, int) else 0 if e.code is None else EXIT_USAGE
        if args is None:
            write(b"")  # help or version: lost output fails
            return 0
        func = getattr(args, "func", None)
        if func is None:
            raise UsageError(f"{getattr(args, 'command', '')}: this subcommand has no handler")
        status = int(func(args) or 0)
        write(b"")  # what a handler left buffered (extensions print): lost output fails
        return status
    except UsageError as e:
        if e.prog:  # the parser's: the line names the command, as argparse's did
            write_stderr(f"{e.prog}: {one_line(str(e))} (see '{e.prog} --help')\n")
        else:
            error(f"{e} (see '{getattr(args, 'usage_prog', PROG)} --help')")
        return EXIT_USAGE
    except StreamError as e:
        # A reader that went away (``loopcore list | head``) needs no word.
        if e.errno != errno.EPIPE:
            error(str(e))
        return EXIT_FAILURE
    except CLIError as e:
        error(str(e))
        return EXIT_FAILURE
    except (Error, OSError, ValueError, TypeError) as e:
        if isinstance(e, BrokenPipeError):  # an extension's own write to stdout
            _silence(sys.stdout)
            return EXIT_FAILURE
        error(describe(e))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
