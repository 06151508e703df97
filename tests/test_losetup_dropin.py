"""loopcore-losetup against the system's losetup (util-linux 2.38), side by side.

Each case runs the same command line through both tools on real loop
devices and the same files, and compares exit status, stdout and stderr
byte for byte; device numbers, which must differ where each tool binds
its own device, are normalised to ``DEV``.  Listings of every device
keep only the lines of devices these tests bound (other processes bind
devices on this machine meanwhile).  These are loopcore's own cases,
covering what util-linux's ``tests/ts/losetup`` checks (setup with
offset and size limit, --nooverlap reuse and conflicts; a file stands in
for its scsi_debug disk) and every option of the drop-in.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Sequence

import pytest

from loopcore import cli, loop

from conftest import bound_under, force_detach, sysfs

SYSTEM_LOSETUP = shutil.which("losetup", path="/usr/sbin:/sbin:/usr/bin:/bin")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(SYSTEM_LOSETUP is None, reason="no system losetup to compare with"),
]

MiB = 1 << 20


class Result(NamedTuple):
    status: int
    out: str
    err: str


def _run(argv: Sequence[str], executable: str) -> Result:
    proc = subprocess.run(list(argv), executable=executable, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return Result(proc.returncode, proc.stdout.decode("utf-8", "surrogateescape"),
                  proc.stderr.decode("utf-8", "surrogateescape"))


def dropin_command() -> List[str]:
    """The installed console script, else ``python -m loopcore losetup``."""
    script = Path(sys.executable).with_name("loopcore-losetup")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "loopcore", "losetup"]


# losetup 2.38 -f retries EBUSY and EAGAIN only: a free device another
# process removes between its GET_FREE and its open (tests on this machine
# add and remove devices all the time) fails it so
_FIND_RACE = "failed to set up loop device: No such device or address"


def system(*args: str) -> Result:
    """The system's losetup (the reference), tried again when it lost the
    race above, which has nothing to do with the case."""
    for _ in range(5):
        # argv[0] "losetup": glibc's getopt names the program as invoked
        result = _run(["losetup", *args], SYSTEM_LOSETUP or "losetup")
        if _FIND_RACE not in result.err or "/dev/loop" in " ".join(args):
            return result
    return result


Tool = Callable[..., Result]


@pytest.fixture
def dropin(capfdbinary: pytest.CaptureFixture[bytes]) -> Tool:
    """The drop-in in this process (``loopcore losetup ARGS``: fast);
    test_entry_points runs the programs themselves."""
    def run(*args: str) -> Result:
        capfdbinary.readouterr()
        status = cli.main(["losetup", *args])
        out, err = capfdbinary.readouterr()
        return Result(status, out.decode("utf-8", "surrogateescape"),
                      err.decode("utf-8", "surrogateescape"))
    return run


@pytest.fixture
def tools(dropin: Tool) -> Dict[str, Tool]:
    return {"system": system, "dropin": dropin}

_LOOP = re.compile(r"/dev/loop[0-9]+")


def norm(result: Result) -> Result:
    """Device names as DEV."""
    return Result(result.status, _LOOP.sub("DEV", result.out), _LOOP.sub("DEV", result.err))


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A directory whose files the tests bind; whatever is still bound to
    them at the end is detached (by number, only those)."""
    yield tmp_path
    force_detach(set(bound_under(tmp_path)))


def image(directory: Path, name: str = "disk.img", size: int = 10 * MiB) -> str:
    path = directory / name
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def settle(directory: Path) -> None:
    """Wait out the detaches the kernel deferred because another process
    had the device open (other tests on this machine scan every device):
    those only, told by the autoclear flag LOOP_CLR_FD left set; a device
    a tool failed to detach stays bound."""
    for number in bound_under(directory):
        if sysfs(number, "loop/autoclear") == "1":
            try:
                loop.detach(number, wait=30)
            except FileNotFoundError:
                pass  # released and removed meanwhile
            except OSError as e:
                if e.errno != errno.ENXIO:  # released meanwhile
                    raise


