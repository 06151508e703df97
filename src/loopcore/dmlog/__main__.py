"""``python -m loopcore.dmlog serve [--pidfile PATH] ...``: ``loopcore dmlog``,
under the ``loopcore`` command's rules (exit statuses, one-line errors)."""
import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["dmlog", *sys.argv[1:]]))
