# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The one setup step of a denoising call: `DenoisePlan`, and the shared finishing steps.

`~astro_unet.denoise_ccd` and `~astro_unet.denoise_large` both build a
`DenoisePlan` from the image's unit, header and shape and the call's
options (ratio, model, normalization, exposure time and gain, read noise,
saturation, tiling), complete it with the image-wide statistics
(`DenoisePlan.with_statistics`), and finish every output pixel and the
header with the same methods, so that the two agree by construction.
"""

import dataclasses
import math

import numpy as np
import astropy.units as u

from . import _inference, _validation
from ._logging import log_step, set_keyword
from ._normalization import (
    DEFAULT_NORMALIZATION,
    apply_statistics,
    background_level,
    background_noise,
    check_normalization,
    fill_bad,
    read_noise_value,
    statistics_needed,
    subsample_stride,
)
from .tiling import MODES, plan_tiles

__all__ = []  # private module: public names for astro_unet's own modules


def card(value, comment):
    """(value, comment) for a FITS card: the comment is dropped if the card would be too long."""
    value = value if len(value) <= 68 else value[:65] + "..."
    if len(value) + len(comment) > 80 - 10 - 2 - 3:
        comment = ""
    return value, comment


ESTIMATES = ("extended", "long", "mean")
#: Ratios more than this factor above a model's largest trained ratio raise
#: an error unless ``extrapolate=True``.
EXTRAPOLATION_LIMIT = 2.0


def trained_ratios(info):
    """``(lo, hi)``: the ratios a model was trained on (None when it does not say)."""
    ratios = (info.get("metadata") or {}).get("ratios")
    values = []
    if isinstance(ratios, dict):
        values = list(ratios.get("values") or []) + list(ratios.get("range") or [])
    elif isinstance(ratios, (list, tuple)):
        values = list(ratios)
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return (min(values), max(values)) if values else None


def check_ratio_range(ratio, info, *, extrapolate, call):
    """Warn outside the model's trained ratios; refuse far above them unless ``extrapolate``."""
    import warnings

    from astropy.utils.exceptions import AstropyUserWarning

    span = trained_ratios(info)
    if span is None:
        return
    lo, hi = span
    if ratio > EXTRAPOLATION_LIMIT * hi and not extrapolate:
        raise ValueError(
            f"{call}: ratio={ratio:g} is more than {EXTRAPOLATION_LIMIT:g} times the largest "
            f"ratio the model was trained on ({hi:g}); its output would be an "
            f"extrapolation.  Pass extrapolate=True to run it anyway.")
    if not lo <= ratio <= hi:
        warnings.warn(f"{call}: ratio={ratio:g} is outside the ratios the model was trained "
                      f"on ({lo:g} to {hi:g}); check the result.", AstropyUserWarning)


def saturation_level(ccd, saturation):
    """
    Saturation level in the data's unit, or None.

    ``saturation`` None: the ``SATURATE`` keyword of a counts image (not of a
    rate image, whose scale a header value rarely matches); False: none.
    """
    if saturation is False:
        return None
    if saturation is None:
        if _validation.is_rate(ccd.unit) or "SATURATE" not in (ccd.meta or {}):
            return None
        value = ccd.meta["SATURATE"]
        value = value[0] if isinstance(value, tuple) else value
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) and value > 0 else None
    if isinstance(saturation, u.Quantity):
        try:
            saturation = saturation.to_value(ccd.unit)
        except u.UnitConversionError:
            raise u.UnitsError(f"saturation must be in the image's unit ({ccd.unit}), got "
                               f"{saturation.unit}.") from None
    if isinstance(saturation, bool):
        raise TypeError("saturation must be a number, None or False, got True.")
    try:
        value = float(saturation)
    except (TypeError, ValueError):
        raise TypeError(f"saturation must be a number, None or False, got "
                        f"{saturation!r}.") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"saturation must be a finite number > 0, got {saturation!r}.")
    return value


#: The network's estimate may not move the median pixel by more than this many
#: background sigmas of the input (a sign of a ratio or input far outside training).
MAX_MEDIAN_SHIFT = 100.0


