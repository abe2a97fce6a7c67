# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Input checks and unit handling shared by every processing function.

Every public function of the package funnels its inputs through these
helpers, so that the same mistake (no unit, a 3-D cube, a missing exposure
time, ...) is reported with the same clear message everywhere.  Nothing here
modifies its input.
"""

import math
from copy import deepcopy

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty

__all__ = []  # private module

#: Header keywords searched, in order, for the exposure time (seconds).
EXPTIME_KEYWORDS = ("EXPTIME", "EXPOSURE", "TEXPTIME")

#: Header keywords searched, in order, for the gain (electron / adu).
GAIN_KEYWORDS = ("GAIN", "CCDGAIN", "ATODGAIN")


def validate_ccd(ccd, *, name="ccd", require_unit=True):
    """
    Check that ``ccd`` is a 2-D `~astropy.nddata.NDData` with usable data.

    Returns the data as a float64 `numpy.ndarray` copy (never a view of the
    input).  Raises `TypeError` for a non-NDData object, `ValueError` for a
    wrong number of dimensions or an image without a single finite pixel and
    `~astropy.units.UnitsError` when ``require_unit`` and no unit is set.
    """
    if not isinstance(ccd, NDData):
        raise TypeError(
            f"{name} must be an astropy.nddata.CCDData or NDData instance, "
            f"got {type(ccd).__name__}. Wrap arrays with "
            "CCDData(array, unit='electron/s')."
        )
    data = np.asarray(ccd.data)
    if data.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D image, got {data.ndim}-D data of shape "
            f"{data.shape}. Process cubes one plane at a time."
        )
    if data.size == 0:
        raise ValueError(f"{name} is empty (shape {data.shape}).")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise TypeError(f"{name} must hold real numbers, got dtype {data.dtype}.")
    if require_unit and ccd.unit is None:
        raise u.UnitsError(
            f"{name} has no unit. Set one, e.g. CCDData(data, unit='electron/s') "
            "or ccd.unit = 'adu' (then pass gain=...)."
        )
    _check_companion_shapes(ccd, data.shape, name)
    data = data.astype(np.float64, copy=True)
    usable = np.isfinite(data)
    if ccd.mask is not None:
        usable &= ~np.asarray(ccd.mask, dtype=bool)
    if not usable.any():
        raise ValueError(
            f"{name} has no finite, unmasked pixel: all values are NaN/inf or masked."
        )
    return data


def _check_companion_shapes(ccd, shape, name):
    """`ValueError` unless the mask and uncertainty are scalars or of the data's ``shape``."""
    parts = (("mask", ccd.mask),
             ("uncertainty", getattr(ccd.uncertainty, "array", None)))
    for part, value in parts:
        if value is None:
            continue
        got = np.shape(value)
        if got not in ((), shape):
            raise ValueError(
                f"{name}.{part} has shape {got} but the data have shape {shape}: give "
                f"a {part} of the image's shape (or None)."
            )


#: Largest pixel magnitude (electrons, or electron/s) handed to float32 code:
#: the network and astroscrappy compute in float32 (largest value 3.4e38), and
#: the transforms and unit conversions around them need headroom.
FLOAT32_SAFE_LIMIT = 1e30


def check_magnitude(values, *, usable=None, unit="electron", name="ccd",
                    consumer="the network", limit=FLOAT32_SAFE_LIMIT):
    """
    `ValueError` when a finite value of ``values`` (where ``usable``) exceeds
    ``limit`` in magnitude: float32 code would turn it into inf and then NaN.
    """
    values = np.asarray(values)
    keep = np.isfinite(values)
    if usable is not None:
        keep &= usable
    if not keep.any():
        return
    peak = float(np.max(np.abs(values[keep])))
    if peak > limit:
        raise ValueError(
            f"{name} has pixel values of up to {peak:.3g} {unit}, beyond the float32 "
            f"arithmetic of {consumer} (at most {limit:.0e} {unit}); check the unit and "
            "scale of the image, or mask those pixels."
        )


def bad_pixel_mask(ccd):
    """Boolean mask of pixels that are masked in ``ccd`` or not finite."""
    bad = ~np.isfinite(np.asarray(ccd.data, dtype=float))
    if ccd.mask is not None:
        bad |= np.asarray(ccd.mask, dtype=bool)
    return bad


