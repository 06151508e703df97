"""``python -m loopcore`` (the ``loopcore`` console script calls
:func:`loopcore.cli.main` itself: a process imports one module less)."""
import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
