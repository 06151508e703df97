"""The main job on a built-in example, through the loopcore CLI.

Makes a 16 MiB GPT image with two partitions (sfdisk), attaches it with
partition scanning, lists it as losetup would, shows and reads its
partitions, finds it by backing file, and detaches it.  Needs root; works
without a terminal; leaves nothing bound.
"""
import os
import shlex
import subprocess
import sys
import tempfile

import loopcore
from loopcore.loop import discovery

MIB = 1 << 20
PARTS = [(1 * MIB, 6 * MIB, b"hello from partition 1"),
         (7 * MIB, 6 * MIB, b"hello from partition 2")]


def say(text: str = "") -> None:
    print(text, flush=True)


def run(*args: str, check: bool = True) -> str:
    """Run a command, show it and its output; return stdout."""
    argv = list(args)
    shown = ["loopcore"] + argv[3:] if argv[:3] == [sys.executable, "-m", "loopcore"] else argv
    say("$ " + " ".join(shlex.quote(a) for a in shown))
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    for line in (proc.stdout + proc.stderr).splitlines():
        say("    " + line)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: command failed with status {proc.returncode}")
    return proc.stdout


def loopcore_cli(*args: str, check: bool = True) -> str:
    return run(sys.executable, "-m", "loopcore", *args, check=check)


def make_image(path: str) -> None:
    with open(path, "wb") as f:
        f.truncate(16 * MIB)
    table = "label: gpt\n" + "".join(
        f"start={start // 512}, size={size // 512}, name=part{i + 1}\n"
        for i, (start, size, _) in enumerate(PARTS))
    say(f"1. a 16 MiB image with a GPT and two 6 MiB partitions: {path}")
    subprocess.run(["sfdisk", "--quiet", path], input=table, text=True, check=True,
                   stdout=subprocess.DEVNULL)
    with open(path, "r+b") as f:
        for start, _, text in PARTS:
            f.seek(start)
            f.write(text)
    run("sfdisk", "--list", path)


def main() -> int:
    if os.geteuid() != 0:
        print("demo: needs root (loop devices)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="loopcore-demo-") as tmp:
        image = os.path.join(tmp, "example.img")
        make_image(image)
        device = None
        try:
            say("\n2. attach it with partition scanning; loopcore prints the device")
            device = loopcore_cli("attach", "--partscan", image).strip()
            number = int(device[len("/dev/loop"):])

            say("\n3. list it, as `losetup -l` and `losetup -l --json` would")
            loopcore_cli("list", "-O", "NAME,BACK-FILE,PARTSCAN,RO,DIO,LOG-SEC", device)
            loopcore_cli("list", "--json", "-O", "NAME,BACK-FILE,BACK-INO,PARTSCAN", device)

            say("\n4. its partitions: the kernel's own scan where it parses GPT, else loopcore's")
            dev = loopcore.open(device)
            try:
                # A no-op (and a log line) when the kernel scanned the table.
                dev.add_partitions()
                if dev.added_partitions:
                    say("    this kernel did not parse the GPT (no CONFIG_EFI_PARTITION): "
                        "loopcore read it")
                    say("    and registered the partitions with BLKPG itself "
                        "(dev.add_partitions(), what `partx --add` does)")
                else:
                    say("    the kernel parsed the GPT itself (partscan): nothing to add")
            finally:
                dev.close()  # not detach(): step 6 detaches through the CLI
            parts = discovery.wait_for_partitions(number, len(PARTS), timeout=5.0)
            loopcore_cli("info", device)
            for part, (_, size, text) in zip(parts, PARTS):
                with open(part, "rb") as f:
                    data = f.read(len(text))
                    part_size = f.seek(0, os.SEEK_END)
                say(f"    read {part}: {data.decode()!r} ({part_size // MIB} MiB)")
                assert data == text and part_size == size, f"{part}: unexpected content"

            say("\n5. find the device by its backing file (as `losetup -j`)")
            loopcore_cli("find", image)

            say("\n6. detach it")
            loopcore_cli("detach", device)
            device = None
            left = loopcore.find(image)
            say(f"    devices still bound to the image: {[i.path for i in left] or 'none'}")
            return 1 if left else 0
        finally:
            if device is not None:  # a step failed: leave nothing bound
                for info in loopcore.find(image):
                    loopcore.detach(info.number)


if __name__ == "__main__":
    sys.exit(main())