def is_rate(unit):
    """Whether ``unit`` is a rate: electron, adu, count or photon per second."""
    unit = u.Unit(unit)
    return any(unit.is_equivalent(base / u.s)
               for base in (u.electron, u.adu, u.count, u.photon))


def validate_ratio(ratio, *, name="ratio"):
    """Return ``ratio`` as a float > 1, or raise `ValueError` / `TypeError`."""
    if ratio is None:
        raise TypeError(f"{name} is required: the exposure-time ratio r > 1.")
    if isinstance(ratio, u.Quantity):
        if ratio.unit.physical_type != "dimensionless":
            raise u.UnitsError(f"{name} must be dimensionless, got unit {ratio.unit}.")
        ratio = ratio.to_value(u.dimensionless_unscaled)
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number > 1, got {ratio!r}.") from None
    if not math.isfinite(value) or value <= 1:
        raise ValueError(
            f"{name} must be a finite number > 1 (long / short exposure time), got {ratio!r}."
        )
    return value


def quantity_to_float(value, unit, *, unit_message, type_message):
    """
    ``value`` (a Quantity convertible to ``unit``, or a number) as a float.

    Parameters
    ----------
    value : object
        The argument.
    unit : `~astropy.units.Unit`
        The unit a Quantity is converted to.
    unit_message, type_message : str
        Messages of the `~astropy.units.UnitsError` (a Quantity in another
        unit; ``{unit}`` is its unit) and of the `TypeError` (not a number;
        ``{value!r}``).

    Returns
    -------
    number : float
    converted : object
        ``value`` in ``unit`` before it became a float (for messages).
    """
    if isinstance(value, u.Quantity):
        try:
            value = value.to_value(unit)
        except u.UnitConversionError:
            raise u.UnitsError(unit_message.format(unit=value.unit)) from None
    try:
        return float(value), value
    except (TypeError, ValueError):
        raise TypeError(type_message.format(value=value)) from None


def positive_quantity(value, unit, name):
    """Convert ``value`` (Quantity or number in ``unit``) to a positive float."""
    shown = value
    value, _ = quantity_to_float(
        value, unit, unit_message=f"{name} must be convertible to {unit}, got {{unit}}.",
        type_message=f"{name} must be a number or Quantity, got {{value!r}}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {shown}.")
    return value


def meta_lookup(meta, keywords):
    """First present keyword of ``keywords`` in ``meta`` (or None)."""
    if meta is None:
        return None, None
    for key in keywords:
        if key in meta:
            value = meta[key]
            if isinstance(value, tuple):  # (value, comment) in dict metadata
                value = value[0]
            return key, value
    return None, None


def get_exposure_time(ccd, exposure_time=None, *, required=True):
    """
    Exposure time in seconds from the argument or the header (``EXPTIME``).

    Returns None only when ``required`` is False and none is available.
    """
    if exposure_time is not None:
        return positive_quantity(exposure_time, u.s, "exposure_time")
    key, value = meta_lookup(ccd.meta, EXPTIME_KEYWORDS)
    if key is not None:
        return positive_quantity(value, u.s, f"header keyword {key}")
    if required:
        raise ValueError(
            "No exposure time: pass exposure_time=... (seconds or a Quantity) "
            "or set the EXPTIME header keyword."
        )
    return None


def get_gain(ccd, gain=None):
    """Gain in electron / adu from the argument or the header (``GAIN``)."""
    if gain is not None:
        # numbers and Quantities alike must be finite and > 0: a negative or
        # zero gain would give negative (or infinite) electrons downstream
        return positive_quantity(gain, u.electron / u.adu, "gain")
    key, value = meta_lookup(ccd.meta, GAIN_KEYWORDS)
    if key is not None:
        return positive_quantity(value, u.electron / u.adu, f"header keyword {key}")
    return None


