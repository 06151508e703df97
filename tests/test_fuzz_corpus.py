"""The fuzzer's seeds and findings, replayed (no atheris needed): every
input in tests/fuzz-corpus/TARGET/ meets its target's contract
(tests/fuzz_targets.py).  A finding of ``scripts/fuzz`` is committed
there as ``finding-NAME`` with the fix that makes it pass."""
from __future__ import annotations

from pathlib import Path

import pytest

from fuzz_targets import TARGETS

CORPUS = Path(__file__).resolve().parent / "fuzz-corpus"
INPUTS = sorted((target.name, path) for target in CORPUS.iterdir() for path in target.iterdir())


def test_every_target_has_seeds():
    assert {target for target, _ in INPUTS} == set(TARGETS)


@pytest.mark.parametrize("target,path", INPUTS, ids=[f"{t}/{p.name}" for t, p in INPUTS])
def test_input_meets_the_contract(target, path):
    TARGETS[target](path.read_bytes())
