"""Fixtures for the device-mapper tests, which run inside the qemu guest
(scripts/vm-tests).  Every dm device a test makes is named with PREFIX and
removed after the test; every loop device is detached; at session end no
device named PREFIX* may remain.  Without device-mapper the session fails
instead of skipping: a skip is not a pass."""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

import loopcore
from loopcore import dm

from vmhelpers import PREFIX, Loop

_counter = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def mapper() -> Iterator[dm.DeviceMapper]:
    try:
        m = dm.DeviceMapper()
    except OSError as exc:
        pytest.exit(f"device-mapper is not usable here ({exc}); run these tests with "
                    "scripts/vm-tests", returncode=3)
    yield m
    left = [d.name for d in m.list_devices() if d.name.startswith(PREFIX)]
    for name in left:
        try:
            m.remove(name, retries=5, retry_delay=0.05)
        except OSError:
            pass
    stale = [e for e in os.listdir(dm.DEV_DIR) if e.startswith(PREFIX)]
    m.close()
    assert not left, f"dm devices left behind by the tests: {left}"
    assert not stale, f"/dev/mapper nodes left behind: {stale}"


@pytest.fixture
def names(mapper: dm.DeviceMapper) -> Iterator[Callable[[str], str]]:
    """names("linear") -> a fresh device name, removed after the test."""
    made: List[str] = []

    def make(tag: str = "dev") -> str:
        name = f"{PREFIX}{tag}-{next(_counter)}"
        made.append(name)
        return name

    yield make
    present = {d.name for d in mapper.list_devices()}
    failed = []
    for name in made:
        for candidate in (name, name + "-renamed"):
            if candidate in present:
                try:
                    mapper.remove(candidate, retries=10, retry_delay=0.05)
                except OSError as exc:
                    failed.append(f"{candidate}: {exc}")
    assert not failed, f"could not remove: {failed}"


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Callable[..., Loop]]:
    """loops(size, fill=None) -> a LoopDevice over a new file in tmp_path
    (filled with ``fill`` bytes, else zeros); detached after the test,
    after the test's dm devices are gone (fixture order)."""
    attached: List[Loop] = []
    counter = itertools.count()

    def make(size: int = 1 << 20, fill: Optional[bytes] = None) -> Loop:
        path = tmp_path / f"backing{next(counter)}.img"
        with open(path, "wb") as f:
            if fill:
                f.write((fill * (size // len(fill) + 1))[:size])
            else:
                f.truncate(size)
        loop = Loop(loopcore.attach(path), path)
        attached.append(loop)
        return loop

    yield make
    failed = []
    for loop in reversed(attached):
        try:
            loop.device.detach()
        except OSError as exc:
            failed.append(f"{loop.path}: {exc}")
    assert not failed, f"could not detach: {failed}"
