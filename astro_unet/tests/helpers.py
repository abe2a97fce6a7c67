# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Helpers shared by the test modules (the regression pins)."""

import hashlib

import numpy as np


def digest(*arrays):
    """sha256 of the dtype, shape and bytes of each array, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
