# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``python -m astro_unet``: the ``astro-unet`` command (see `astro_unet.cli`)."""

import sys

from .cli import main

__all__ = []

if __name__ == "__main__":
    sys.exit(main())
