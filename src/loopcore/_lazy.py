"""Lazy exports (PEP 562): a package's public names, each imported from its
module the first time it is used, so ``import loopcore`` costs only what
the caller goes on to use (a shell script's ``loopcore list`` pays for
neither device-mapper, nor partition tables, nor logging).

A package gives its table ``{".module": ("Name", ...)}`` to
:func:`export`, which installs the package's ``__getattr__`` and
``__dir__`` and returns the names for ``__all__``; the package imports the
same names under ``if TYPE_CHECKING:`` for the type checker
(tests/test_startup.py checks that the two agree).  A name that is no
export but one of the package's modules (``loopcore.loop``,
``loopcore.loop.discovery``) is imported as the eager ``__init__`` of
before had it at hand.  Nothing here imports typing: every path runs it.
"""
from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Sequence, Tuple

__all__ = ["export"]


def _module(name: str) -> object:
    """The module ``name`` (absolute), imported if need be (importlib's own
    import costs more than every use of it here)."""
    __import__(name)
    return sys.modules[name]


def _absolute(package: str, source: str) -> str:
    """``source`` (``.module``, ``..module``) relative to ``package``, absolute."""
    module = source.lstrip(".")
    base = package.rsplit(".", len(source) - len(module) - 1)[0]
    return f"{base}.{module}" if module else base


def export(package: str, table: Mapping[str, Sequence[str]]) -> List[str]:
    """Make every name of ``table`` (``{".module": names}``, relative to
    ``package``) an attribute of ``package`` imported on first use, and
    return the names in order, for ``__all__``.  ``"alias=name"`` exports
    the module's ``name`` as ``alias``; the names under ``"."`` are the
    package's own modules."""
    namespace = vars(sys.modules[package])
    where: Dict[str, Tuple[str, str]] = {}
    for source, names in table.items():
        for entry in names:
            alias, _, name = entry.partition("=")
            where[alias] = (_absolute(package, source), name or alias)

    def __getattr__(name: str) -> object:
        if name in where:
            source, original = where[name]
            value = _module(f"{package}.{name}") if source == package \
                else getattr(_module(source), original)
            namespace[name] = value  # found at once next time
            return value
        if not name.startswith("__"):
            try:
                return _module(f"{package}.{name}")  # sets the attribute itself
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise  # the module exists and failed to import something
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(where))

    namespace.update(__getattr__=__getattr__, __dir__=__dir__)
    return list(where)