def check_output(result, x_out, bad, *, ratio, unit_scale, noise):
    """
    Refuse a network output that is not finite or whose median departs from
    the input's by more than `MAX_MEDIAN_SHIFT` times the larger of the
    background sigma and the network's own unit (``unit_scale``, the
    normalization scale in the output unit), and more than the input's median
    level itself.  ``noise`` is the input's background sigma in the output
    unit (`DenoisePlan.background`, measured before the network).
    """
    good = ~bad
    d = np.asarray(result, dtype=np.float64)[good]
    x = np.asarray(x_out, dtype=np.float64)[good]
    step = subsample_stride(d.size)
    d, x = d[::step], x[::step]
    shift = np.median(d - x) if d.size else 0.0
    level = abs(np.median(x)) if d.size else 0.0
    limit = max(MAX_MEDIAN_SHIFT * max(noise, unit_scale), level)
    if not np.all(np.isfinite(d)) or abs(shift) > limit:
        raise RuntimeError(
            f"the network's output is not usable (median shift {shift:.3g} against a "
            f"background noise of {noise:.3g} in the output unit, at ratio={ratio:g}): the "
            "ratio or the image is far outside what the model was trained on.")


def long_exposure_factor(mean, *, ratio, noise, level, ron, factor):
    """
    Per-pixel scale ``alpha`` of the input noise in a real exposure ``ratio`` times longer.

    All values in the output unit; ``factor`` converts short-exposure
    electrons to it.  The input's variance is the background noise squared
    (sky, dark and read noise) plus the Poisson variance of the flux above
    the background level, ``noise**2 + max(mean - level, 0) * factor``.  In
    the long exposure the Poisson part grows ``ratio`` times and the read
    noise does not, so that, in the units of the short exposure, its variance
    is ``poisson / ratio + ron**2 / ratio**2``; ``alpha`` is the square root of
    their quotient: ``1 / sqrt(ratio)`` without read noise, down to
    ``1 / ratio`` when the read noise dominates (a read noise above the
    measured noise counts as equal to it).  Returns ``(alpha, var_in)``.
    """
    with np.errstate(invalid="ignore"):
        source = np.clip(mean - level, 0.0, None) * factor
    ron = min(ron, noise)          # measured below the read noise: correlated noise
    var_in = noise ** 2 + source
    var_poisson = noise ** 2 - ron ** 2 + source
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.sqrt((var_poisson / ratio + ron ** 2 / ratio ** 2) / var_in)
    alpha = np.clip(np.nan_to_num(alpha, nan=1.0 / math.sqrt(ratio)), 1.0 / ratio,
                    1.0 / math.sqrt(ratio))
    return alpha, var_in


def finish_output(result, sigma, x_out, *, ratio, estimate, bad, saturated, noise, level,
                  ron, factor, model_sigma):
    """
    The output the caller asked for, in place (``result`` holds the mean estimate).

    ``x_out`` is the input in the output's unit; ``noise``, ``level`` and
    ``ron`` are its background noise, background level and the read noise in
    the same unit, ``factor`` converts short-exposure electrons to it.
    Both ``"extended"`` and ``"long"`` return ``d + w (x - d)`` (bad pixels
    keep ``d``) and the standard deviation ``sqrt(w**2 var_in + ((1 - w)
    sigma)**2)`` of its error against the noiseless scene: ``w = 1 / ratio``
    for ``"extended"``, the expected exposure ``ratio`` times longer that
    begins with the input; ``w = alpha`` (`long_exposure_factor`) for
    ``"long"``, the noise of a real exposure ``ratio`` times longer, whose
    ``sigma`` term counts only where the model has an uncertainty head
    (``model_sigma``; without it ``sigma`` is the long exposure's Poisson
    noise, which the ``alpha`` term already is).
    Saturated pixels take the input's value (a lower limit); the caller
    masks them.
    """
    if estimate in ("long", "extended"):
        good = ~bad
        d = result[good]
        alpha, var_in = long_exposure_factor(d, ratio=ratio, noise=noise, level=level,
                                             ron=ron, factor=factor)
        weight = alpha if estimate == "long" else 1.0 / ratio
        result[good] = d + weight * (x_out[good] - d)
        var = weight ** 2 * var_in
        if model_sigma or estimate == "extended":
            var = var + ((1.0 - weight) * sigma[good]) ** 2
        sigma[good] = np.sqrt(var)
    if saturated is not None and saturated.any():
        result[saturated] = x_out[saturated]