def ours(text: str, directory: Path) -> List[str]:
    return [line for line in text.splitlines() if str(directory) in line]


# --- command lines losetup refuses -------------------------------------------------------

MISUSES = [
    ["--bogus"], ["-x"], ["-o"], ["--offset"], ["--show=1"], ["--s"], ["--det"],
    ["--direct-io=maybe", "x"], ["-o", "abc", "-f", "img"], ["--sizelimit", "12Q", "-f", "x"],
    ["-b", "", "-f", "x"], ["-a", "-d", "/dev/loop0"], ["-l", "-D"], ["-J", "--raw"],
    ["-fa"], ["-c", "/dev/loop0", "-d", "/dev/loop0"], ["-f", "a", "b"],
    ["--sizelimit", "1M", "/dev/loop0"], ["-r", "-a"], ["--show", "-l"], ["-P", "-j", "x"],
    ["--direct-io", "-a"], ["-o", "5", "-a"], ["-o", "5", "/dev/loop0"],
    ["nosuch"], ["-d", "nosuch"], ["-d", "loop99999"], ["-c", "/dev/null"],
    ["-O", "FOO", "-l"], ["-O", "NAME,FOO,OFFSET", "-l"], ["--list", "-O", "x", "/dev/loop0"],
    ["--output-all"], ["-v"], ["/dev/loop99999"], ["-l", "/dev/loop99999"],
    ["--", "-a"], ["-d"], ["-j"], ["-h"], ["--help"], ["--he"], ["nosuch", "x"],
    ["/dev/null", "x"], ["/dev/null", "/dev/null"], ["nosuch", "/dev/null"],
]


@pytest.mark.parametrize("argv", MISUSES, ids=" ".join)
def test_misuse_and_help_as_losetup(dropin: Tool, argv: List[str]) -> None:
    assert dropin(*argv) == system(*argv)


def test_posixly_correct_stops_at_the_first_operand(dropin: Tool, monkeypatch) -> None:
    monkeypatch.setenv("POSIXLY_CORRECT", "1")
    for argv in (["-d", "/dev/loop99999", "x", "-a"], ["nosuch", "-a"], ["a", "b", "--bogus"]):
        assert dropin(*argv) == system(*argv), argv


def test_version_and_unknown_option_as_util_linux_tests_check(dropin: Tool) -> None:
    version = dropin("--version")
    assert (version.status, version.err) == (0, "")
    assert version.out.startswith("losetup from ")
    bad = dropin("--unknownopt")
    assert (bad.status, bad.out) == (1, "")


# --- setting a device up ---------------------------------------------------------------

# columns every tool reads the same way for a device bound to the same file
COMPARED = "NAME,AUTOCLEAR,BACK-FILE,OFFSET,PARTSCAN,RO,SIZELIMIT,DIO,LOG-SEC"

SETUPS = [
    ["--find", "--show"], ["--offset", "1MiB", "--find", "--show"],
    ["--sizelimit", "3MiB", "--find", "--show"],
    ["--offset=1MiB", "--sizelimit=3MiB", "-f", "--show"], ["-fr", "--show"],
    ["-P", "-f", "--show"], ["-b", "4096", "-f", "--show"], ["--sector-size=1024", "-f", "--show"],
    ["--direct-io", "-f", "--show"], ["--direct-io=off", "-f", "--show"], ["-f"],
    ["-o", "0x200", "--sizelimit", "1.5K", "-f", "--show"], ["-L", "-f", "--show"],
    ["-v", "-f", "--show"], ["-b", "1000", "-f", "--show"],
    ["-o1MiB", "--sizel", "3MiB", "--fi", "--sh"], ["--show", "-fPo", "512"],
]


def setup_case(tool: Tool, directory: Path, args: List[str], name: str = "disk.img",
               size: int = 10 * MiB) -> List[Result]:
    """Set up, read back (listing, -j, DEV alone), detach: every result."""
    img = image(directory, name, size)
    made = tool(*args, img)
    results = [made]
    devices = [loop.device_path(n) for n in sorted(bound_under(directory))]
    for dev in devices:
        results += [tool("--list", "--raw", "-O", COMPARED, dev), tool(dev), tool("-j", img),
                    tool("-l", "-n", "-O", "SIZELIMIT,OFFSET", dev), tool("-d", dev)]
    settle(directory)
    assert not bound_under(directory)
    return [norm(r) for r in results]


