"""Properties of the dm text parsers and formatters (hypothesis), for every
registered target type, with strategies derived from each type's
declaration (:mod:`loopcore.dm.targets.declaration`):

- ``XParams.parse(str(p)) == p`` for every valid ``p``, and its table line
  reads back from the table text;
- any text given to a parameter or status parser, or to ``Table.parse``,
  gives a result or a loopcore ValueError (DmParseError), never another
  exception; so do kernel status lines with their words mutated;
- masking never leaves a crypt key in the text, whatever the whitespace.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from loopcore import dm, errors
from loopcore.dm.table import has_keys, mask_params
from loopcore.dm.targets import PARAMS_TYPES, STATUS_TYPES
from loopcore.dm.targets import kinds as K
from loopcore.dm.targets.declaration import declared
from loopcore.dm.targets.kinds import U64_MAX

from fuzz_targets import parses_or_refuses
from properties import examples

# --- strategies from the declarations -----------------------------------------------------

DEVICES = st.one_of(
    st.builds(lambda a, b: f"{a}:{b}", st.integers(0, 4095), st.integers(0, (1 << 20) - 1)),
    st.from_regex(r"/dev/[a-z][a-z0-9/_.-]{0,20}", fullmatch=True))
WORD_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
                    min_size=1, max_size=12)


def _uint(kind: K.Uint) -> st.SearchStrategy[int]:
    lo, hi = kind.minimum, min(kind.maximum, U64_MAX)
    if kind.power_of_two:
        return st.sampled_from([1 << k for k in range(64) if lo <= 1 << k <= hi])
    if kind.multiple > 1:
        return st.integers(-(-lo // kind.multiple), hi // kind.multiple).map(
            lambda n: n * kind.multiple)
    return st.one_of(st.integers(lo, min(hi, lo + 1000)), st.integers(lo, hi),
                     st.just(hi))


def kind_strategy(kind: K.Kind) -> st.SearchStrategy[Any]:
    """Values ``kind`` takes (the kind's own check filters what a regular
    expression alone would let through)."""
    if isinstance(kind, K.Flag):
        return st.booleans()
    if isinstance(kind, K.Uint):
        return _uint(kind)
    if isinstance(kind, K.Choice):
        return st.sampled_from(kind.values)
    if isinstance(kind, K.Legs):
        return st.lists(st.tuples(DEVICES, _uint(K.SECTORS)), min_size=1, max_size=4).map(tuple)
    if isinstance(kind, K.Device):
        return DEVICES
    if isinstance(kind, K.Hex):
        return st.binary(min_size=0 if kind.empty else 1, max_size=40).map(bytes.hex)
    if isinstance(kind, K.Word):
        raw = (st.from_regex(kind.pattern, fullmatch=True) if kind.pattern is not None
               else WORD_TEXT)
        return raw.filter(lambda v: _valid(kind, v))
    raise AssertionError(f"no strategy for {type(kind).__name__}: add one here")


def _valid(kind: K.Kind, value: Any) -> bool:
    try:
        kind.check("x", value)
    except errors.ValueError:
        return False
    return True


@st.composite
def params_of(draw: st.DrawFn, cls: type) -> Any:
    """A valid instance of the parameter class ``cls``: each field drawn from
    its kind (an optional one left at its default half the time)."""
    values: Dict[str, Any] = {}
    for field in declared(cls).fields:
        if field.default is not dataclasses.MISSING and draw(st.booleans()):
            continue
        values[field.name] = draw(kind_strategy(field.kind))
    try:
        return cls(**values)
    except errors.ValueError:
        assume(False)  # a rule between fields (check()): not a valid x


TYPES = sorted(PARAMS_TYPES)


def test_every_registered_type_has_strategies():
    for target_type in TYPES:
        for field in declared(PARAMS_TYPES[target_type]).fields:
            kind_strategy(field.kind)


# --- round trips --------------------------------------------------------------------------

@pytest.mark.parametrize("target_type", TYPES)
def test_params_round_trip(target_type):
    cls = PARAMS_TYPES[target_type]

    @examples(150)
    @given(params_of(cls), st.integers(0, 1 << 40), st.integers(1, 1 << 40))
    def check(params, start, length):
        text = str(params)
        assert cls.parse(text) == params
        assert dm.parse_params(target_type, text) == params
        assert str(cls.parse(text)) == text
        try:
            line = params.target(start, length)
        except errors.ValueError:
            return  # a length this type refuses
        assert line.parsed() == params
        table = dm.Table([line])
        # Table.parse trims the trailing space the kernel writes after a
        # thin-pool's parameters (as dmsetup does): the words are the same
        read = dm.Table.parse(str(table))
        assert read == dm.Table([dataclasses.replace(line, params=line.params.strip())])
        assert read[0].parsed() == params
        # a key, as the parameters read it, is never in the masked text
        masked = dm.mask_keys(table)[0].params
        if target_type != "crypt":
            assert masked == line.params or target_type == "integrity"
        elif not params.key.startswith(":"):
            assert set(masked.split()[1]) == {"0"}, masked
    check()


TARGET_TYPES = st.sampled_from(TYPES) | st.from_regex(r"[a-z][a-z0-9-]{0,14}", fullmatch=True)
# params as Table.parse gives them back: no edge whitespace, no word that
# starts a comment
PARAMS_TEXT = st.text(st.characters(blacklist_characters="\0#"), max_size=40).map(
    str.strip).filter(lambda p: len(f"{p}.".splitlines()) == 1 and not any(
        c.isspace() and c not in " \t" for c in p))


@examples(300)
@given(st.lists(st.tuples(st.integers(0, U64_MAX), st.integers(0, U64_MAX), TARGET_TYPES,
                          PARAMS_TEXT), max_size=5))
def test_table_text_round_trip(lines):
    try:
        table = dm.Table(dm.Target(*line) for line in lines)
    except errors.ValueError:
        return  # a lone surrogate and the like: refused when made
    assert dm.Table.parse(str(table)) == table


# --- arbitrary text: a result or a loopcore ValueError ----------------------------------------

def _words_like_the_kernels() -> st.SearchStrategy[str]:
    words = st.one_of(st.from_regex(r"[0-9]{1,25}", fullmatch=True), DEVICES,
                      st.sampled_from(["-", "0", "1", "P", "PO", "N", "core", "disk", "A", "D",
                                       "/", "1/2", ":", "rw", "ro", "Fail", "Invalid",
                                       "Merge", "failed", "allow_discards", "sector_size:4096",
                                       "internal_hash:crc32c", "\u0661", "\ud800", "1" * 5000]),
                      st.text(max_size=8))
    seps = st.sampled_from([" ", "  ", "\t", "\n", "\r", "\x0b", "\x85", "\u2028", "\xa0"])
    return st.lists(st.tuples(words, seps), max_size=12).map(
        lambda pairs: "".join(w + s for w, s in pairs))


ANY_TEXT = st.one_of(st.text(max_size=80), _words_like_the_kernels())


@examples(400)
@given(st.sampled_from(TYPES), ANY_TEXT)
def test_any_params_text_parses_or_is_refused(target_type, text):
    parses_or_refuses(lambda: dm.parse_params(target_type, text))
    parses_or_refuses(lambda: dm.mask_keys([dm.Target(0, 8, target_type, text)]))


@examples(400)
@given(st.sampled_from(sorted(STATUS_TYPES)), ANY_TEXT)
def test_any_status_text_parses_or_is_refused(target_type, text):
    parses_or_refuses(lambda: dm.parse_status(target_type, text))


@examples(300)
@given(ANY_TEXT)
def test_any_table_text_parses_or_is_refused(text):
    parses_or_refuses(lambda: dm.Table.parse(text))


KERNEL_STATUS = [
    ("striped", "2 7:0 7:1 1 AD"), ("integrity", "0 129160 -"), ("snapshot", "32/131072 32"),
    ("snapshot-merge", "Merge failed"),
    ("thin-pool", "0 1650/16384 3/512 37 rw discard_passdown queue_if_no_space - 1024 "),
    ("thin-pool", "7 10/16384 512/512 - out_of_data_space ignore_discard error_if_no_space "
                  "needs_check"),
    ("thin", "384 383"), ("verity", "V 3"), ("mirror", "3 7:0 7:1 7:3 8/8 1 AAA 3 disk 7:2 A"),
]


@examples(500)
@given(st.sampled_from(KERNEL_STATUS), st.data())
def test_mutated_kernel_status_parses_or_is_refused(line, data):
    target_type, text = line
    words = text.split()
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(words)))
        action = data.draw(st.sampled_from(["drop", "dup", "replace", "insert"]))
        if action == "drop" and at < len(words):
            del words[at]
        elif action == "dup" and at < len(words):
            words.insert(at, words[at])
        else:
            new = data.draw(st.one_of(st.from_regex(r"[0-9]{1,22}(/[0-9]{0,22})?",
                                                    fullmatch=True), st.text(max_size=6)))
            words[at:at + (action == "replace")] = [new]
    parses_or_refuses(lambda: dm.parse_status(target_type, " ".join(words)))


# --- keys -----------------------------------------------------------------------------------

@examples(300)
@given(st.from_regex(r"[1-9a-f][0-9a-f]{15,63}", fullmatch=True),
       st.lists(st.sampled_from([" ", "\t", "\n", "\x0b", "\x0c", "\r"]), min_size=1,
                max_size=4).map("".join),
       st.sampled_from(["", " ", "\t"]))
def test_a_crypt_key_is_masked_whatever_the_whitespace(key, gap, lead):
    params = f"{lead}aes-xts-plain64{gap}{key} 0 7:0 0"
    # the kernel splits on all of them (Target takes no line break: a table
    # line is one line)
    assert key not in mask_params("crypt", params)
    if len(params.splitlines()) == 1:
        assert has_keys([dm.Target(0, 8, "crypt", params)])

