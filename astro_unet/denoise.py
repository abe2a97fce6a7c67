# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Denoise a CCD frame with an Astro U-net: `denoise_ccd`.

A thin function: it checks the image, builds the call's
`~astro_unet._plan.DenoisePlan` (the setup shared with
`~astro_unet.denoise_large`), brings the pixels into the model unit, runs
an engine of `astro_unet._inference` over the tiles and returns a new
`~astropy.nddata.CCDData`.  What the network sees and returns (model
normalizations, transforms, conditioning values), the output's uncertainty,
masked pixels, tiling defaults and devices are described in
:ref:`denoise_design`; the module constants below are the settings named
there.
"""

from copy import deepcopy

import numpy as np
from astropy.nddata import StdDevUncertainty

from . import _inference, _validation
from ._inference import (  # noqa: F401 - public settings, importable from here
    DEFAULT_BATCH_SIZE,
    DEFAULT_ENGINE,
    DEFAULT_TILE_SIZE,
    ENGINES,
    ERF_FRACTION,
    ERF_OVERLAP_FACTOR,
    MAX_TILE_SIZE,
    MIN_OVERLAP,
    TILE_PER_OVERLAP,
    recommended_overlap,
)
from ._normalization import DEFAULT_NORMALIZATION, MIN_NOISE, TRANSFORMS  # noqa: F401
from ._plan import (  # noqa: F401
    ESTIMATES,
    EXTRAPOLATION_LIMIT,
    MAX_MEDIAN_SHIFT,
    DenoisePlan,
    check_options,
)
from .tiling import MODES  # noqa: F401

__all__ = ["denoise_ccd"]


def denoise_ccd(ccd, *, ratio, model="default", estimate="extended", device=None, tile_size=None,
                overlap=None, batch_size=None, progress=False, exposure_time=None, gain=None,
                read_noise=None, saturation=None, mode="feather", extrapolate=False):
    """
    Make a short exposure look like one ``ratio`` times longer (Astro U-net).

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData` or `~astropy.nddata.NDData`
        2-D image in electron, electron/s, adu or adu/s (adu needs a gain).
        Masked and non-finite pixels are filled before the network and masked
        in the output.
    ratio : float
        Exposure-time ratio ``r > 1`` of the wanted (long) to the actual
        (short) exposure.  Required.  A ratio outside the ratios the model
        was trained on gives an `~astropy.utils.exceptions.AstropyUserWarning`;
        one more than twice the largest of them an error (see
        ``extrapolate``).
    model : str, path-like, `~astro_unet.model.AstroUNet` or tuple
        ``"default"`` (``astro_unet.conf.default_model``), a registry name,
        the path of a model file, a network, or ``(network, info)`` as
        returned by ``load_model``.  A network without a ``normalization``
        attribute uses ``DEFAULT_NORMALIZATION``.  Loaded models are cached
        (the 4 most recent per name, file and device).
    estimate : {"extended", "long", "mean"}
        ``"extended"`` (default): the expected exposure ``r`` times longer
        of which the input is the first ``1/r``, ``(x + (r - 1) d) / r``
        for the input ``x`` and the network's estimate ``d``: the input's
        own photons count with their share of the exposure time, the
        network stands for the rest.  Its white noise is the input's
        divided by ``r``.
        ``"long"``: an image with the noise of a real exposure ``r`` times
        longer, ``d + alpha (x - d)`` (``alpha = 1/sqrt(r)`` without read
        noise, down to ``1/r`` where the read noise dominates).
        ``"mean"``: the network's expected value ``d`` alone, whose
        background is much quieter than any real exposure.  See
        :ref:`estimates` for each output's uncertainty and the measurements
        behind the default.
    device : str or `torch.device`, optional
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``; default ``astro_unet.conf.device`` (``"auto"``).
    tile_size : int, optional
        Largest tile side in pixels (default ``conf.tile_size`` if set, else
        the model's recommendation, else 512 on CPU / 1024 on CUDA or 6 times
        the overlap if larger; 256 in paper mode).  Reduced to the image size
        and to at most 2048.
    overlap : int, optional
        Minimum tile overlap in pixels (default: the model's recommendation,
        else 4 times its effective receptive-field radius, at least 32;
        ``tile_size - 32`` in paper mode).
    batch_size : int, optional
        Tiles per forward pass (default ``conf.batch_size`` if set, else 1 on
        CPU, 8 on CUDA).  Memory grows with ``batch_size * tile_size**2``.
    progress : bool
        Show a progress bar (tqdm if installed, else lines on stderr).
    exposure_time : float or `~astropy.units.Quantity`, optional
        Short exposure time (s); default the ``EXPTIME`` keyword.  Needed for
        rate units and for models conditioned on the exposure time.
    gain : float or `~astropy.units.Quantity`, optional
        electron / adu for adu images; default the ``GAIN`` keyword.
    read_noise : float or `~astropy.units.Quantity`, optional
        Read noise in electrons, for the Anscombe transform, a ``read_noise``
        conditioning value and the uncertainty estimate; default the model's
        ``normalization["read_noise"]``, else 0.
    saturation : float, `~astropy.units.Quantity` or False, optional
        Saturation level in the image's unit: pixels at or above it are
        masked in the output and keep the input's value (scaled to the
        output unit; a lower limit), instead of a network guess.  Default:
        the ``SATURATE`` keyword of a counts image (electron or adu); False:
        none.
    mode : {"feather", "paper"}
        ``"feather"``: overlapping tiles with feathered blending;
        ``"paper"``: the paper's mosaic (256 px tiles moved by 32 px, plain
        average; about 64 times more computation).
    extrapolate : bool
        Run ratios more than twice the largest the model was trained on
        (default: `ValueError`).

    Returns
    -------
    result : same class as ``ccd``
        The denoised image, in the input's unit (counts units: counts of the
        long exposure, see :ref:`denoise_design`), with WCS and header of the
        input, ``EXPTIME`` multiplied by ``ratio``, mask = input mask |
        non-finite input | saturated input, and a
        `~astropy.nddata.StdDevUncertainty` of the estimate returned (see
        :ref:`estimates`): with the model's own error (``DNUNCERT='model'``)
        or without it (``DNUNCERT='poisson-estimate'``).  Header keywords: ``DNMODEL,
        DNVER, DNSHA256, DNSHAOF, DNRATIO, DNESTIM, DNTILE, DNOVERLP, DNMODE,
        DNDEVICE, DNUNCERT, DNNSAT`` and a ``HISTORY`` line.

    Raises
    ------
    TypeError
        ``ratio`` missing or not a number, ``ccd`` not NDData, bad ``model``.
    ValueError
        Not 2-D, no usable pixel, ``ratio <= 1`` or NaN, a ratio far beyond
        the model's training without ``extrapolate``, bad sizes, mode,
        estimate or saturation, missing exposure time or gain where needed.
    astropy.units.UnitsError
        No unit or a unit that cannot be converted to electrons.
    RuntimeError
        CUDA requested but not available; the network's output is not finite
        or its median departs from the input's by more than 100 background
        sigmas and the median level (a ratio or an image far outside the
        model's training).
    astro_unet.model.ModelFileError
        The model file is corrupt or not a model file.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from astro_unet import denoise_ccd
    >>> from astro_unet.model import AstroUNet
    >>> net = AstroUNet(base_channels=4, depth=3, residual=True)
    >>> rng = np.random.default_rng(0)
    >>> ccd = CCDData(rng.poisson(50.0, (64, 64)).astype(float), unit="electron",
    ...               meta={"EXPTIME": 100.0})
    >>> out = denoise_ccd(ccd, ratio=2, model=net, device="cpu")
    >>> out.shape, out.unit, out.meta["EXPTIME"], out.meta["DNESTIM"]
    ((64, 64), Unit("electron"), 200.0, 'extended')
    """
    r = _validation.validate_ratio(ratio)
    data = _validation.validate_ccd(ccd)
    check_options(estimate=estimate, mode=mode, extrapolate=extrapolate, progress=progress)
    # float32 images stay float32; everything else becomes float64
    plan = DenoisePlan.build(
        ccd, data.shape, call="denoise_ccd", ratio=r, model=model, estimate=estimate,
        mode=mode, device=device, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
        exposure_time=exposure_time, gain=gain, read_noise=read_noise, saturation=saturation,
        extrapolate=extrapolate, dtype=_validation.output_dtype(ccd))

    # --- pixels into the network's space
    nonfinite = ~np.isfinite(data)
    bad = nonfinite if ccd.mask is None else nonfinite | np.asarray(ccd.mask, dtype=bool)
    saturated = plan.saturated(data)
    x_model = plan.to_model_unit(data, bad)  # data: a float64 copy made by validate_ccd
    del data
    _validation.check_magnitude(x_model, unit=plan.norm["unit"])  # float32 network: no inf/NaN
    plan = plan.measured(x_model, bad)

    (result, sigma), tile, _ = _inference.run_engine(
        DEFAULT_ENGINE[plan.device.type], x_model, plan.net, plan.device, plan.cond,
        norm=plan.norm, ron=plan.ron, tile_size=plan.tile_size, overlap=plan.overlap,
        batch_size=plan.batch_size, mode=mode, progress=progress, post=plan.post,
        dtype=plan.dtype)
    x_model *= plan.factor / plan.to_model   # the input in the output unit
    plan.check_output(result, x_model, bad)
    plan.finish(result, sigma, x_model, bad=bad, nonfinite=nonfinite, saturated=saturated)
    del x_model
    if saturated is not None:
        bad = bad | saturated

    meta = deepcopy(ccd.meta)
    plan.record(meta, tile_size=tile,
                n_saturated=None if saturated is None else int(saturated.sum()))
    return _validation.new_like(ccd, result, uncertainty=StdDevUncertainty(sigma),
                                mask=bad, meta=meta)
