"""How a target type declares its fields: each dataclass field's
annotation carries its kind and its place in the kernel's text,
``Annotated[int, SECTORS]`` (a positional word; a field defaulting to None
is an optional last word) or ``Annotated[bool, Opt(FLAG)]`` (an optional
argument).  :func:`declared` reads that once per class (with
``typing.get_type_hints``: the names in the annotations must be the
module's own).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, NamedTuple, Tuple

from .kinds import Choice, Kind

__all__ = ["Arg", "Opt", "Field", "Declaration", "declared"]


# --- where a field stands -------------------------------------------------------------

class Arg:
    """Annotation: a positional word (or words) of ``kind``, in field
    order; a field whose default is None is an optional last word."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind


class Opt:
    """Annotation: an optional argument (in the ``<#opt> <opt>...`` group,
    written in field order when not the field's default) of one of these
    forms: ``"flag"`` (the field's name), ``"colon"`` (``name:value``),
    ``"pair"`` (``name value``; ``word`` if the name differs from the
    field's) or ``"value"`` (the value itself, one of a Choice)."""

    def __init__(self, kind: Kind, form: str = "flag", word: str = "") -> None:
        self.kind, self.form, self.word = kind, form, word


class Field(NamedTuple):
    """One declared field: its name, kind, place and dataclass default."""

    name: str
    kind: Kind
    place: Any            # Arg or Opt
    default: Any          # dataclasses.MISSING when required


class Declaration(NamedTuple):
    """A params or status class's declared fields, in order, and its
    optional arguments by the word that names them."""

    fields: Tuple[Field, ...]
    args: Tuple[Field, ...]         # the positional ones
    opts: Tuple[Field, ...]         # the optional arguments
    by_word: Dict[str, Field]      # "flag" and "pair" by name, "value" by each value
    by_colon: Dict[str, Field]     # "colon": by the name before the ':'


_DECLARED: Dict[type, Declaration] = {}


def declared(cls: type) -> Declaration:
    """``cls``'s declaration, read from its annotations once."""
    found = _DECLARED.get(cls)
    if found is not None:
        return found
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = []
    by_word: Dict[str, Field] = {}
    by_colon: Dict[str, Field] = {}
    for dc_field in dataclasses.fields(cls):
        meta = getattr(hints[dc_field.name], "__metadata__", ())
        place = next(m for m in meta if isinstance(m, (Arg, Opt, Kind)))
        if isinstance(place, Kind):
            place = Arg(place)
        field = Field(dc_field.name, place.kind, place, dc_field.default)
        fields.append(field)
        if isinstance(place, Opt) and isinstance(place.kind, Choice) and place.form == "value":
            by_word.update(dict.fromkeys(place.kind.values, field))
        elif isinstance(place, Opt):
            (by_colon if place.form == "colon" else by_word)[place.word or field.name] = field
    found = _DECLARED[cls] = Declaration(
        tuple(fields), tuple(f for f in fields if isinstance(f.place, Arg)),
        tuple(f for f in fields if isinstance(f.place, Opt)), by_word, by_colon)
    return found
