"""loopcore's debug trace: ``logging.getLogger("loopcore")`` and children.

Silent by default (a NullHandler, as a library should).  Like util-linux's
``LOOPDEV_DEBUG``, ``LOOPCORE_DEBUG=1`` in the environment sends the trace
to stderr without touching the application's logging setup: which attach
path ran, each retry and why, the 5.8 distrust, buffer growth.

``logging`` is imported when loopcore first logs, not when a module asks
for its logger (a ``loopcore list`` process never logs): :func:`get_logger`
returns a stand-in that becomes the logger at its first use.  With
``LOOPCORE_DEBUG`` set, ``import loopcore`` sets the trace up at once
(:func:`enable_if_requested`), as before.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

    _Base = logging.Logger
else:
    _Base = object

__all__ = ["DEBUG", "DEBUG_ENV", "get_logger", "enable_if_requested"]

DEBUG_ENV = "LOOPCORE_DEBUG"
#: ``logging.DEBUG``, for ``log.isEnabledFor(DEBUG)`` on a hot path that
#: should not import logging (with traceback, threading ...: ~3 ms of a
#: process's start-up) to ask
DEBUG = 10

_ROOT = "loopcore"
_root: "logging.Logger | None" = None


def _root_logger() -> logging.Logger:
    """The ``loopcore`` logger, set up the first time it is needed."""
    global _root
    if _root is None:
        import logging

        root = logging.getLogger(_ROOT)
        root.addHandler(logging.NullHandler())
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("loopcore: %(name)s: %(message)s"))
            root.addHandler(handler)
            root.setLevel(logging.DEBUG)
        _root = root
    return _root


def enable_if_requested() -> None:
    """Set the trace up now when ``LOOPCORE_DEBUG`` asks for it (the
    application may look at the ``loopcore`` logger before loopcore logs)."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        _root_logger()


class _Logger(_Base):
    """A module's logger before its first use: the first attribute asked
    for (``debug``, ``isEnabledFor`` ...) makes the real logger; its
    methods are then kept on the stand-in, so a call costs what it did on
    the logger itself (its data, such as ``level``, is read anew)."""

    def __init__(self, name: str) -> None:  # not Logger's: nothing is set up yet
        self.__dict__["_child"] = name

    def __getattr__(self, attribute: str) -> object:
        value = getattr(_root_logger().getChild(self.__dict__["_child"]), attribute)
        if callable(value):
            self.__dict__[attribute] = value
        return value


def get_logger(name: str) -> logging.Logger:
    """The logger for a part of loopcore: ``get_logger("loop")`` is
    ``loopcore.loop``.  Call sites guard expensive messages with
    ``isEnabledFor(logging.DEBUG)``: the hot path pays one method call."""
    return _Logger(name)
