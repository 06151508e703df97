"""Old import path: ``loopcore dm ...`` lives in :mod:`loopcore.cli.dm`.

Kept for code that calls ``dm_cli.add_parser(subparsers)``; the command's
one entry point is :func:`loopcore.cli.main` (``loopcore dm ...``).
"""
from __future__ import annotations

from .cli.dm import add_parser

__all__ = ["add_parser"]
