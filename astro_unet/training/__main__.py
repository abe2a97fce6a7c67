# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``python -m astro_unet.training``: train a model (see `astro_unet.training.cli`)."""

import sys

from astro_unet.training.cli import main

__all__ = []

if __name__ == "__main__":
    sys.exit(main())
