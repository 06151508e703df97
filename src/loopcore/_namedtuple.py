"""``NamedTuple`` class syntax without importing :mod:`typing` at run time.

``typing`` costs a ``loopcore list`` process about a fifth of a bare
interpreter's start, and the records on that path (``LoopInfo``, the CLI's
columns) are its only run-time use.  Modules write::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from .._namedtuple import NamedTuple

so the type checker sees typing's, and the running class is what typing's
makes too: ``collections.namedtuple`` of the annotated fields, their
defaults, and the class body's methods, properties and docstring.
"""
from __future__ import annotations

import collections

__all__ = ["NamedTuple"]

# What the class statement puts in a namespace that the tuple class has
# (or must not be given) already.
_NOT_COPIED = {"__module__", "__qualname__", "__annotations__", "__dict__", "__weakref__",
               "__orig_bases__", "__slots__", "__new__", "__init__", "__getnewargs__"}


class _NamedTupleMeta(type):
    def __new__(mcs, name: str, bases: tuple, namespace: dict) -> type:  # type: ignore[type-arg]
        if namespace.get("_root"):  # the NamedTuple base itself
            return super().__new__(mcs, name, bases, namespace)
        fields = list(namespace.get("__annotations__", {}))
        defaults = [namespace[f] for f in fields if f in namespace]
        if any(f not in namespace for f in fields[len(fields) - len(defaults):]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        record = collections.namedtuple(name, fields, defaults=defaults,  # type: ignore[misc]
                                        module=namespace.get("__module__"))
        record.__annotations__ = dict(namespace.get("__annotations__", {}))
        for key, value in namespace.items():
            if key not in _NOT_COPIED and key not in fields:
                setattr(record, key, value)
        record.__qualname__ = namespace.get("__qualname__", name)
        return record


class NamedTuple(tuple, metaclass=_NamedTupleMeta):  # type: ignore[type-arg]
    """Base of a record class: its annotated fields are the tuple's."""

    _root = True