def record_denoise(meta, call, *, info, ratio, tile, overlap, mode, device, uncert_kind,
                   noise, to_model, exptime, estimate, n_saturated=None):
    """Write the ``DN*`` keywords, the ``HISTORY`` line and ``EXPTIME = t r`` into ``meta``."""
    metadata = info.get("metadata") or {}
    version = metadata.get("version", info.get("format_version", "unknown"))
    sha = str(info.get("sha256", "unknown"))
    keywords = {
        "DNMODEL": card(str(info.get("name", "unknown")), "astro_unet model name"),
        "DNVER": card(str(version), "model version"),
        "DNSHA256": card(sha, ""),
        "DNSHAOF": ("weights" if info.get("sha_note") else "file",
                    "DNSHA256 of the model file or of its weights"),
        "DNRATIO": (ratio, "exposure-time ratio r of denoise_ccd"),
        "DNESTIM": (estimate, "extended, long or mean output (see docs)"),
        "DNTILE": (int(tile), "[px] tile size"),
        "DNOVERLP": (int(overlap), "[px] minimum tile overlap"),
        "DNMODE": (mode, "tile blending (feather or paper)"),
        "DNDEVICE": (device.type, "torch device type used"),
        "DNUNCERT": (uncert_kind, "origin of the output uncertainty"),
    }
    if n_saturated is not None:
        keywords["DNNSAT"] = (n_saturated, "saturated input pixels, masked")
    if noise is not None:
        keywords["DNNOISE"] = (float(f"{noise / to_model:.6g}"),
                               "[e-] background noise of the input")
    log_step(meta, f"{call}(ratio={ratio:g}, model={keywords['DNMODEL'][0]!r}, "
                   f"estimate={estimate!r}, mode={mode!r})", keywords)
    if exptime is not None:
        keys = [k for k in _validation.EXPTIME_KEYWORDS if k in meta] or ["EXPTIME"]
        for key in keys:
            set_keyword(meta, key, exptime * ratio, "[s] short exposure x DNRATIO")
    return meta


def check_options(*, estimate, mode, extrapolate, progress=None):
    """
    Validate the options of a denoising call that need neither image nor model.

    Parameters
    ----------
    estimate, mode, extrapolate : object
        The arguments of `~astro_unet.denoise_ccd`.
    progress : object, optional
        Its ``progress`` argument (None: a call without one).

    Raises
    ------
    ValueError, TypeError
        An unknown mode or estimate, flags that are not booleans.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if estimate not in ESTIMATES:
        raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}.")
    if progress is not None and progress not in (True, False):
        raise TypeError(f"progress must be True or False, got {progress!r}.")
    if extrapolate not in (True, False):
        raise TypeError(f"extrapolate must be True or False, got {extrapolate!r}.")


@dataclasses.dataclass(frozen=True)
class DenoisePlan:
    """
    Every decision of a denoising call, made once before any pixel is denoised.

    Built with `DenoisePlan.build`; ``norm``, ``cond`` and ``noise`` are
    final once `with_statistics` has added the image-wide statistics.

    Attributes
    ----------
    call : str
        Name of the public function (in messages and ``HISTORY``).
    ratio : float
        The validated exposure-time ratio.
    estimate, mode : str
        As for `~astro_unet.denoise_ccd`.
    device : `torch.device`
    net : `~astro_unet.model.AstroUNet` or None
        The prepared network (None in a copy sent to Dask workers).
    info : dict
        The model's information (name, version, sha256, normalization).
    norm : dict
        The checked normalization (numeric once the statistics are in).
    ron : float
        Read noise (electrons).
    scale : float
        Electrons per unit of the image.
    exptime : float or None
        Short exposure time (s).
    to_model : float
        Short-exposure electrons -> the model unit.
    factor : float
        Short-exposure electrons -> the output unit.
    saturation : float or None
        Saturation level in the image's unit.
    tile_size, overlap, batch_size : int
        Tiling of the whole image.
    dtype : type
        ``numpy.float32`` or ``numpy.float64``: the output's dtype.
    cond : tuple of float or None
        Conditioning values (after `with_statistics`).
    noise : float or None
        Background noise of the input in the model unit where the model uses
        it (recorded as ``DNNOISE``).
    background, level : float or None
        Background noise and median of the input in the model unit (after
        `with_statistics`; the long-exposure estimate needs both).
    model_sigma : bool
        Whether the network predicts its own error (``out_channels = 2``).
    """

    call: str
    ratio: float
    estimate: str
    mode: str
    device: object
    net: object
    info: dict
    norm: dict
    ron: float
    scale: float
    exptime: object
    to_model: float
    factor: float
    saturation: object
    tile_size: int
    overlap: int
    batch_size: int
    dtype: type
    cond: tuple = None
    noise: float = None
    background: float = None
    level: float = None
    model_sigma: bool = False

    @classmethod
    def build(cls, ccd, shape, *, call, ratio, model, estimate, mode, device, tile_size,
              overlap, batch_size, exposure_time, gain, read_noise, saturation, extrapolate,
              dtype):
        """
        The plan of one call (``ratio`` validated, options checked by `check_options`).

        Parameters
        ----------
        ccd : `~astropy.nddata.NDData`
            Carries the image's ``unit`` and ``meta`` (its data are not used).
        shape : tuple of int
            Shape of the whole image.
        call : str
            ``"denoise_ccd"`` or ``"denoise_large"``.
        ratio, model, estimate, mode, device, tile_size, overlap, batch_size, \
