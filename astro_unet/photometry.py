# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Placeholder: filled in by its issue."""

__all__ = []
