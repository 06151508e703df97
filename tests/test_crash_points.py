"""A crash at every step: SIGKILL at each system call of an operation.

The tool (tests/faults.py, crash mode) and, per operation, every k.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from faults import CRASH_SYSCALLS, Syscall, count_syscalls, run_until_crash

# --- the tool --------------------------------------------------------------------------


def _file_steps(path: Path):
    def code(ctx):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # openat
        os.write(fd, b"one")                                              # write
        ctx.note("one")
        os.write(fd, b"two")                                              # write
        ctx.note("two")
        os.close(fd)                                                      # close
    return code


def test_count_sees_codes_calls_only_in_order(tmp_path: Path):
    target = tmp_path / "steps"
    setup_file = tmp_path / "setup"
    result = count_syscalls(_file_steps(target),
                            setup=lambda ctx: setup_file.write_bytes(b"uncounted"))
    assert result.finished and result.error is None, result.output
    assert [c.name for c in result.calls] == ["openat", "write", "write", "close"]
    assert result.calls[0].path == str(target)
    assert str(result.calls[0]) == f"openat({str(target)!r})"
    assert result.killed_at is None
    assert result.notes == ["one", "two"]
    assert target.read_bytes() == b"onetwo"


@pytest.mark.parametrize("kill_at, written, notes", [
    (1, None, []), (2, b"", []), (3, b"one", ["one"]), (4, b"onetwo", ["one", "two"])])
def test_the_kth_call_never_runs_and_the_notes_before_it_arrive(
        tmp_path: Path, kill_at: int, written, notes):
    target = tmp_path / "steps"
    result = run_until_crash(_file_steps(target), kill_at)
    assert result.killed_at is not None and not result.finished
    assert isinstance(result.killed_at, Syscall)
    assert result.killed_at == result.calls[-1] and len(result.calls) == kill_at
    assert result.killed_at.name == ["openat", "write", "write", "close"][kill_at - 1]
    assert result.notes == notes
    assert result.crashed is None and not result.timed_out
    if written is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == written


def test_past_the_last_call_the_code_finishes(tmp_path: Path):
    result = run_until_crash(_file_steps(tmp_path / "steps"), 5)
    assert result.finished and result.killed_at is None and len(result.calls) == 4


def test_a_chosen_set_of_calls(tmp_path: Path):
    result = count_syscalls(_file_steps(tmp_path / "steps"), syscalls=["write"])
    assert [c.name for c in result.calls] == ["write", "write"]
    killed = run_until_crash(_file_steps(tmp_path / "steps2"), 2, syscalls=["write"])
    assert killed.killed_at is not None and killed.killed_at.name == "write"
    assert (tmp_path / "steps2").read_bytes() == b"one"


def test_bad_arguments():
    with pytest.raises(ValueError):
        run_until_crash("pass", 0)
    with pytest.raises(ValueError):
        count_syscalls("pass", syscalls=["no_such_call"])
    assert "ioctl" in CRASH_SYSCALLS and "sendmsg" not in CRASH_SYSCALLS
