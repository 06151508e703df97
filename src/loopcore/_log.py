"""loopcore's debug trace: ``logging.getLogger("loopcore")`` and children.

Silent by default (a NullHandler, as a library should).  Like util-linux's
``LOOPDEV_DEBUG``, ``LOOPCORE_DEBUG=1`` in the environment sends the trace
to stderr without touching the application's logging setup: which attach
path ran, each retry and why, the 5.8 distrust, buffer growth.
"""
from __future__ import annotations

import logging
import os

__all__ = ["DEBUG_ENV", "get_logger"]

DEBUG_ENV = "LOOPCORE_DEBUG"

_root = logging.getLogger("loopcore")
_root.addHandler(logging.NullHandler())
if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("loopcore: %(name)s: %(message)s"))
    _root.addHandler(_handler)
    _root.setLevel(logging.DEBUG)


def get_logger(name: str) -> logging.Logger:
    """The logger for a part of loopcore: ``get_logger("loop")`` is
    ``loopcore.loop``.  Call sites guard expensive messages with
    ``isEnabledFor(logging.DEBUG)``: the hot path pays one method call."""
    return _root.getChild(name)
