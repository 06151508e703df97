"""``NamedTuple`` class syntax without importing :mod:`typing` (or
:mod:`collections`) at run time.

``typing`` costs a ``loopcore list`` process about a fifth of a bare
interpreter's start, and ``collections`` (with operator, keyword, reprlib
and itertools) a tenth; the records on that path (``LoopInfo``, the CLI's
columns) are their only run-time use there.  Modules write::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from .._namedtuple import NamedTuple

so the type checker sees typing's, and the running class is what typing's
makes too: the class ``collections.namedtuple`` makes of the annotated
fields (built here the way it builds it: the same accessors, ``__new__``,
``_make``, ``_replace``, ``_asdict``, ``__repr__``, pickling), their
defaults, and the class body's methods, properties and docstring.
"""
from __future__ import annotations

import sys
from _collections import _tuplegetter  # type: ignore[import-not-found]  # namedtuple's (C)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, Tuple

__all__ = ["NamedTuple"]

# What the class statement puts in a namespace that the tuple class has
# (or must not be given) already.
_NOT_COPIED = {"__module__", "__qualname__", "__annotations__", "__dict__", "__weakref__",
               "__orig_bases__", "__slots__", "__new__", "__init__", "__getnewargs__"}


def _record_namespace(name: str, fields: Tuple[str, ...],
                      defaults: Tuple[Any, ...]) -> Dict[str, Any]:
    """What ``collections.namedtuple(name, fields, defaults=defaults)``
    puts in its class."""
    tuple_new, count = tuple.__new__, len(fields)
    args = ", ".join(fields) + ("," if count == 1 else "")
    # Compiled as namedtuple compiles it: positional and keyword arguments,
    # defaults and their errors are Python's own.
    new = eval(f"lambda _cls, {args}: _tuple_new(_cls, ({args}))",
               {"_tuple_new": tuple_new, "__builtins__": {}, "__name__": f"namedtuple_{name}"})
    new.__name__ = "__new__"
    new.__doc__ = f"Create new instance of {name}({args})"
    if defaults:
        new.__defaults__ = defaults
    repr_format = "(" + ", ".join(f"{field}=%r" for field in fields) + ")"

    def _make(cls: type, iterable: Iterable[Any]) -> Any:
        result: Any = tuple_new(cls, iterable)
        if len(result) != count:
            raise TypeError(f"Expected {count} arguments, got {len(result)}")
        return result

    def _replace(self: Any, /, **changes: Any) -> Any:
        result = self._make(map(changes.pop, fields, self))
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return result

    def __repr__(self: Any) -> str:
        return str(self.__class__.__name__ + repr_format % self)

    def _asdict(self: Any) -> Dict[str, Any]:
        return dict(zip(self._fields, self))

    def __getnewargs__(self: Any) -> Tuple[Any, ...]:
        return tuple(self)

    for method in (new, _make, _replace, __repr__, _asdict, __getnewargs__):
        method.__qualname__ = f"{name}.{method.__name__}"
    namespace = {
        "__doc__": f"{name}({args})", "__slots__": (), "_fields": fields,
        "_field_defaults": dict(zip(fields[count - len(defaults):], defaults)),
        "__new__": new, "_make": classmethod(_make), "_replace": _replace,
        "__repr__": __repr__, "_asdict": _asdict, "__getnewargs__": __getnewargs__,
        "__match_args__": fields,
    }
    for index, field in enumerate(fields):
        namespace[field] = _tuplegetter(index, sys.intern(f"Alias for field number {index}"))
    return namespace


class _NamedTupleMeta(type):
    def __new__(mcs, name: str, bases: tuple, namespace: dict) -> type:  # type: ignore[type-arg]
        if namespace.get("_root"):  # the NamedTuple base itself
            return super().__new__(mcs, name, bases, namespace)
        annotations = dict(namespace.get("__annotations__", {}))
        fields = tuple(sys.intern(f) for f in annotations)
        defaults = tuple(namespace[f] for f in fields if f in namespace)
        if any(f not in namespace for f in fields[len(fields) - len(defaults):]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        body = _record_namespace(name, fields, defaults)
        body.update((key, value) for key, value in namespace.items()
                    if key not in _NOT_COPIED and key not in fields)
        body.update(__module__=namespace.get("__module__"), __annotations__=annotations,
                    __qualname__=namespace.get("__qualname__", name))
        return type(name, (tuple,), body)


class NamedTuple(tuple, metaclass=_NamedTupleMeta):  # type: ignore[type-arg]
    """Base of a record class: its annotated fields are the tuple's."""

    _root = True
