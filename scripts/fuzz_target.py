"""Run one of loopcore's fuzz targets under atheris (libFuzzer), or write
the seed corpus.  Called by ``scripts/fuzz``; see there.

    python scripts/fuzz_target.py TARGET [libFuzzer args...] CORPUS_DIR...
    python scripts/fuzz_target.py --seeds DIR     # (re)write the seeds

The targets and their contracts are in ``tests/fuzz_targets.py``; the
loopcore modules they reach are imported under atheris's instrumentation
so the fuzzer sees their coverage.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))


def seeds() -> Dict[str, Dict[str, bytes]]:
    """Seed inputs per target: valid tables, datagrams and text, small."""
    from loopcore.dmlog import protocol as P

    from fuzz_targets import DM_SELECTORS, encode_datagrams, encode_image
    from partition_images import gpt_image, mbr_sector

    def gpt(size: int, entries: list, sector: int = 512, **kw: int) -> bytes:
        return bytes(gpt_image(size, entries, sector=sector, **kw))

    tables = {
        "gpt-512": encode_image(gpt(128 * 512, [(0, 34, 40), (1, 41, 50)])),
        "gpt-4096": encode_image(gpt(12 * 4096, [(0, 4, 6), (3, 7, 9)], sector=4096, count=32),
                                 sector=4096),
        "gpt-no-backup": encode_image(gpt(48 * 512, [(0, 6, 30)], count=16, backup=0)),
        "gpt-small-array": encode_image(gpt(48 * 512, [(2, 12, 20)], count=16)),
        "mbr": encode_image(mbr_sector([(0x80, 0x83, 1, 10), (0, 0x07, 11, 5)]) + bytes(8192)),
        "mbr-gpt-beyond-end": encode_image(mbr_sector([(0, 0x83, 1, 10**6)]), size=8192),
        # an extended partition at LBA 4 holding a chain of three EBRs
        "extended": encode_image(mbr_sector([(0, 0x83, 1, 2), (0, 0x05, 4, 20)])
                                 + bytes(1024) + mbr_sector([(0, 0x83, 1, 1), (0, 0x05, 3, 3)])
                                 + bytes(1024) + mbr_sector([(0, 0x83, 1, 1), (0, 0x05, 6, 3)])
                                 + bytes(1024) + mbr_sector([(0, 0x83, 1, 1)]) + bytes(4096)),
    }

    def req(rtype: int, seq: int, data: bytes = b"", uuid: bytes = b"LVM-seed") -> bytes:
        return P.build_request(rtype, seq, uuid, 1, data)

    region = (5).to_bytes(8, "little")
    core = [req(P.RT.CTR, 1, b"2048 clustered-core 64"), req(P.RT.RESUME, 2),
            req(P.RT.GET_REGION_SIZE, 3)]
    datagrams = {
        "core-io": encode_datagrams(core + [
            req(P.RT.MARK_REGION, 4, region), req(P.RT.FLUSH, 5), req(P.RT.IN_SYNC, 6, region),
            req(P.RT.IS_CLEAN, 7, region), req(P.RT.CLEAR_REGION, 8, region),
            req(P.RT.GET_RESYNC_WORK, 9), req(P.RT.SET_REGION_SYNC, 10, region + bytes(8)),
            req(P.RT.GET_SYNC_COUNT, 11), req(P.RT.STATUS_INFO, 12),
            req(P.RT.STATUS_TABLE, 13), req(P.RT.POSTSUSPEND, 14), req(P.RT.DTR, 15)]),
        "core-sync": encode_datagrams([req(P.RT.CTR, 1, b"2048 clustered-core 64 sync"),
                                       req(P.RT.RESUME, 2), req(P.RT.IS_REMOTE_RECOVERING,
                                                                3, region),
                                       req(P.RT.PRESUSPEND, 4)]),
        "disk-ctr": encode_datagrams([req(P.RT.CTR, 1, b"2048 clustered-disk 7:0 64 nosync")]),
        "short": encode_datagrams([req(P.RT.MARK_REGION, 1, region)[:30]]),
    }
    selector = {name: i for i, name in enumerate(DM_SELECTORS)}

    def text(kind: str, target_type: str, body: str) -> bytes:
        return bytes([selector[(kind, target_type)]]) + body.encode()

    texts = {
        "table": text("table", "", "0 2048 linear 7:0 0\n2048 4096 striped 2 8 7:1 0 7:2 0"),
        "linear": text("params", "linear", "7:0 2048"),
        "crypt": text("params", "crypt",
                      "aes-xts-plain64 " + "ab" * 32 + " 0 7:0 0 1 allow_discards"),
        "verity": text("params", "verity", "1 7:0 7:1 4096 4096 256 1 sha256 "
                       + "00" * 32 + " " + "11" * 32),
        "thin-pool": text("params", "thin-pool", "7:0 7:1 128 0 1 skip_block_zeroing"),
        "mirror": text("params", "mirror", "userspace 4 LVM-x clustered-core 1024 64 "
                       "2 7:0 0 7:1 0 1 handle_errors"),
        "status-thin-pool": text("status", "thin-pool",
                                 "0 1650/16384 3/512 37 rw discard_passdown "
                                 "queue_if_no_space - 1024 "),
        "status-mirror": text("status", "mirror", "3 7:0 7:1 7:3 8/8 1 AAA 3 disk 7:2 A"),
        "status-snapshot": text("status", "snapshot", "32/131072 32"),
        "status-integrity": text("status", "integrity", "0 129160 -"),
    }
    return {"partition_table": tables, "dmlog_datagrams": datagrams, "dm_text": texts}


def write_seeds(root: Path) -> None:
    for target, inputs in seeds().items():
        folder = root / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in inputs.items():
            (folder / f"seed-{name}").write_bytes(data)


def main() -> None:
    if sys.argv[1:2] == ["--seeds"]:
        write_seeds(Path(sys.argv[2]))
        return
    target = sys.argv[1]
    import atheris  # type: ignore[import-not-found]

    with atheris.instrument_imports(include=["loopcore", "fuzz_targets"]):
        # the lazily imported modules the targets reach
        import loopcore.dm.table  # noqa: F401
        import loopcore.dm.targets  # noqa: F401
        import loopcore.dmlog.server  # noqa: F401
        import loopcore.loop.partition_table  # noqa: F401

        import fuzz_targets
    check = fuzz_targets.TARGETS[target]
    # the server's warnings about malformed datagrams are expected here
    os.environ.setdefault("LOOPCORE_LOG", "error")
    import logging
    logging.disable(logging.CRITICAL)
    atheris.Setup([sys.argv[0]] + sys.argv[2:], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
