# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
pytest configuration for the documentation: only the hand-written ``.rst``
pages are collected (their doctests run with ``--doctest-rst``).  The gallery
scripts run during the Sphinx build instead, and build outputs (``_build``,
``auto_examples``, the automodapi pages in ``api``) are not tests.
"""

import os

os.environ.setdefault("MPLBACKEND", "agg")

collect_ignore = ["conf.py"]
collect_ignore_glob = ["_build/*", "examples/*", "auto_examples/*", "api/*", "generated/*"]
