# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Package configuration (``astro_unet.conf``), as astropy's own subpackages do."""

from astropy import config as _config

__all__ = ["Conf", "conf"]


class Conf(_config.ConfigNamespace):
    """
    Configuration parameters for `astro_unet`.

    Change them for a session with ``astro_unet.conf.default_model = ...`` or
    ``with astro_unet.conf.set_temp("device", "cpu"): ...``, or permanently
    in ``~/.astropy/config/astro_unet.cfg``.
    """

    default_model = _config.ConfigItem(
        "default",
        "Name (in the registry) or path of the model used when model='default'.",
    )
    weights_base_urls = _config.ConfigItem(
        ["https://github.com/astro-unet/astro_unet-weights/releases/download/v1/"],
        "Base URLs (first is primary, the rest are mirrors) from which model "
        "weight files are downloaded into astropy's cache.",
        cfgtype="string_list",
    )
    device = _config.ConfigItem(
        "auto",
        "Default torch device for denoising: 'auto' (CUDA when available), "
        "'cpu', 'cuda' or 'cuda:N'.",
    )
    tile_size = _config.ConfigItem(
        0,
        "Default tile size in pixels for tiled inference (0 = the model's own default).",
        cfgtype="integer",
    )
    batch_size = _config.ConfigItem(
        0,
        "Default number of tiles per forward pass (0 = chosen from the device).",
        cfgtype="integer",
    )
    autocast = _config.ConfigItem(
        "auto",
        "Mixed precision of the network on CUDA: 'auto' (bfloat16 where supported, "
        "else float16), 'bfloat16', 'float16' or 'none' (float32).  No effect on the CPU.",
    )


conf = Conf()
