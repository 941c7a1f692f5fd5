"""The long protocol fuzz run: at least 100,000 hypothesis-generated hostile inputs,
classified in CPython (pure and cbor2 paths) and again inside MicroPython, where
every outcome must be identical. Usage: ./dev fuzz [CASES]   (default 100000)
"""

import os
import subprocess
import sys

cases = sys.argv[1] if len(sys.argv) > 1 else "100000"
env = dict(os.environ, PARK_FUZZ_CASES=cases)
sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/protocol/test_properties.py", "-k", "fuzz"], env=env))