@pytest.mark.parametrize("args", SETUPS, ids=" ".join)
def test_setup_as_losetup(workdir: Path, dropin: Tool, args: List[str]) -> None:
    theirs = setup_case(system, workdir, args)
    assert setup_case(dropin, workdir, args) == theirs


def test_setup_warnings_for_odd_sizes(workdir: Path, dropin: Tool) -> None:
    for size in (1000, 100, MiB + 100):
        theirs = setup_case(system, workdir, ["-f", "--show"], f"{size}.img", size)
        assert setup_case(dropin, workdir, ["-f", "--show"], f"{size}.img", size) == theirs


def side_by_side(tools: Dict[str, Tool], case: Callable[[Tool], List[Result]],
                 workdir: Path) -> None:
    """``case`` run with each tool in turn (the same files), compared."""
    results = {}
    for name, tool in tools.items():
        results[name] = [norm(r) for r in case(tool)]
        settle(workdir)
        assert not bound_under(workdir), name
    assert results["dropin"] == results["system"]


def test_dev_file_form_and_its_failures(workdir: Path, tools: Dict[str, Tool],
                                        new_number: int) -> None:
    # a number nobody has, not losetup -f's: others bind free devices meanwhile
    dev = loop.device_path(new_number)

    def case(tool: Tool) -> List[Result]:
        img = image(workdir)
        steps = [tool(dev, img), tool(dev, img),  # bound already
                 tool(dev), tool("-d", dev)]
        settle(workdir)
        return steps + [tool(dev, str(workdir / "nonexistent"))]
    side_by_side(tools, case, workdir)


# --- reading devices the system's losetup bound ------------------------------------------

@pytest.fixture
def bound_by_system(workdir: Path) -> Iterator[List[str]]:
    """Three devices the system's losetup bound: plain; offset and size
    limit; read-only, partscan, 4096-byte sectors."""
    img = image(workdir)
    devices = [system(*args, "--show", "-f", img).out.strip() for args in (
        [], ["-o", "512", "--sizelimit", "4096"], ["-r", "-P", "-b", "4096", "-o", "1M"])]
    assert all(d.startswith("/dev/loop") for d in devices), devices
    yield devices
    for dev in devices:
        system("-d", dev)


def test_reading_bound_devices_as_losetup(workdir: Path, dropin: Tool,
                                          bound_by_system: List[str]) -> None:
    img = str(workdir / "disk.img")
    dev = bound_by_system[1]
    for argv in ([dev], ["-j", img], ["-j", img, "-o", "512"], ["-j", img, "--offset=0"],
                 ["-j", img, "-o", "1"], ["--associated", str(workdir / "nonexistent")],
                 ["-l", dev], ["-l", "-J", dev], ["-lJ", "--output-all", dev],
                 ["-l", "-j", img], ["-l", "-n", "--raw", "-j", img], ["-J", "-l", "-j", img],
                 ["-l", "-O", "NAME,BACK-FILE,BACK-INO,BACK-MAJ:MIN,MAJ:MIN", "-j", img],
                 ["-O", "+PARTSCAN", "-j", img], ["--list", "--raw", "-n", "-O", "OFFSET", dev],
                 ["-lO", "name,offset", "-j", img], ["--output-all", "-O", "+name", "-lj", img],
                 ["-l", "-O", "NAME,", "-j", img], ["-l", "-O", ",NAME", "-j", img],
                 ["-l", "-O", " NAME", "-j", img], ["-l", "-O", "", "-j", img],
                 ["-l", "-O", "NAME,,OFFSET", "-j", img]):
        assert dropin(*argv) == system(*argv), argv
    # every device: only the lines of ours (others come and go meanwhile)
    for argv in (["-a"], ["--all"], ["-l", "--raw"], ["--raw"], ["-l", "-n", "--raw"]):
        a, b = dropin(*argv), system(*argv)
        assert (a.status, a.err, ours(a.out, workdir)) == (b.status, b.err, ours(b.out, workdir))
    for argv in ([], ["-l"]):  # the table's widths depend on every device: words only
        a, b = dropin(*argv), system(*argv)
        assert [line.split() for line in ours(a.out, workdir)] \
            == [line.split() for line in ours(b.out, workdir)]
    for argv in (["-J"], ["-l", "-J"]):
        docs = [[d for d in json.loads(r.out)["loopdevices"]
                 if str(workdir) in (d["back-file"] or "")] for r in (dropin(*argv), system(*argv))]
        assert docs[0] == docs[1] and len(docs[0]) == 3