exposure_time, gain, read_noise, saturation, extrapolate
            As for `~astro_unet.denoise_ccd`.
        dtype : type
            The output's dtype.

        Returns
        -------
        plan : `DenoisePlan`
            Without the image-wide statistics (see `with_statistics`).
        """
        sat_level = saturation_level(ccd, saturation)
        dev, net, info = _inference.resolve(model, device)
        check_ratio_range(ratio, info, extrapolate=extrapolate, call=call)
        norm = check_normalization(info.get("normalization") or DEFAULT_NORMALIZATION)
        cfg = net.config
        if cfg.in_channels != 1:
            raise ValueError(
                f"{call} needs a network with 1 input channel, got {cfg.in_channels}.")
        from .model import KNOWN_CONDITIONS

        unknown = [n for n in cfg.cond_names if n not in KNOWN_CONDITIONS]
        if unknown:
            raise ValueError(f"the model asks for unknown conditioning values {unknown}.")
        need_time = norm["unit"] == "electron/s" or "log_exptime" in cfg.cond_names
        scale, exptime = _validation.electron_scale(
            ccd, exposure_time=exposure_time, gain=gain, need_time=need_time)
        if need_time and exptime is None:
            exptime = _validation.get_exposure_time(ccd, exposure_time, required=True)
        ron = read_noise_value(read_noise, norm)
        rate = _validation.is_rate(ccd.unit)
        tile, ov, batch = _inference.tiling_parameters(
            shape, net, norm, dev, tile_size=tile_size, overlap=overlap,
            batch_size=batch_size, mode=mode)
        to_model = 1.0 / exptime if norm["unit"] == "electron/s" else 1.0
        # counts: the output is the long exposure (x r); rates stay rates
        factor = (1.0 if rate else ratio) / scale    # electrons (short) -> output unit
        return cls(call=call, ratio=ratio, estimate=estimate, mode=mode, device=dev, net=net,
                   info=info, norm=norm, ron=ron, scale=scale, exptime=exptime,
                   to_model=to_model, factor=factor, saturation=sat_level, tile_size=tile,
                   overlap=ov, batch_size=batch, dtype=dtype,
                   model_sigma=cfg.out_channels == 2)

    @property
    def statistics_needed(self):
        """``(noise, level)``: whether the model uses the image's background noise and median."""
        return statistics_needed(self.norm, self.net.config.cond_names)

    def measured(self, x_model, bad):
        """`with_statistics` of the image ``x_model`` (model unit; ``bad`` pixels ignored)."""
        return self.with_statistics(noise=background_noise(x_model, bad),
                                    level=background_level(x_model, bad))

    def with_statistics(self, *, noise, level):
        """
        The plan completed with the image-wide background ``noise`` and ``level``.

        Parameters
        ----------
        noise, level : float
            Background noise (`~astro_unet._normalization.background_noise`)
            and median (`~astro_unet._normalization.background_level`) of the
            input in the model unit.

        Returns
        -------
        plan : `DenoisePlan`
            With a numeric normalization, the conditioning values and the
            statistics.
        """
        norm, cond = apply_statistics(self.norm, noise=noise, level=level, ratio=self.ratio,
                                      exptime=self.exptime, ron=self.ron,
                                      cond_names=self.net.config.cond_names)
        need_noise, _ = self.statistics_needed     # DNNOISE only where the model uses it
        return dataclasses.replace(self, norm=norm, cond=tuple(cond),
                                   noise=noise if need_noise else None, background=noise,
                                   level=level)

    @property
    def post(self):
        """Keyword arguments of `~astro_unet._normalization.network_to_output`."""
        return dict(ratio=self.ratio, to_model=self.to_model, factor=self.factor)

    @property
    def uncertainty_kind(self):
        """``DNUNCERT``: ``"model"`` for a two-channel network, else ``"poisson-estimate"``."""
        return "model" if self.model_sigma else "poisson-estimate"

    def tile_plan(self, shape):
        """The `~astro_unet.tiling.TilePlan` of the whole image (``shape``)."""
        return plan_tiles(shape, tile_size=self.tile_size, overlap=self.overlap,
                          size_multiple=self.net.size_multiple, fit=self.mode == "feather")

    def saturated(self, data):
        """Pixels of ``data`` (image unit) at or above the saturation level, or None."""
        if self.saturation is None:
            return None
        with np.errstate(invalid="ignore"):
            return data >= self.saturation

    def to_model_unit(self, values, bad):
        """
        Image values -> the model unit, bad pixels filled (in place).

        ``values`` is a float64 array in the image's unit; ``bad`` pixels take
        the value of the nearest usable pixel.
        """
        values *= self.scale                     # electrons in the short exposure
        fill_bad(values, bad)
        if self.to_model != 1.0:
            values *= self.to_model
        return values

    def check_output(self, result, x_out, bad):
        """`check_output` with this plan's ratio, normalization scale and noise."""
        factor, to_model = self.factor, self.to_model
        check_output(result, x_out, bad, ratio=self.ratio,
                     unit_scale=float(self.norm.get("scale") or 1.0) * factor / to_model,
                     noise=self.background * factor / to_model)

    def finish(self, result, sigma, x_out, *, bad, nonfinite, saturated):
        """
        Finish the output in place: the estimate asked for, saturated and non-finite pixels.

        Parameters
        ----------
        result, sigma : `numpy.ndarray`
            The network's mean estimate and its standard deviation (output unit).
        x_out : `numpy.ndarray`
            The input in the output unit.
        bad, nonfinite, saturated : `numpy.ndarray` of bool or None
            Pixels filled before the network, non-finite input pixels (NaN
            again in the output) and saturated pixels (None: none).
        """
        out = self.factor / self.to_model       # model unit -> output unit
        finish_output(result, sigma, x_out, ratio=self.ratio, estimate=self.estimate, bad=bad,
                      saturated=saturated, noise=self.background * out,
                      level=self.level * out, ron=self.ron * self.factor, factor=self.factor,
                      model_sigma=self.model_sigma)
        if nonfinite.any():
            result[nonfinite] = np.nan
            sigma[nonfinite] = np.nan

    def record(self, meta, *, tile_size=None, n_saturated=None):
        """
        Write the ``DN*`` keywords, ``HISTORY`` and ``EXPTIME = t r`` into ``meta``.

        ``tile_size`` is the tile side used when it differs from the plan's
        (a CUDA out-of-memory retry).
        """
        return record_denoise(meta, self.call, info=self.info, ratio=self.ratio,
                              tile=self.tile_size if tile_size is None else tile_size,
                              overlap=self.overlap, mode=self.mode, device=self.device,
                              uncert_kind=self.uncertainty_kind, noise=self.noise,
                              to_model=self.to_model, exptime=self.exptime,
                              estimate=self.estimate, n_saturated=n_saturated)
