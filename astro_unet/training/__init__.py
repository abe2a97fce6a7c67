# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Training data for the Astro U-net models.

`~astro_unet.training.data` reads the project's real images through a small
exposure table kept in the package (``exposures.ecsv``); `~astro_unet.training.synthetic`
renders realistic noiseless sky scenes with GalSim (optional dependency).
"""

from .data import *  # noqa: F401,F403
from .synthetic import *  # noqa: F401,F403