def test_changing_bound_devices_as_losetup(workdir: Path, tools: Dict[str, Tool],
                                           new_number: int) -> None:
    unbound = loop.device_path(new_number)
    with loop.LoopControl() as ctl:
        ctl.add(new_number)

    def case(tool: Tool) -> List[Result]:
        img = image(workdir)
        dev = tool("-f", "--show", img).out.strip()
        steps = [tool("--direct-io=on", dev), tool("--direct-io", dev),
                 tool("--direct-io=off", dev), tool("-b", "4096", dev),
                 tool("--sector-size", "1000", dev), tool("--direct-io", "-b", "2048", dev)]
        with open(img, "r+b") as f:
            f.truncate(12 * MiB)
        steps += [tool("-c", dev), tool("--set-capacity", dev),
                  tool("-l", "--raw", "-O", COMPARED, dev), tool("-d", dev)]
        settle(workdir)
        steps += [tool(unbound), tool("-c", unbound), tool("--direct-io=on", unbound),
                  tool("-b", "512", unbound), tool("-d", unbound), tool("-l", "-O", "NAME,RO",
                                                                       unbound)]
        return steps
    side_by_side(tools, case, workdir)


def test_detach_several_and_failures(workdir: Path, tools: Dict[str, Tool],
                                     new_number: int) -> None:
    ours = loop.device_path(new_number)  # unbound after: nobody else's to detach

    def case(tool: Tool) -> List[Result]:
        imgs = [image(workdir, f"{i}.img") for i in range(2)]
        devs = [tool("-f", "--show", imgs[0]).out.strip(), ours]
        bound = tool(ours, imgs[1])
        detached = tool("-d", *devs)
        settle(workdir)
        return [bound, detached, tool("--detach", ours), tool("-d", ours, ours)]
    side_by_side(tools, case, workdir)


# --- --nooverlap: reuse and conflicts (util-linux's losetup-loop cases) ------------------

def overlap_case(tool: Tool, directory: Path, first: List[str], second: List[str],
                 plain: str = "") -> List[object]:
    img = image(directory, size=11 * MiB)
    one = tool("--find", "--nooverlap", "--show", *first, img)
    if plain:  # losetup --nooverlap DEV FILE
        two = tool("--nooverlap", plain, *second, img)
    else:
        two = tool("--find", "--nooverlap", "--show", *second, img)
    same = one.out.strip() == two.out.strip()
    for dev in sorted(bound_under(directory)):
        assert tool("-d", loop.device_path(dev)) == (0, "", "")
    settle(directory)
    assert not bound_under(directory)
    return [norm(one), norm(two), same]


OVERLAPS = [
    ([], [], False), (["--offset=0", "--sizelimit=1MiB"], ["--offset=1MiB", "--sizelimit=1MiB"],
                      False),
    (["--offset=1MiB", "--sizelimit=2MiB"], ["--offset=2MiB", "--sizelimit=2MiB"], False),
    (["--offset=1MiB"], ["--offset=2MiB", "--sizelimit=2MiB"], False),
    (["--read-only"], ["--offset=2MiB", "--sizelimit=2MiB"], False),
    (["--read-only"], [], False), (["--read-only"], ["--read-only"], False),
    (["--offset=1MiB", "--sizelimit=1MiB"], ["--offset=2MiB"], False),
    ([], [], True), (["--read-only"], [], True),
]


