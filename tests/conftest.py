"""Root test configuration: makes ``tests/`` importable so test modules can share helpers.

Test modules import the independent readers with ``from oracles import ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
