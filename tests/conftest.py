"""The suite's helpers (``model_fixtures``, ``reference_h5``, ``locations``, ...)
live in this folder; the tests sit in sub-folders that mirror ``mrcnn/``, so this
folder goes on ``sys.path`` (at the end: ``samples`` must stay the repository's)."""

import os
import sys

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.append(_TESTS)
_REPO = os.path.dirname(_TESTS)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
