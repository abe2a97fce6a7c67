# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Training data for the Astro U-net models.

`~astro_unet.training.data` reads the project's real images through a small
exposure table kept in the package (``exposures.ecsv``); `~astro_unet.training.synthetic`
renders realistic noiseless sky scenes with GalSim (optional dependency);
`~astro_unet.training.pairs` makes the noisy/target training pairs,
`~astro_unet.training.config` reads the TOML training configurations and
`~astro_unet.training.loop` trains and exports a model (``python -m
astro_unet.training``).  Importing this package does not import `torch`.
"""

from .data import *  # noqa: F401,F403
from .synthetic import *  # noqa: F401,F403
from .config import *  # noqa: F401,F403
from .pairs import *  # noqa: F401,F403
from .loop import *  # noqa: F401,F403
