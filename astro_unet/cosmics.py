# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Cosmic-ray detection and cleaning with L.A.Cosmic (astroscrappy).

`clean_cosmic_rays` calls `astroscrappy.detect_cosmics` directly rather than
through `ccdproc.cosmicray_lacosmic`, so that

* the image is converted to electrons (the noise model of L.A.Cosmic needs
  counts) and the cleaned image comes back in the *input's* unit, whatever
  that unit is (electron, electron/s, adu with a gain, adu/s);
* the uncertainty stays consistent with the returned data (ccdproc 2.5.1
  changes the unit without scaling the uncertainty, and mislabels the unit
  when ``gain_apply=False``);
* NaN/inf pixels and the input mask are handled instead of poisoning the
  median filters.
"""

import math
import warnings
from copy import deepcopy

import numpy as np
import astropy.units as u
from astropy.nddata import StdDevUncertainty
from astropy.utils.exceptions import AstropyDeprecationWarning, AstropyUserWarning
from astroscrappy import detect_cosmics

from . import _validation
from ._logging import log_step
from .simulate import preset_from_argument

__all__ = ["clean_cosmic_rays"]

#: Header keywords searched, in order, for the read noise (electrons).
READNOISE_KEYWORDS = ("RDNOISE", "READNOIS")

#: Smallest image side astroscrappy handles.  Its separable 9x9 median filter
#: (``sepmedfilt9``, used with the default ``sepmed=True``) copies four border
#: rows and columns without checking the image size: on images with a side
#: of 3 pixels or less it writes outside its buffers and kills the
#: interpreter ("malloc(): unsorted double linked list corrupted").  Measured
#: with astroscrappy 1.3.0 under valgrind: invalid writes for 3x9 and 9x3, none
#: for 4x4, 4x40 and 40x4 with every sepmed/fsmode/cleantype combination.
MIN_SIDE = 4

_CLEANTYPES = ("median", "medmask", "meanmask", "idw")
_FSMODES = ("median", "convolve")
_PSFMODELS = ("gauss", "gaussx", "gaussy", "moffat")


def _resolve_read_noise(ccd, read_noise, detector, gain):
    """
    Read noise in electrons and a short description of where it came from.

    Order: the ``read_noise`` argument, the ``detector`` preset, the header
    (``RDNOISE``/``READNOIS``, taken to be in electrons).  Never guessed.
    """
    if read_noise is not None:
        if isinstance(read_noise, u.Quantity):
            unit = read_noise.unit
            if unit.is_equivalent(u.adu):
                g = _validation.get_gain(ccd, gain)
                if g is None:
                    raise ValueError(
                        "read_noise is in adu: pass gain=... (electron / adu) or set "
                        "the GAIN header keyword, or give read_noise in electron."
                    )
                value = read_noise.to_value(u.adu) * g
            elif unit.is_equivalent(u.electron):
                value = read_noise.to_value(u.electron)
            else:
                raise u.UnitsError(
                    f"read_noise must be in electron (or adu with a gain), got {unit}."
                )
        else:
            try:
                value = float(read_noise)
            except (TypeError, ValueError):
                raise TypeError(
                    f"read_noise must be a number (electrons) or a Quantity, got {read_noise!r}."
                ) from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"read_noise must be finite and >= 0 electrons, got {read_noise!r}.")
        return value, "argument"

    if detector is not None:
        preset = preset_from_argument(detector, hint="Or pass read_noise=... (electrons).")
        if preset.read_noise is None:
            raise ValueError(
                f"Detector preset {preset.name!r} has no read noise: pass read_noise=... "
                "(electrons)."
            )
        value = preset.read_noise
        if isinstance(value, u.Quantity):
            value = value.to_value(u.electron)
        return float(value), f"detector preset {preset.name}"

    key, value = _validation.meta_lookup(ccd.meta, READNOISE_KEYWORDS)
    if key is not None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"Header keyword {key} = {value!r} is not a number; pass read_noise=... "
                "(electrons)."
            ) from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"Header keyword {key} = {value!r} is not a valid read noise; pass "
                "read_noise=... (electrons)."
            )
        return value, f"header {key}"

    raise ValueError(
        "No read noise: pass read_noise=... (electrons or a Quantity in electron), "
        "detector='wfc3_uvis' / 'acs_wfc', or set the RDNOISE header keyword. "
        "L.A.Cosmic's noise model needs it and it is not guessed."
    )


def _check_options(sigclip, sigfrac, objlim, niter, cleantype, fsmode, psfmodel,
                   psffwhm, psfsize):
    for name, value in (("sigclip", sigclip), ("sigfrac", sigfrac), ("objlim", objlim),
                        ("psffwhm", psffwhm)):
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{name} must be a finite positive number, got {value!r}.")
    if isinstance(niter, bool) or not isinstance(niter, (int, np.integer)) or niter < 1:
        raise ValueError(f"niter must be an integer >= 1, got {niter!r}.")
    if (isinstance(psfsize, bool) or not isinstance(psfsize, (int, np.integer))
            or psfsize < 3 or psfsize % 2 == 0):
        raise ValueError(f"psfsize must be an odd integer >= 3, got {psfsize!r}.")
    for name, value, allowed in (("cleantype", cleantype, _CLEANTYPES),
                                 ("fsmode", fsmode, _FSMODES),
                                 ("psfmodel", psfmodel, _PSFMODELS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")


def _satlevel_electrons(satlevel, unit, scale):
    """Saturation level in electrons (``inf`` when None)."""
    if satlevel is None:
        return np.inf
    if isinstance(satlevel, u.Quantity):
        if satlevel.unit.is_equivalent(unit):
            satlevel = satlevel.to_value(unit)
        elif satlevel.unit.is_equivalent(u.electron):
            satlevel = satlevel.to_value(u.electron) / scale
        else:
            raise u.UnitsError(
                f"satlevel must be in the image's unit ({unit}) or in electron, "
                f"got {satlevel.unit}."
            )
    try:
        value = float(satlevel)
    except (TypeError, ValueError):
        raise TypeError(f"satlevel must be a number or Quantity, got {satlevel!r}.") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"satlevel must be a positive number, got {satlevel!r}.")
    return value * scale


def clean_cosmic_rays(ccd, *, gain=None, read_noise=None, exposure_time=None, sigclip=4.5,
                      sigfrac=0.3, objlim=5.0, satlevel=None, niter=4, sepmed=True,
                      cleantype="meanmask", fsmode="median", psfmodel="gauss", psffwhm=2.5,
                      psfsize=7, detector=None, return_mask=False, verbose=False,
                      readnoise=None):
    """
    Detect and clean cosmic rays with L.A.Cosmic (van Dokkum 2001, astroscrappy).

    The image is converted to electrons (L.A.Cosmic's noise model is
    ``sqrt(counts + read_noise**2)``), `astroscrappy.detect_cosmics` is run with
    ``gain=1``, and the replaced pixel values are converted back, so the
    result is in the input's unit.  Pixels not flagged keep their exact input
    values.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData` or `~astropy.nddata.NDData`
        2-D image in electron, electron/s, adu or adu/s (adu needs a gain).
        The sky should still be in the image (L.A.Cosmic estimates the noise
        from the pixel values); on sky-subtracted images the noise is
        underestimated and faint sources may be flagged.
    gain : float or `~astropy.units.Quantity`, optional
        Electron / adu, for adu images.  Default: the ``GAIN`` header keyword.
    read_noise : float or `~astropy.units.Quantity`, optional
        Read noise, in electrons (a number, or a Quantity in electron, or in
        adu together with a gain).  Default: the ``detector`` preset, else
        the ``RDNOISE``/``READNOIS`` header keyword (taken to be electrons);
        if none is available a `ValueError` is raised (it is never guessed).
    exposure_time : float or `~astropy.units.Quantity`, optional
        Seconds, for images in a rate unit.  Default: ``EXPTIME`` header.
    sigclip : float, optional
        Laplacian-to-noise detection limit (lower flags more pixels).
    sigfrac : float, optional
        Fraction of ``sigclip`` used for pixels neighbouring a detection.
    objlim : float, optional
        Minimum contrast between the Laplacian and the fine-structure image;
        raise it if star cores are flagged.
    satlevel : float or `~astropy.units.Quantity`, optional
        Saturation level: a number in the image's unit, or a Quantity in a
        unit convertible to the image's or in electron.  Pixels at or above it
        in saturated star cores (and a border of a few pixels) are left out of the
        detection and cleaning; they are not added to the output mask.
        Default None: no saturation limit (``inf`` is passed to astroscrappy,
        whose own default is 65536 electrons).
    niter : int, optional
        Number of L.A.Cosmic iterations.
    sepmed : bool, optional
        Use the (faster) separable median filter.
    cleantype : {'meanmask', 'medmask', 'median', 'idw'}, optional
        How flagged pixels are replaced (5x5 masked mean, masked median,
        unmasked median, inverse-distance interpolation).
    fsmode : {'median', 'convolve'}, optional
        How the fine-structure image is built.
    psfmodel : {'gauss', 'gaussx', 'gaussy', 'moffat'}, optional
        PSF model for ``fsmode='convolve'``.
    psffwhm : float, optional
        PSF FWHM in pixels for ``fsmode='convolve'``.
    psfsize : int, optional
        Odd size of the PSF kernel for ``fsmode='convolve'``.
    detector : str or `~astro_unet.DetectorPreset`, optional
        An ``astro_unet.DETECTOR_PRESETS`` name (``'wfc3_uvis'``: 3.1 e-,
        ``'acs_wfc'``) or a preset, whose ``read_noise`` is used when
        ``read_noise`` is not given.  It wins over the header keyword.
    return_mask : bool, optional
        Also return the boolean cosmic-ray mask alone (without the input
        mask or NaN pixels).
    verbose : bool, optional
        Let astroscrappy print its progress.
    readnoise : float or `~astropy.units.Quantity`, optional
        Deprecated spelling of ``read_noise`` (the package's spelling
        everywhere else); gives an
        `~astropy.utils.exceptions.AstropyDeprecationWarning`.

    Returns
    -------
    cleaned : same class as ``ccd``
        New object in the input's unit with the cosmic-ray pixels replaced.
        ``mask`` is the input mask OR the cosmic-ray mask OR the non-finite
        pixels (which keep their NaN/inf values).  ``uncertainty``: None if
        the input has none; otherwise unchanged on unflagged pixels and, on
        each replaced pixel, ``max(original, sqrt(max(cleaned_e, 0) + RON**2)
        / scale)`` -- at least the Poisson + read noise of the replaced value
        (``cleaned_e`` in electrons, ``scale`` the unit-to-electron factor).
        Non-standard-deviation uncertainties (variance, inverse variance) are
        treated the same way through their standard-deviation form.  WCS and
        header travel through; the header gets ``CRNPIX`` (number of flagged
        pixels), ``CRSIGCLP``, ``CROBJLIM``, ``CRRDNOIS`` (e-) and ``CRMETHOD``.
    crmask : `numpy.ndarray` of bool
        Only with ``return_mask=True``: the pixels flagged as cosmic rays.

    Raises
    ------
    TypeError
        ``ccd`` is not an NDData, or an option has the wrong type.
    ValueError
        Not a 2-D image, a side shorter than ``MIN_SIDE`` (4) pixels, no
        finite unmasked pixel, no read noise available,
        adu without a gain, a rate without an exposure time, or a bad option.
    astropy.units.UnitsError
        No unit, or a unit that cannot be converted to electrons.

    Notes
    -----
    Masked input pixels are passed to astroscrappy as ``inmask`` (they and
    their direct neighbours are never flagged nor used for cleaning).
    NaN/inf pixels are also masked and, for the detection only, filled with
    the median of the good pixels.  astroscrappy works in float32; only the
    flagged pixels take its values.

    L.A.Cosmic tells cosmic rays from stars by their sharpness, so the cores
    of bright, barely sampled stars (FWHM of about 2 pixels or less, as in
    HST drizzled products) can be flagged: check ``CRNPIX`` and the mask,
    raise ``objlim`` or use ``sepmed=False``, and do not run it on products
    whose cosmic rays were already rejected by combining exposures.

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astropy.nddata import CCDData
    >>> from astro_unet import clean_cosmic_rays
    >>> rng = np.random.default_rng(0)
    >>> data = rng.poisson(100.0, (64, 64)).astype(float)
    >>> data[20, 30] += 5000.0                 # a cosmic-ray hit
    >>> ccd = CCDData(data, unit="electron")
    >>> cleaned = clean_cosmic_rays(ccd, read_noise=3.1 * u.electron)
    >>> bool(cleaned.mask[20, 30]), bool(50 < cleaned.data[20, 30] < 150)
    (True, True)
    >>> cleaned.unit, cleaned.meta["CRNPIX"]
    (Unit("electron"), 1)
    """
    data = _validation.validate_ccd(ccd)  # float64 copy; checks ndim, unit, finite pixels
    if min(data.shape) < MIN_SIDE:
        raise ValueError(
            f"clean_cosmic_rays needs an image of at least {MIN_SIDE}x{MIN_SIDE} pixels, "
            f"got shape {data.shape}: L.A.Cosmic's median filters (astroscrappy) cannot "
            "handle thinner images."
        )
    _check_options(sigclip, sigfrac, objlim, niter, cleantype, fsmode, psfmodel,
                   psffwhm, psfsize)
    scale, exptime = _validation.electron_scale(ccd, exposure_time=exposure_time, gain=gain)
    if readnoise is not None:
        if read_noise is not None:
            raise TypeError("give read_noise only (readnoise is its deprecated spelling).")
        warnings.warn("clean_cosmic_rays(readnoise=...) is deprecated: use read_noise=...",
                      AstropyDeprecationWarning, stacklevel=2)
        read_noise = readnoise
    ron, ron_source = _resolve_read_noise(ccd, read_noise, detector, gain)
    unit = u.Unit(ccd.unit)
    sat_e = _satlevel_electrons(satlevel, unit, scale)

    nonfinite = ~np.isfinite(data)
    in_mask = np.zeros(data.shape, dtype=bool)
    if ccd.mask is not None:
        in_mask = np.array(np.broadcast_to(np.asarray(ccd.mask, dtype=bool), data.shape))
    bad = in_mask | nonfinite

    electrons = data * scale
    _validation.check_magnitude(electrons, consumer="astroscrappy")  # it works in float32
    if nonfinite.any():
        electrons[nonfinite] = np.median(electrons[~bad])
    _warn_if_sky_subtracted(electrons, bad, ron)

    crmask, cleanarr = detect_cosmics(
        electrons, inmask=bad, sigclip=float(sigclip), sigfrac=float(sigfrac),
        objlim=float(objlim), gain=1.0, readnoise=float(ron), satlevel=float(sat_e),
        niter=int(niter), sepmed=bool(sepmed), cleantype=cleantype, fsmode=fsmode,
        psfmodel=psfmodel, psffwhm=float(psffwhm), psfsize=int(psfsize), verbose=verbose,
    )
    crmask = np.asarray(crmask, dtype=bool) & ~bad
    cleaned_e = np.asarray(cleanarr, dtype=np.float64)

    out = data.copy()  # unflagged pixels (NaN/inf included) keep their input values
    out[crmask] = cleaned_e[crmask] / scale

    uncertainty = None
    if ccd.uncertainty is not None:
        uncertainty = _inflate_uncertainty(ccd.uncertainty, crmask, cleaned_e, ron, scale,
                                           unit, data.shape)

    meta = deepcopy(ccd.meta)
    ncr = int(crmask.sum())
    call = (f"clean_cosmic_rays(sigclip={float(sigclip):g}, sigfrac={float(sigfrac):g}, "
            f"objlim={float(objlim):g}, read_noise={ron:g} e- [{ron_source}], "
            f"cleantype={cleantype})")
    log_step(meta, call, {
        "CRNPIX": (ncr, "pixels flagged as cosmic rays"),
        "CRSIGCLP": (float(sigclip), "L.A.Cosmic sigclip"),
        "CROBJLIM": (float(objlim), "L.A.Cosmic objlim"),
        "CRRDNOIS": (float(ron), "[e-] read noise used for CR detection"),
        "CRMETHOD": ("astroscrappy", "cosmic-ray detection/cleaning code"),
    })
    result = _validation.new_like(ccd, out, uncertainty=uncertainty, mask=bad | crmask,
                                  meta=meta)
    if return_mask:
        return result, crmask
    return result


#: Warn when the measured pixel noise exceeds L.A.Cosmic's model noise by this factor.
SKY_WARNING_FACTOR = 2.0


def _warn_if_sky_subtracted(electrons, bad, ron):
    """
    Warn when L.A.Cosmic's noise model cannot hold: negative background, or
    a pixel noise far above ``sqrt(max(median, 0) + ron**2)`` (sky subtracted).
    """
    from ._normalization import background_level, background_noise

    level = background_level(electrons, bad)
    noise = background_noise(electrons, bad)
    expected = math.sqrt(max(level, 0.0) + ron ** 2)
    if level < 0 or noise > SKY_WARNING_FACTOR * expected:
        warnings.warn(
            f"clean_cosmic_rays: the image looks sky-subtracted or has a negative "
            f"background (median {level:.3g} e-, pixel noise {noise:.3g} e-, while "
            f"L.A.Cosmic's noise model sqrt(max(median, 0) + read_noise**2) gives "
            f"{expected:.3g} e-), so it may flag most pixels. Add the sky level back "
            "before cleaning, or check the unit, gain and read_noise.",
            AstropyUserWarning, stacklevel=3)


def _inflate_uncertainty(uncert, crmask, cleaned_e, ron, scale, unit, shape):
    """Uncertainty of the output: see `clean_cosmic_rays` Returns."""
    as_std = isinstance(uncert, StdDevUncertainty)
    if as_std:
        std = uncert
    else:
        try:
            std = uncert.represent_as(StdDevUncertainty)
        except (TypeError, ValueError, AttributeError, NotImplementedError):
            # Unknown uncertainty type: carried over unchanged.
            return deepcopy(uncert)
    sigma = np.array(np.broadcast_to(np.asarray(std.array, dtype=float), shape))
    local = np.sqrt(np.clip(cleaned_e[crmask], 0, None) + ron**2) / scale
    if std.unit is not None and std.unit != unit:
        local = (local * unit).to_value(std.unit)
    sigma[crmask] = np.fmax(sigma[crmask], local)
    new = StdDevUncertainty(sigma, unit=std.unit, copy=False)
    if not as_std:
        new = new.represent_as(type(uncert))
    return new
