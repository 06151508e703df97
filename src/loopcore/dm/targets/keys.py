"""Where the keys stand in a target's parameter text, and hiding them as
``dmsetup table`` does without ``--showkeys``: byte for byte over the text
the kernel returned, so that text loopcore cannot parse is masked too.

- crypt (``cipher key iv_offset device offset ...``): the word after the
  first space, unless it starts with ':' (``:32:logon:desc`` names a key in
  the kernel keyring, which is no secret);
- integrity: for the first occurrence of each option below, if a ':' comes
  before the next space after it (``name:algorithm:key``), the rest of that
  word.

A new target type whose parameters hold a key gets its rule here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..names import encode

if TYPE_CHECKING:
    from .base import Target

__all__ = ["KEYED_TYPES", "mask_params", "has_keys"]

KEYED_TYPES = ("crypt", "integrity")
_INTEGRITY_KEYED = (b"internal_hash:", b"journal_crypt:", b"journal_mac:")


def _zero_word(raw: bytearray, pos: int) -> None:
    while pos < len(raw) and raw[pos] != 0x20:
        raw[pos] = 0x30  # '0'
        pos += 1


def mask_params(target_type: str, params: str) -> str:
    """One target's parameters with its keys as zeros."""
    if target_type not in KEYED_TYPES:
        return params
    raw = bytearray(encode(params))
    if target_type == "crypt":
        space = raw.find(b" ")
        if space >= 0 and raw[space + 1:space + 2] != b":":
            _zero_word(raw, space + 1)
    else:
        for option in _INTEGRITY_KEYED:
            at = raw.find(option)
            if at < 0:
                continue
            pos = at + len(option)
            while pos < len(raw) and raw[pos] not in b" :":
                pos += 1
            if pos < len(raw) and raw[pos] == 0x3A:  # ':' before a space: a key follows
                _zero_word(raw, pos + 1)
    return raw.decode("utf-8", "surrogateescape")


def has_keys(targets: Iterable["Target"]) -> bool:
    """Whether any target's parameters hold a key (then the table goes to
    and from the kernel with SECURE_DATA)."""
    return any(mask_params(t.target_type, t.params) != t.params for t in targets)
