"""Where the keys stand in a target's parameter text, and hiding them as
``dmsetup table`` does without ``--showkeys``: byte for byte over the text
the kernel returned, so that text loopcore cannot parse is masked too.

- crypt (``cipher key iv_offset device offset ...``): the second word,
  unless it starts with ':' (``:32:logon:desc`` names a key in the kernel
  keyring, which is no secret);
- integrity: for the first occurrence of each option below, if a ':' comes
  before the next space after it (``name:algorithm:key``), the rest of that
  word.

Words are split as the kernel's dm_split_args() splits them: on any run
of the bytes its isspace() takes (tab to carriage return, space, and
Latin-1's no-break space 0xA0), so that two spaces or a tab before a key
hide it too.  Where text is not ASCII, Python's split (which the typed
parameters read with) can differ: the crypt key is then zeroed as either
reads it.

A new target type whose parameters hold a key gets its rule here.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

from ... import errors
from ..names import encode

if TYPE_CHECKING:
    from .base import Target

__all__ = ["KEYED_TYPES", "mask_params", "has_keys"]

KEYED_TYPES = ("crypt", "integrity")
_INTEGRITY_KEYED = (b"internal_hash:", b"journal_crypt:", b"journal_mac:")
# the kernel's isspace(): \t \n \v \f \r, space and 0xA0 (lib/ctype.c)
_SPACE = frozenset(b"\t\n\v\f\r \xa0")
_WORD = re.compile(r"\S+")   # a word as str.split() reads it


def _skip_space(raw: bytearray, pos: int) -> int:
    while pos < len(raw) and raw[pos] in _SPACE:
        pos += 1
    return pos


def _zero_word(raw: bytearray, pos: int) -> None:
    while pos < len(raw) and raw[pos] not in _SPACE:
        raw[pos] = 0x30  # '0'
        pos += 1


def mask_params(target_type: str, params: str) -> str:
    """One target's parameters with its keys as zeros."""
    if target_type not in KEYED_TYPES:
        return params
    try:
        raw = bytearray(encode(params))
    except UnicodeEncodeError:
        # a lone surrogate: text no kernel call can carry
        raise errors.ValueError(f"{target_type} target params are not text the kernel "
                                f"can take (a lone surrogate)") from None
    if target_type == "crypt":
        key = _skip_space(raw, 0)
        while key < len(raw) and raw[key] not in _SPACE:   # the cipher
            key += 1
        key = _skip_space(raw, key)
        if key < len(raw) and raw[key] != 0x3A:  # ':' starts a keyring reference
            _zero_word(raw, key)
        if not params.isascii():
            words = _WORD.finditer(params)
            second = next(words, None) and next(words, None)
            if second is not None and not second.group().startswith(":"):
                start = len(encode(params[:second.start()]))
                raw[start:start + len(encode(second.group()))] = \
                    b"0" * len(encode(second.group()))
    else:
        for option in _INTEGRITY_KEYED:
            at = raw.find(option)
            if at < 0:
                continue
            pos = at + len(option)
            while pos < len(raw) and raw[pos] != 0x3A and raw[pos] not in _SPACE:
                pos += 1
            if pos < len(raw) and raw[pos] == 0x3A:  # ':' before a space: a key follows
                _zero_word(raw, pos + 1)
    return raw.decode("utf-8", "surrogateescape")


def has_keys(targets: Iterable["Target"]) -> bool:
    """Whether any target's parameters hold a key (then the table goes to
    and from the kernel with SECURE_DATA)."""
    return any(mask_params(t.target_type, t.params) != t.params for t in targets)
