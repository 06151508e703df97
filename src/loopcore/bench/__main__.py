"""``python -m loopcore.bench``: run the benchmark harness."""
import sys

from . import main

sys.exit(main())
