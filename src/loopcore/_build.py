"""cffi builder for loopcore's C shim (API mode, out of line).

The cdef is the shim's own headers, ``csrc/lc_*.h``: declarations only, so
the same text is both the C prototypes and what cffi parses.
"""
from __future__ import annotations

from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parents[2] / "csrc"
HEADERS = sorted(CSRC.glob("lc_*.h"))
SOURCES = sorted(CSRC.glob("lc_*.c"))

ffibuilder = FFI()
ffibuilder.cdef("\n".join(h.read_text() for h in HEADERS))
ffibuilder.set_source(
    "loopcore._native",
    "#include <stdint.h>\n" + "".join(f'#include "{h.name}"\n' for h in HEADERS),
    sources=[str(s.relative_to(CSRC.parent)) for s in SOURCES],
    include_dirs=[str(CSRC)],
    extra_compile_args=["-O2", "-Wall", "-std=gnu11"],
    # Shipped stripped: the symbol table is a third of the file and only
    # PyInit__native (a dynamic symbol, kept) is ever looked up.
    extra_link_args=["-s"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
