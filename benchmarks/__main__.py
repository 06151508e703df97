"""``python -m benchmarks`` (from the repository root): run the benchmark harness."""
import sys

from . import main

sys.exit(main())
