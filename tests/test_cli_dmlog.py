"""``loopcore dmlog serve`` and ``python -m loopcore.dmlog serve``: the same
command under the same contract (tests/test_cli_contract.py), and what a
supervisor relies on: the pidfile and READY=1 once the server listens,
SIGTERM -> exit 0 after every log is written, a failed start is one line
and exit status 1."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from loopcore import cli
from loopcore.cli import dmlog as dmlog_cli

from conftest import connector_available

DMLOG = [sys.executable, "-m", "loopcore.dmlog"]


def test_registered_with_the_loopcore_command():
    args = cli.build_parser(["dmlog"]).parse_args(
        ["dmlog", "serve", "--pidfile", "/x", "--lock-file", "/y", "--busy-poll-us", "500"])
    assert args.func is dmlog_cli.serve
    assert (args.pidfile, args.lock_file, args.busy_poll_us) == ("/x", "/y", 500)


@pytest.mark.parametrize("entry", [DMLOG, [sys.executable, "-m", "loopcore", "dmlog"]],
                         ids=["python -m loopcore.dmlog", "loopcore dmlog"])
def test_usage_error_and_failed_start(entry, tmp_path):
    """Both doors give the same lines and statuses; a failed start leaves
    no pidfile behind."""
    usage = subprocess.run([*entry, "serve", "--busy-poll-us", "-1"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert usage.returncode == cli.EXIT_USAGE and usage.stdout == ""
    assert usage.stderr.startswith("loopcore dmlog serve: argument --busy-poll-us: ")
    assert usage.stderr.count("\n") == 1
    pidfile = tmp_path / "pid"
    failed = subprocess.run([*entry, "serve", "--pidfile", str(pidfile), "--lock-file",
                             str(tmp_path / "missing" / "lock")], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert failed.returncode == cli.EXIT_FAILURE, failed.stderr
    assert failed.stderr == f"loopcore: {tmp_path / 'missing' / 'lock'}: " \
        "No such file or directory\n"
    assert not pidfile.exists()


def test_failed_start_restores_the_signal_mask(tmp_path, capsys):
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert cli.main(["dmlog", "serve", "--lock-file", str(tmp_path / "no" / "lock")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == mask


@pytest.mark.root
def test_serve_pidfile_notify_and_sigterm(tmp_path):
    if os.geteuid() != 0 or not connector_available():
        pytest.skip("needs root and the netlink connector")
    pidfile = tmp_path / "dmlog.pid"
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    lock = tmp_path / "lock"
    proc = subprocess.Popen([*DMLOG, "serve", "--pidfile", str(pidfile), "--lock-file",
                             str(lock), "--state-dir", str(tmp_path / "state")],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        # READY=1 comes once the pidfile is there (written first, whole)
        assert notify.recv(4096).decode().startswith("READY=1")
        assert pidfile.read_text().strip() == str(proc.pid)
        # a second server on the same lock refuses to start: one line, exit 1
        second = subprocess.run([*DMLOG, "serve", "--lock-file", str(lock)],
                                capture_output=True, text=True, env=env, timeout=60)
        assert second.returncode == 1
        assert second.stderr == f"loopcore: {lock}: another dm-log-userspace server is " \
            f"running (pid {proc.pid})\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    assert proc.returncode == 0, err
    assert "listening" in err and "SIGTERM" in err and "stopped" in err
    assert not pidfile.exists()
