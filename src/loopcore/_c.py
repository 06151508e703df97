"""The one door to the C library: every module reaches the shim as
``_c.lib`` / ``_c.ffi`` through this module, looked up at call time.

That makes it the seam for policy tests: retry, fallback and error
mapping can be exercised without root or a kernel by replacing
``loopcore._c.lib`` (or one function on a stand-in) for the length of a
test, while the real-kernel tests cover the C itself.

It is also the one place a C struct's layout reaches Python: a struct is
declared once, in the shim's headers (the cdef), and :func:`struct_view`
derives the ``struct.Struct`` that packs it from what cffi compiled.
"""
from __future__ import annotations

# struct.py only re-exports _struct: importing it is ~0.13 ms of every
# loopcore process (a module found on sys.path), _struct is built in
from _struct import Struct

from ._native import ffi, lib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NamedTuple, Tuple
else:
    from ._namedtuple import NamedTuple

__all__ = ["StructView", "ffi", "lib", "struct_view"]

# cffi's primitive C types -> struct format codes ("=" packing: standard sizes)
_CODES = {
    "char": "c", "int8_t": "b", "uint8_t": "B", "int16_t": "h", "uint16_t": "H",
    "int32_t": "i", "uint32_t": "I", "int": "i", "unsigned int": "I",
    "int64_t": "q", "uint64_t": "Q", "long": "q", "unsigned long": "Q",
}


class StructView(NamedTuple):
    """A C struct as Python packs it: ``struct`` (``"="`` packing, padded
    to ``sizeof``, up to a trailing flexible array), each field's byte
    ``offsets`` (a flexible array's too: where its items start), and the
    field ``names`` in the order ``struct.unpack`` yields them (an array of
    N non-char items yields N values)."""

    struct: Struct
    offsets: Dict[str, int]
    names: Tuple[str, ...]


def _fields(ctype: Any, base: int, prefix: str) -> List[Tuple[str, int, str, int]]:
    """(name, offset, format, size) of each leaf field, nested structs flattened
    as ``outer.inner``; a flexible array has format "" and size 0."""
    out: List[Tuple[str, int, str, int]] = []
    for name, field in ctype.fields:
        ftype, offset = field.type, base + field.offset
        if ftype.kind == "struct":
            out += _fields(ftype, offset, f"{prefix}{name}.")
        elif ftype.kind == "array":
            item = ftype.item
            if ftype.length is None:  # a flexible array member
                out.append((prefix + name, offset, "", 0))
                continue
            code = "s" if item.cname == "char" else _CODES[item.cname]
            out.append((prefix + name, offset, f"{ftype.length}{code}",
                        ftype.length * ffi.sizeof(item)))
        else:
            out.append((prefix + name, offset, _CODES[ftype.cname], ffi.sizeof(ftype)))
    return out


def struct_view(ctype: str) -> StructView:
    """The :class:`StructView` of a struct of the cdef, such as ``"struct
    lc_scan_rec"``: its layout is the compiler's, never restated in Python."""
    fmt, at = "=", 0
    names: List[str] = []
    offsets: Dict[str, int] = {}
    for name, offset, code, size in _fields(ffi.typeof(ctype), 0, ""):
        offsets[name] = offset
        if not code:
            continue
        if offset > at:
            fmt += f"{offset - at}x"
        fmt += code
        at = offset + size
        count = int(code[:-1] or 1)
        names += [name] if code[-1] == "s" or count == 1 else [f"{name}[{i}]" for i in range(count)]
    total = ffi.sizeof(ctype)
    if total > at:
        fmt += f"{total - at}x"
    view = Struct(fmt)
    assert view.size == total, (ctype, fmt, view.size, total)
    return StructView(view, offsets, tuple(names))
