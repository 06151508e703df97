"""Running the ``loopcore`` command in tests: the real entry point in a
child (``python -m loopcore``), ``cli.main`` in this process, and the child
with its standard streams broken (closed, full, a pipe nobody reads)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import List

from loopcore import cli


def loopcore_cmd(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m loopcore ARGS`` (the real entry point), bytes out."""
    proc = subprocess.run([sys.executable, "-m", "loopcore", *args], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    if check:
        assert proc.returncode == 0, proc.stderr.decode()
    return proc


def run_main(capfdbinary, *args: str) -> bytes:
    """cli.main in this process (fast); stdout bytes; it must succeed."""
    assert cli.main(list(args)) == 0, capfdbinary.readouterr().err
    out, err = capfdbinary.readouterr()
    assert err == b""
    return out


def one_line(stderr: bytes) -> str:
    """The one line an error is, without its newline."""
    text = stderr.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert text.startswith("loopcore"), text
    return text.rstrip("\n")


# --- output that cannot be written ---------------------------------------------------------
# stdout closed (sys.stdout is None), full (ENOSPC) or a pipe nobody reads
# (EPIPE; Python ignores SIGPIPE), and stderr likewise.

# bash redirections of file descriptor {fd}; {pipe} is the write end of a pipe
# whose read end is closed.
REDIRECTS = {
    "keep": "",
    "full": "{fd}>/dev/full",
    "closed": "{fd}>&-",
    "broken-pipe": "{fd}>&{pipe}",
}
# How the one line on stderr names each failure of stdout.
STDOUT_REASONS = {"full": "No space left on device", "closed": "standard output is closed",
                  "broken-pipe": "Broken pipe"}


def loopcore_redirected(args: List[str], stdout: str = "keep",
                        stderr: str = "keep") -> subprocess.CompletedProcess:
    """``python -m loopcore ARGS`` through bash (dash takes one-digit fds
    only), stdin closed (no input) and stdout/stderr redirected as REDIRECTS
    names; what is kept is captured."""
    read_end, pipe = os.pipe()
    os.close(read_end)
    try:
        redirs = ["0<&-"] + [REDIRECTS[mode].format(fd=fd, pipe=pipe)
                             for fd, mode in ((1, stdout), (2, stderr))] + [f"{pipe}>&-"]
        return subprocess.run(
            ["bash", "-c", 'exec "$@" ' + " ".join(redirs), "bash",
             sys.executable, "-m", "loopcore", *args],
            capture_output=True, pass_fds=(pipe,), timeout=60)
    finally:
        os.close(pipe)


def assert_clean_stderr(stderr: bytes, context: object) -> List[str]:
    """At most one line, no traceback, nothing from the interpreter's exit."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text and "Exception ignored" not in text, (context, text)
    lines = text.splitlines()
    assert len(lines) <= 1 and text == "".join(f"{line}\n" for line in lines), (context, text)
    assert all(line.startswith("loopcore: ") for line in lines), (context, text)
    return lines
