# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
astro_unet: make a short telescope exposure look like a longer one.

An implementation of "Learning to Denoise Astronomical Images with U-nets"
(Vojtekova et al. 2021, MNRAS 503, 3204) as an Astropy-ecosystem package:
`simulate_short_exposure`, `clean_cosmic_rays`, `denoise_ccd` and
`photometric_comparison` take and return `~astropy.nddata.CCDData`.
"""

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - running from a source tree without a build
    __version__ = "0.0.0"

from ._config import conf  # noqa: F401
from .simulate import *  # noqa: F401,F403
from .cosmics import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .photometry import *  # noqa: F401,F403
from .denoise import *  # noqa: F401,F403
from .weights import *  # noqa: F401,F403
from .sample_data import *  # noqa: F401,F403
from .visualization import *  # noqa: F401,F403
from .files import *  # noqa: F401,F403
from .large import *  # noqa: F401,F403
from .align import *  # noqa: F401,F403
