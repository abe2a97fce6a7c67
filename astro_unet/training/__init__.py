# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Train Astro U-net models: data, training pairs, configuration and the loop.

`~astro_unet.training.noise` estimates image noise and gain,
`~astro_unet.training.data` loads the real images of the exposure table,
`~astro_unet.training.synthetic` renders sky scenes with GalSim (optional),
`~astro_unet.training.pairs` makes the noisy/target pairs,
`~astro_unet.training.measured` the pairs with real noise (repeated
exposures, real short/long pairs),
`~astro_unet.training.config` reads the TOML configurations and
`~astro_unet.training.loop` trains and exports a model (``python -m
astro_unet.training``).  Importing this package does not import `torch`.
"""

from .noise import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .synthetic import *  # noqa: F401,F403
from .config import *  # noqa: F401,F403
from .pairs import *  # noqa: F401,F403
from .measured import *  # noqa: F401,F403
from .loop import *  # noqa: F401,F403
