"""Run the chorus benchmark from a checkout: ``python bench/run.py --quick`` (same options as ``chorus bench``)."""

from __future__ import annotations

import sys

from chorus.bench.main import main

if __name__ == "__main__":
    sys.exit(main())
