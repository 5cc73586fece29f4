"""The scripts in ``benchmarks/`` imported by path for their tests (they are
scripts, not a package)."""

import importlib.util
import os
import sys

from locations import REPO_DIR

BENCHMARKS_DIR = os.path.join(REPO_DIR, "benchmarks")


def load_benchmark(name):
    """``benchmarks/<name>.py`` as a module named ``name``. The folder goes on
    ``sys.path`` (at the end) because the scripts import their neighbours
    (``common``, ``training``, ...)."""
    if BENCHMARKS_DIR not in sys.path:
        sys.path.append(BENCHMARKS_DIR)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS_DIR, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