def electron_scale(ccd, *, exposure_time=None, gain=None, need_time=False):
    """
    Factor that converts ``ccd``'s pixel values to electrons.

    Accepted units are those equivalent to ``electron``, ``electron / s``,
    ``adu``, ``adu / s`` (and ``count`` / ``photon`` treated like ``adu``
    when a gain is given).  Rates are multiplied by the exposure time.

    Returns
    -------
    scale : float
        ``data * scale`` is in electrons.
    exptime : float or None
        The exposure time (s) that was used or found (None if not needed and
        not available).

    Raises
    ------
    astropy.units.UnitsError
        No unit, or a unit that cannot be converted to electrons.
    ValueError
        Missing exposure time for a rate, or missing gain for adu.
    """
    unit = ccd.unit
    if unit is None:
        raise u.UnitsError("ccd has no unit; cannot convert to electrons.")
    unit = u.Unit(unit)
    exptime = get_exposure_time(ccd, exposure_time, required=need_time)

    per_adu = None
    if unit.is_equivalent(u.electron):
        count_unit, rate = u.electron, False
    elif unit.is_equivalent(u.electron / u.s):
        count_unit, rate = u.electron / u.s, True
    else:
        # adu-like units need a gain
        for base in (u.adu, u.count, u.photon):
            if unit.is_equivalent(base):
                count_unit, rate, per_adu = base, False, base
                break
            if unit.is_equivalent(base / u.s):
                count_unit, rate, per_adu = base / u.s, True, base
                break
        else:
            raise u.UnitsError(
                f"Cannot convert unit '{unit}' to electrons. Supported units are "
                "electron, electron/s, adu and adu/s (with a gain). Convert the "
                "image first (e.g. with a photometric zero point)."
            )
    scale = unit.to(count_unit)
    if per_adu is not None:
        g = get_gain(ccd, gain)
        if g is None:
            raise ValueError(
                f"The image is in {unit}: pass gain=... (electron / {per_adu}) "
                "or set the GAIN header keyword."
            )
        scale *= g
    if rate:
        if exptime is None:
            exptime = get_exposure_time(ccd, None, required=True)
        scale *= exptime
    return float(scale), exptime


def new_like(ccd, data, *, uncertainty="keep", mask="keep", meta=None, unit=None):
    """
    A new object of ``ccd``'s class holding ``data``.

    WCS, PSF and flags are carried over (deep copies); ``meta`` defaults to a
    deep copy of ``ccd.meta``.  ``uncertainty``/``mask`` default to copies of
    the input's; pass None to drop them or an array/uncertainty to replace.
    The input object is never modified.
    """
    if isinstance(uncertainty, str) and uncertainty == "keep":
        uncertainty = deepcopy(ccd.uncertainty)
    elif uncertainty is not None and not hasattr(uncertainty, "uncertainty_type"):
        uncertainty = StdDevUncertainty(np.asarray(uncertainty))
    if isinstance(mask, str) and mask == "keep":
        mask = None if ccd.mask is None else np.array(ccd.mask, dtype=bool, copy=True)
    if meta is None:
        meta = deepcopy(ccd.meta)
    if unit is None:
        unit = ccd.unit
    kwargs = dict(
        uncertainty=uncertainty,
        mask=mask,
        wcs=deepcopy(ccd.wcs),
        meta=meta,
        unit=unit,
    )
    if getattr(ccd, "psf", None) is not None:
        kwargs["psf"] = deepcopy(ccd.psf)
    result = type(ccd)(data, **kwargs)
    if isinstance(ccd, CCDData) and ccd.flags is not None:
        result.flags = deepcopy(ccd.flags)
    return result


def header_of(meta):
    """Return a writable copy of ``meta`` as a `~astropy.io.fits.Header`."""
    if isinstance(meta, fits.Header):
        return meta.copy()
    header = fits.Header()
    for key, value in (meta or {}).items():
        try:
            header[key] = value
        except (ValueError, KeyError, TypeError):
            continue
    return header


def output_dtype(ccd):
    """float32 for single-precision input data (either byte order), else float64."""
    dtype = np.asarray(ccd.data).dtype
    return np.float32 if dtype.kind == "f" and dtype.itemsize == 4 else np.float64


def positive_int(value, name):
    """
    ``value`` as an int, or `ValueError` unless it is a positive integer (not a bool).

    Parameters
    ----------
    value : object
        The argument.
    name : str
        Its name, for the message.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