@pytest.mark.parametrize("first,second,plain", OVERLAPS,
                         ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_nooverlap_as_losetup(workdir: Path, dropin: Tool, new_number: int, first: List[str],
                              second: List[str], plain: bool) -> None:
    dev = loop.device_path(new_number) if plain else ""
    theirs = overlap_case(system, workdir, first, second, dev)
    assert overlap_case(dropin, workdir, first, second, dev) == theirs


# --- what losetup 2.38 here cannot be compared with ------------------------------------

def test_remove_deletes_an_unbound_device(dropin: Tool, new_number: int) -> None:
    with loop.LoopControl() as ctl:
        ctl.add(new_number)
    dev = loop.device_path(new_number)
    assert dropin("--remove", dev) == (0, "", "")
    assert not os.path.exists(f"/sys/block/loop{new_number}")
    gone = dropin("--remove", dev)
    assert gone.status == 1 and gone.err.startswith(f"losetup: {dev}: remove failed: ")


def test_detach_all_detaches_every_bound_device(workdir: Path, monkeypatch,
                                                capfdbinary) -> None:
    # -D detaches every device on the machine: here the listing it walks
    # is narrowed to this test's devices
    from loopcore.cli import losetup
    devices = [loop.attach(image(workdir, f"{i}.img")) for i in range(2)]
    for device in devices:
        device.close()
    listed = loop.list_devices
    monkeypatch.setattr(losetup.loop, "list_devices", lambda **kw: [
        r for r in listed(**kw) if str(workdir) in (r.backing_file or "")])
    assert losetup.main(["-D"]) == 0
    assert not bound_under(workdir)
    assert capfdbinary.readouterr() == (b"", b"")


def test_show_into_a_full_stdout_leaves_nothing_bound(workdir: Path) -> None:
    img = image(workdir)
    cmd = " ".join(dropin_command()) + f" -f --show {img} >/dev/full"
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("losetup: /dev/loop") and proc.stderr.count("\n") == 1
    assert not bound_under(workdir)


def test_find_free_prints_a_free_device(dropin: Tool) -> None:
    free = dropin("-f")
    assert free.status == 0 and free.err == ""
    number = int(free.out.strip()[len("/dev/loop"):])
    assert free.out == loop.device_path(number) + "\n"
    assert os.path.exists(f"/sys/block/loop{number}")


def test_entry_points(workdir: Path) -> None:
    """loopcore losetup ARGS, and a program named losetup, are the drop-in too."""
    img = image(workdir)
    dev = system("-f", "--show", img).out.strip()
    want = system("-j", img)
    assert _run([sys.executable, "-m", "loopcore", "losetup", "-j", img],
                sys.executable) == want
    script = Path(sys.executable).with_name("loopcore")
    if not script.exists():
        pytest.skip("the loopcore console script is not installed")
    link = workdir / "losetup"
    link.symlink_to(script)
    assert _run([str(link), "-j", img], str(link)) == want
    assert _run([str(link), "-d", dev], str(link)) == (0, "", "")
    settle(workdir)
    assert not bound_under(workdir)
    assert _run([*dropin_command(), "--bogus"], dropin_command()[0]) == system("--bogus")


def test_nooverlap_reuse_keeps_an_autoclear_device(workdir: Path, tools: Dict[str, Tool]) -> None:
    """losetup turns autoclear off on the device it reuses (a mount's stays
    after the umount)."""
    def case(tool: Tool) -> List[Result]:
        img = image(workdir)
        held = loop.attach(img, autoclear=True, direct_io=False)
        try:
            reused = tool("-f", "-L", "--show", img)
            listed = tool("-l", "-O", "NAME,AUTOCLEAR", held.path)
        finally:
            held.close()  # the last opener: an autoclear device would go now
        assert reused.out.strip() == held.path and bound_under(workdir)
        return [reused, listed, tool("-d", held.path)]
    side_by_side(tools, case, workdir)
