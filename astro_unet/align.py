# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Put a real short exposure and a real long exposure of one field on one grid.

Simulated pairs (`~astro_unet.simulate_short_exposure`) share their pixel grid
by construction; real pairs do not: two exposures are pointed, dithered and
rotated differently, and may come from detectors with different pixels.
`align_pair` resamples one of them onto the other's grid with `reproject`, and
measures how well the two then agree (star positions and fluxes), so that a
pair can be used for training or for judging a denoised image.
"""

import re
import warnings
from copy import deepcopy
from dataclasses import dataclass

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS
from astropy.wcs.utils import pixel_to_pixel
from scipy import ndimage

from . import _validation
from ._logging import log_step
from .photometry import detect_and_measure, match_pixels

__all__ = ["AlignedPair", "align_pair"]

GRIDS = ("short", "long")
METHODS = ("interp", "exact", "adaptive")

#: Interpolation orders of `reproject.reproject_interp` by name.
ORDERS = {"nearest-neighbor": 0, "bilinear": 1, "biquadratic": 2, "bicubic": 3}

#: A resampled pixel counts as fully covered when its footprint is at least
#: ``1 - FOOTPRINT_TOLERANCE`` (reproject_exact's overlaps are computed in
#: floating point) and as touched by a masked input pixel when the resampled
#: mask exceeds ``MASK_TOLERANCE``.
FOOTPRINT_TOLERANCE = 1e-4
MASK_TOLERANCE = 1e-6

#: Fewer matched stars than this: no offset or flux ratio (NaN, and a warning).
MIN_MATCHES = 3

#: Matched stars used for the flux ratio: signal-to-noise ratio (aperture
#: flux over its background-rms error) at least this in both images.
BRIGHT_SNR = 20.0

#: Units of counts (per pixel, per exposure): their fluxes are divided by the
#: exposure time before the flux ratio is formed.
_COUNT_UNITS = (u.electron, u.adu, u.count, u.photon)

#: Header keywords that describe a celestial WCS (replaced, never the
#: observation's dates).
_WCS_KEYWORD = re.compile(
    r"^(CRPIX|CRVAL|CDELT|CTYPE|CUNIT|CROTA|CRDER|CSYER)[0-9]$|^(CD|PC|PV|PS)[0-9]_[0-9]+$"
    r"|^(A|B|AP|BP)_(ORDER|DMAX|[0-9]+_[0-9]+)$|^(WCSAXES|LONPOLE|LATPOLE|RADESYS|EQUINOX"
    r"|WCSNAME|RESTFRQ|RESTWAV)$"
)


@dataclass(frozen=True, eq=False)
class AlignedPair:
    """
    A short and a long exposure on one pixel grid, and how well they agree.

    Returned by `align_pair`; see there for how each number is measured.

    Attributes
    ----------
    short, long : `~astropy.nddata.CCDData`
        The two exposures on the common grid (same shape, WCS and mask), each
        in its own unit.
    offset : tuple of float
        Median (dx, dy) in pixels of the common grid of the matched stars'
        positions in ``long`` minus those in ``short``: the misalignment that
        is left.  NaN when too few stars match.
    offset_median : float
        Median distance (pixels) between matched stars.  NaN as ``offset``.
    n_matched : int
        Number of stars matched between the two images.
    flux_ratio : float
        Median long / short aperture-flux ratio of the bright matched stars,
        both per unit time.  NaN when too few bright stars match or an
        exposure time is missing.
    grid : {'short', 'long'}
        Which exposure's grid the pair lives on.
    """

    short: CCDData
    long: CCDData
    offset: tuple
    offset_median: float
    n_matched: int
    flux_ratio: float
    grid: str = "short"

    def __repr__(self):
        dx, dy = self.offset
        return (f"<AlignedPair grid={self.grid!r} shape={self.short.shape} "
                f"offset=({dx:+.3f}, {dy:+.3f}) px offset_median={self.offset_median:.3f} px "
                f"n_matched={self.n_matched} flux_ratio={self.flux_ratio:.4f}>")

    def __str__(self):
        dx, dy = self.offset
        other = "long" if self.grid == "short" else "short"
        ny, nx = self.short.shape
        return "\n".join([
            f"Aligned pair on the {self.grid} exposure's grid ({nx} x {ny} px; "
            f"the {other} exposure was resampled)",
            f"  matched stars:        {self.n_matched}",
            f"  offset long - short:  dx = {dx:+.3f} px, dy = {dy:+.3f} px "
            f"(median distance {self.offset_median:.3f} px)",
            f"  flux ratio long/short (bright stars, per unit time): {self.flux_ratio:.4f}",
        ])


# --------------------------------------------------------------------------- checks
def _check_choice(value, choices, name):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value


def _order_name(order):
    """The name of an interpolation ``order`` (a name or 0-3)."""
    if isinstance(order, (int, np.integer)) and not isinstance(order, bool):
        for name, number in ORDERS.items():
            if number == order:
                return name
    elif isinstance(order, str) and order in ORDERS:
        return order
    raise ValueError(
        f"order must be one of {tuple(ORDERS)} (or 0-3), got {order!r}."
    )


def _celestial_wcs(ccd, name):
    """The celestial `~astropy.wcs.WCS` of ``ccd``, or `ValueError` naming ``name``."""
    wcs = getattr(ccd, "wcs", None)
    if not isinstance(wcs, WCS) or not wcs.has_celestial:
        got = "no WCS" if wcs is None else f"a WCS without celestial axes ({type(wcs).__name__})"
        raise ValueError(
            f"{name} has {got}: align_pair needs a celestial WCS on both images. Read "
            f"the image with its header (CCDData.read) or set {name}.wcs = WCS(header)."
        )
    if wcs.naxis != 2:
        raise ValueError(
            f"{name}.wcs has {wcs.naxis} axes: give the 2-D celestial WCS of the image "
            f"({name}.wcs.celestial)."
        )
    return wcs


def _is_counts(unit):
    return any(unit.is_equivalent(base) for base in _COUNT_UNITS)


def _per_time(unit):
    """``unit`` per second for counts, else ``unit`` (rates, calibrated fluxes)."""
    return unit / u.s if _is_counts(unit) else unit


def _check_units(short_unit, long_unit):
    """`~astropy.units.UnitsError` unless the two units measure the same thing."""
    if not _per_time(short_unit).is_equivalent(_per_time(long_unit)):
        raise u.UnitsError(
            f"short is in '{short_unit}' and long in '{long_unit}': their fluxes cannot be "
            "compared. Give both in electron (or electron/s), or convert adu with the "
            "gain first (e.g. ccdproc.gain_correct)."
        )


def _per_solid_angle(unit):
    """Whether ``unit`` is a surface brightness (per steradian, per arcsec**2, ...)."""
    decomposed = u.Unit(unit).decompose()
    return dict(zip(decomposed.bases, decomposed.powers)).get(u.rad, 0) <= -2


def _rate_scale(ccd):
    """
    A Quantity that turns ``ccd``'s pixel values into a flux per unit time, or
    None for counts without an exposure time.  Raises for an invalid ``EXPTIME``.
    """
    unit = u.Unit(ccd.unit)
    if not _is_counts(unit):
        return 1.0 * unit
    exptime = _validation.get_exposure_time(ccd, required=False)
    return None if exptime is None else 1.0 * unit / (exptime * u.s)


def _variance(ccd, shape):
    """The uncertainty of ``ccd`` as a variance array in its unit squared, or None."""
    unc = ccd.uncertainty
    if unc is None:
        return None
    try:
        var = unc.represent_as(VarianceUncertainty)
    except (TypeError, ValueError, NotImplementedError, AttributeError):
        warnings.warn(
            f"{type(unc).__name__} cannot be expressed as a variance: the resampled "
            "image has no uncertainty.", AstropyUserWarning, stacklevel=4)
        return None
    values = np.array(var.array, dtype=float)
    if var.unit is not None:
        values = values * u.Unit(var.unit).to(u.Unit(ccd.unit) ** 2)
    return np.broadcast_to(values, shape).copy()


# --------------------------------------------------------------------------- resampling
def _pixel_area_ratio(wcs_out, wcs_in, shape_out, shape_in):
    """
    Area of each output pixel in input pixels, and whether the grids overlap.

    The four corners of every output pixel are mapped onto the input grid and
    the area of the quadrilateral they span is computed (half the cross product
    of its diagonals): the local pixel-area ratio, distortions included; for
    linear WCSs it equals the ratio of `~astropy.wcs.utils.proj_plane_pixel_area`.
    """
    ny, nx = shape_out
    xc, yc = np.meshgrid(np.arange(nx + 1) - 0.5, np.arange(ny + 1) - 0.5)
    with np.errstate(invalid="ignore"):
        xi, yi = (np.asarray(a, dtype=float) for a in pixel_to_pixel(wcs_out, wcs_in, xc, yc))
    inside = ((xi >= -0.5) & (xi <= shape_in[1] - 0.5)
              & (yi >= -0.5) & (yi <= shape_in[0] - 0.5))
    d1x, d1y = xi[1:, 1:] - xi[:-1, :-1], yi[1:, 1:] - yi[:-1, :-1]
    d2x, d2y = xi[:-1, 1:] - xi[1:, :-1], yi[:-1, 1:] - yi[1:, :-1]
    area = 0.5 * np.abs(d1x * d2y - d1y * d2x)
    return area, bool(inside.any())


def _fill(values, bad):
    """``values`` with each ``bad`` pixel replaced by its nearest good pixel's value."""
    if not bad.any():
        return values
    index = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return values[tuple(index)]


def _resample(ccd, name, wcs_in, wcs_out, shape_out, *, method, order):
    """
    Resample ``ccd`` onto (``wcs_out``, ``shape_out``).

    Returns the values and the variance (or None) per output pixel in the
    input's unit, the mask and the median pixel-area factor applied (None for
    a surface brightness, which is not scaled).
    """
    from reproject import reproject_adaptive, reproject_exact, reproject_interp

    data = _validation.validate_ccd(ccd, name=name)
    shape_in = data.shape
    bad = _validation.bad_pixel_mask(ccd)
    variance = _variance(ccd, shape_in)
    if variance is not None:
        bad |= ~np.isfinite(variance)
    if bad.all():
        raise ValueError(f"{name} has no pixel with a finite value and uncertainty.")

    area, overlap = _pixel_area_ratio(wcs_out, wcs_in, shape_out, shape_in)
    if not overlap:
        raise ValueError(
            "short and long do not overlap: no pixel of one lies on the other according "
            "to their WCSs. Check that both images show the same field (CRVAL, CRPIX)."
        )
    applied = not _per_solid_angle(ccd.unit)
    if not applied:
        area = np.where(np.isfinite(area), 1.0, np.nan)  # a surface brightness stays

    # masked and non-finite pixels get their nearest neighbour's value, so that
    # neither NaN nor a masked outlier spreads through the interpolating spline
    planes = [_fill(data, bad)]
    if variance is not None:
        planes.append(_fill(variance, bad))
    stack = np.stack(planes)
    if method == "interp":
        out, footprint = reproject_interp((stack, wcs_in), wcs_out, shape_out=shape_out,
                                          order=order)
        # the pixels whose interpolation stencil holds a masked pixel: bilinear
        # weights of the mask, grown by one pixel for the 4 x 4 (3 x 3) stencils
        # of the cubic (quadratic) splines
        grown = ndimage.binary_dilation(bad, np.ones((3, 3), bool)) if ORDERS[order] > 1 else bad
        touched, _ = reproject_interp((grown.astype(float), wcs_in), wcs_out,
                                      shape_out=shape_out, order=0 if ORDERS[order] == 0 else 1)
    else:
        stack = np.concatenate([stack, bad[np.newaxis].astype(float)])
        if method == "exact":
            out, footprint = reproject_exact((stack, wcs_in), wcs_out, shape_out=shape_out)
        else:
            out, footprint = reproject_adaptive((stack, wcs_in), wcs_out, shape_out=shape_out,
                                                conserve_flux=False)
        out, touched = out[:-1], out[-1]
    footprint = np.asarray(footprint, dtype=float)
    if footprint.ndim == 3:
        footprint = footprint[0]
    footprint = np.nan_to_num(footprint, nan=0.0)
    covered = footprint >= 1.0 - FOOTPRINT_TOLERANCE
    if not covered.any():
        raise ValueError(
            "short and long do not overlap: not one pixel of the common grid is fully "
            "covered by both images."
        )

    values = np.where(footprint > 0, out[0], np.nan) * area
    mask = ~covered | ~np.isfinite(values)
    mask |= np.nan_to_num(np.asarray(touched, dtype=float), nan=1.0) > MASK_TOLERANCE
    new_variance = None
    if variance is not None:
        # interpolation samples: the variance scales as the value squared; exact
        # and adaptive resampling average max(area, 1) input pixels (independent
        # pixels assumed; the correlation that resampling makes is ignored)
        scale = area ** 2 if method == "interp" else area ** 2 / np.fmax(area, 1.0)
        new_variance = np.clip(np.where(footprint > 0, out[1], np.nan), 0.0, None) * scale
        mask |= ~np.isfinite(new_variance)
    finite_area = area[covered & np.isfinite(area)]
    median_area = float(np.median(finite_area)) if applied and finite_area.size else None
    return values, new_variance, mask, median_area


# --------------------------------------------------------------------------- metadata
def _meta_on_grid(meta, wcs, shape):
    """A copy of ``meta`` whose WCS keywords (if it had any) are those of ``wcs``."""
    meta = deepcopy(meta)
    keys = [key for key in list(meta.keys()) if _WCS_KEYWORD.match(str(key).upper())]
    for key in keys:
        del meta[key]
    if keys:
        for card in wcs.to_header(relax=True).cards:
            if _WCS_KEYWORD.match(card.keyword):
                if isinstance(meta, fits.Header):
                    meta[card.keyword] = (card.value, card.comment)
                else:
                    meta[card.keyword] = card.value
    for axis, size in (("NAXIS1", shape[1]), ("NAXIS2", shape[0])):
        if axis in meta:
            meta[axis] = size
    return meta


def _record(meta, call, keywords, quality):
    """Write the ``AL*`` keywords (finite numbers only) and the HISTORY line."""
    dx, dy = quality["offset"]
    numbers = {
        "ALNMATCH": (quality["n_matched"], "stars matched between short and long"),
        "ALDX": (dx, "[px] median x offset long - short"),
        "ALDY": (dy, "[px] median y offset long - short"),
        "ALOFFSET": (quality["offset_median"], "[px] median distance of matched stars"),
        "ALFLUXR": (quality["flux_ratio"], "median flux ratio long/short per time"),
    }
    for key, (value, comment) in numbers.items():
        if np.isfinite(value):
            keywords[key] = (float(value) if key != "ALNMATCH" else int(value), comment)
    log_step(meta, call, keywords)
    return meta


# --------------------------------------------------------------------------- quality
def _quality(short, long, mask, rate_short, rate_long, *, detection_threshold, min_area,
             match_radius, aperture_radius):
    """Star offsets and the flux ratio of the aligned pair (see `align_pair`)."""
    settings = dict(detection_threshold=detection_threshold, min_area=min_area,
                    aperture_radius=aperture_radius)
    cats = [detect_and_measure(np.asarray(ccd.data, dtype=float), bad=mask, **settings)
            for ccd in (short, long)]
    cat_s, cat_l = cats
    i_s, i_l, distance = match_pixels(cat_s["x"], cat_s["y"], cat_l["x"], cat_l["y"],
                                      match_radius)
    result = dict(offset=(np.nan, np.nan), offset_median=np.nan, n_matched=len(i_s),
                  flux_ratio=np.nan)
    if len(i_s) < MIN_MATCHES:
        warnings.warn(
            f"Only {len(i_s)} stars matched within match_radius={match_radius:g} px "
            f"({len(cat_s['x'])} detected in short, {len(cat_l['x'])} in long): the "
            "alignment is not measured (offset and flux_ratio are NaN). Check the WCSs, or "
            "lower detection_threshold / raise match_radius.", AstropyUserWarning,
            stacklevel=3)
        return result
    dx = float(np.median(cat_l["x"][i_l] - cat_s["x"][i_s]))
    dy = float(np.median(cat_l["y"][i_l] - cat_s["y"][i_s]))
    result.update(offset=(dx, dy), offset_median=float(np.median(distance)))

    f_s, f_l = cat_s["flux"][i_s], cat_l["flux"][i_l]
    bright = ((cat_s["snr"][i_s] >= BRIGHT_SNR) & (cat_l["snr"][i_l] >= BRIGHT_SNR)
              & (f_s > 0) & (f_l > 0))
    missing = [name for name, rate in (("short", rate_short), ("long", rate_long))
               if rate is None]
    if missing:
        warnings.warn(
            f"flux_ratio is NaN: {' and '.join(missing)} in counts without EXPTIME; set "
            "the EXPTIME keyword to compare fluxes per unit time.", AstropyUserWarning,
            stacklevel=3)
    elif bright.sum() < MIN_MATCHES:
        warnings.warn(
            f"flux_ratio is NaN: only {int(bright.sum())} matched stars have a signal-to-"
            f"noise ratio of at least {BRIGHT_SNR:g} in both images.", AstropyUserWarning,
            stacklevel=3)
    else:
        scale = (rate_long / rate_short).to_value(u.dimensionless_unscaled)
        result["flux_ratio"] = float(np.median(f_l[bright] / f_s[bright]) * scale)
    return result


# --------------------------------------------------------------------------- public function
def align_pair(short, long, *, grid="short", method="interp", order="bicubic",
               detection_threshold=7.0, min_area=10, match_radius=3.0, aperture_radius=5.0):
    r"""
    Put a short and a long exposure of the same field on one pixel grid.

    One of the two images is resampled with `reproject` onto the other's
    pixel grid (its WCS and shape); the other keeps its pixels.  Then stars
    are detected in both, matched, and the misalignment that is left and the
    flux ratio of the matched stars are reported, so that a bad WCS shows up
    before the pair is used.

    **Which grid.**  ``grid="short"`` (default) resamples the long exposure
    onto the short one's detector grid: the short frame keeps its pixels and
    its white (uncorrelated) noise, which is what training and
    `~astro_unet.denoise_ccd` expect, while the deeper long exposure, whose
    noise matters less, takes the interpolation.  ``grid="long"`` resamples
    the short exposure onto the long one's grid, e.g. to compare an image
    that was already denoised on its own grid with the long exposure as it
    is.  Denoise before resampling: interpolation correlates the noise of the
    image it resamples (adjacent pixels share input pixels), and a network
    trained on white noise does not expect that.

    **Values.**  Pixel values keep their unit.  For values per pixel (counts
    or rates) the resampled image is multiplied by the area of each new pixel
    in old pixels (mapped through both WCSs, distortions included; for linear
    WCSs the ratio of `~astropy.wcs.utils.proj_plane_pixel_area`), so that
    the total flux is kept when the pixel scales differ; surface brightnesses
    (units per solid angle) are left as they are.  Masked and non-finite
    input pixels are replaced by their nearest good neighbour before the
    resampling (so that neither spreads through the interpolation) and are
    masked in the result.

    **Masks.**  A resampled pixel is masked when it is not fully covered by
    the input (footprint below 1, within ``FOOTPRINT_TOLERANCE``), when a
    masked or non-finite input pixel contributes to it (the input mask
    resampled as floats is above 0; for ``method="interp"`` the pixels of
    the interpolation stencil: 2 x 2 for bilinear, 4 x 4 for bicubic) or when
    it is NaN.  The image that is not resampled keeps its data, and its mask
    is OR-ed with the resampled one's: both outputs have the same mask.

    **Uncertainty.**  The uncertainty (converted to a variance) is resampled
    like the data, multiplied by the pixel-area factor squared (interpolation
    samples the image) or by the factor times min(factor, 1) (``exact`` and
    ``adaptive`` average the input pixels that fall in a larger output pixel),
    and returned as `~astropy.nddata.StdDevUncertainty`.  This is an
    approximation: it takes the input pixels as independent and ignores the
    correlation between neighbouring output pixels that resampling creates;
    the per-pixel noise of an interpolated image is lower than its declared
    uncertainty, while sums over apertures much larger than a pixel are about
    right.

    **Quality report.**  Stars are detected in both aligned images and
    measured with the package's photometry engine (that of
    `~astro_unet.photometric_comparison`: background subtraction, segments
    of at least ``min_area`` pixels above ``detection_threshold`` times the
    background rms, isophotal barycentres, circular apertures of
    ``aperture_radius`` px), and matched one to one within ``match_radius``
    pixels.  ``offset`` is the median (dx, dy) of the long minus the short
    positions and ``offset_median`` the median distance: both near 0 (well
    below 0.1 px for bright stars) when the WCSs are right.  ``flux_ratio``
    is the median of long / short aperture flux of the matched stars with a
    signal-to-noise ratio of at least ``BRIGHT_SNR`` (20) in both images, per
    unit time: fluxes in counts (electron, adu, ...) are divided by the
    image's ``EXPTIME``; rates and calibrated fluxes are converted to the
    short image's unit.  It is near 1 for two exposures of the same
    (non-variable) field with consistent calibration.  With fewer than
    ``MIN_MATCHES`` (3) matched (or bright) stars the numbers are NaN and an
    `~astropy.utils.exceptions.AstropyUserWarning` says why.

    Each output's ``meta`` is a copy of its input's, its WCS keywords (if
    any) replaced by those of the common grid; the ``AL*`` keywords and, for
    a `~astropy.io.fits.Header`, a ``HISTORY`` line record what was done and
    the quality numbers.  The inputs are not modified.

    Parameters
    ----------
    short, long : `~astropy.nddata.CCDData` or `~astropy.nddata.NDData`
        The short and the long exposure: 2-D, with a unit and a celestial
        FITS WCS (`~astropy.wcs.WCS`), in units that measure the same
        quantity (e.g. electron and electron/s; not electron and adu).
    grid : {'short', 'long'}, optional
        The grid of the pair: the exposure that is *not* resampled.
    method : {'interp', 'exact', 'adaptive'}, optional
        `~reproject.reproject_interp` (default),
        `~reproject.reproject_exact` (exact overlap areas; slower) or
        `~reproject.reproject_adaptive` (anti-aliased, for large changes of
        pixel scale; ``conserve_flux=False``, the area factor is applied
        here).  Onto coarser pixels prefer 'exact' or 'adaptive' (they
        average, interpolation samples); onto finer pixels prefer 'interp'
        (the other two widen the stars a little).
    order : {'bicubic', 'biquadratic', 'bilinear', 'nearest-neighbor'} or int, optional
        Interpolation order of ``method="interp"`` (ignored by the others).
    detection_threshold : float, optional
        Detection threshold of the quality report, in units of the
        background rms (7, as `~astro_unet.photometric_comparison`).
    min_area : int, optional
        Minimum number of connected pixels of a detection (10).
    match_radius : float or `~astropy.units.Quantity`, optional
        Matching radius in pixels of the common grid (3).
    aperture_radius : float or `~astropy.units.Quantity`, optional
        Aperture radius in pixels for the flux ratio (5).

    Returns
    -------
    pair : `AlignedPair`
        ``short`` and ``long`` as `~astropy.nddata.CCDData` on the common
        grid, ``offset`` (dx, dy), ``offset_median``, ``n_matched``,
        ``flux_ratio`` and ``grid``.

    Raises
    ------
    ValueError
        An image without a celestial WCS (the message names ``short`` or
        ``long``), images that do not overlap, an unknown ``grid``,
        ``method`` or ``order``, data that are not 2-D or have no usable
        pixel.
    TypeError
        An input that is not `~astropy.nddata.NDData`.
    astropy.units.UnitsError
        An image without a unit, or units that do not measure the same
        quantity.

    Examples
    --------
    Two exposures of five stars whose grids differ by (0.3, -0.7) pixels:

    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from astropy.wcs import WCS
    >>> from astro_unet import align_pair
    >>> def exposure(shift, noise, seed):
    ...     wcs = WCS(naxis=2)
    ...     wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    ...     wcs.wcs.crval = [150.0, 2.0]
    ...     wcs.wcs.crpix = [32.0 + shift[0], 32.0 + shift[1]]
    ...     wcs.wcs.cdelt = [-1e-5, 1e-5]
    ...     y, x = np.mgrid[:64, :64] - np.reshape(shift[::-1], (2, 1, 1))
    ...     image = np.random.default_rng(seed).normal(10.0, noise, (64, 64))
    ...     for xs, ys in [(12, 15), (40, 12), (25, 33), (50, 45), (15, 50)]:
    ...         image += 50.0 * np.exp(-((x - xs) ** 2 + (y - ys) ** 2) / 4.5)
    ...     return CCDData(image, unit="electron/s", wcs=wcs)
    >>> short = exposure((0.0, 0.0), noise=1.0, seed=1)
    >>> long = exposure((0.3, -0.7), noise=0.3, seed=2)
    >>> pair = align_pair(short, long)
    >>> pair.n_matched, pair.offset_median < 0.05, round(pair.flux_ratio, 2)
    (5, True, 1.0)
    >>> pair.long.wcs.wcs.crpix
    array([32., 32.])
    >>> pair.long.meta["ALGRID"], pair.long.meta["ALRESAMP"], pair.short.meta["ALRESAMP"]
    ('short', True, False)
    """
    grid = _check_choice(grid, GRIDS, "grid")
    method = _check_choice(method, METHODS, "method")
    order = _order_name(order)
    _validation.validate_ccd(short, name="short")
    _validation.validate_ccd(long, name="long")
    wcs_short = _celestial_wcs(short, "short")
    wcs_long = _celestial_wcs(long, "long")
    _check_units(u.Unit(short.unit), u.Unit(long.unit))
    detection_threshold = _validation.positive_quantity(
        detection_threshold, u.dimensionless_unscaled, "detection_threshold")
    min_area = _validation.positive_int(min_area, "min_area")
    match_radius = _validation.positive_quantity(match_radius, u.pix, "match_radius")
    aperture_radius = _validation.positive_quantity(aperture_radius, u.pix, "aperture_radius")
    rates = {"short": _rate_scale(short), "long": _rate_scale(long)}

    images = {"short": (short, wcs_short), "long": (long, wcs_long)}
    other = "long" if grid == "short" else "short"
    kept, wcs_grid = images[grid]
    moved, wcs_moved = images[other]
    shape = np.shape(kept.data)

    values, variance, moved_mask, area = _resample(moved, other, wcs_moved, wcs_grid, shape,
                                                   method=method, order=order)
    mask = moved_mask | _validation.bad_pixel_mask(kept)

    out = {}
    out[grid] = CCDData(
        np.array(kept.data, copy=True), unit=kept.unit, mask=mask.copy(),
        uncertainty=deepcopy(kept.uncertainty), wcs=deepcopy(wcs_grid),
        meta=deepcopy(kept.meta))
    out[other] = CCDData(
        values.astype(_validation.output_dtype(moved), copy=False), unit=moved.unit,
        mask=mask.copy(),
        uncertainty=None if variance is None else StdDevUncertainty(np.sqrt(variance)),
        wcs=deepcopy(wcs_grid), meta=_meta_on_grid(moved.meta, wcs_grid, shape))

    quality = _quality(out["short"], out["long"], mask, rates["short"], rates["long"],
                       detection_threshold=detection_threshold, min_area=min_area,
                       match_radius=match_radius, aperture_radius=aperture_radius)

    options = f"grid={grid!r}, method={method!r}" + (
        f", order={order!r}" if method == "interp" else "")
    common = {"ALGRID": (grid, "grid of the aligned pair (short or long)")}
    resampled = dict(common, ALRESAMP=(True, "resampled onto that grid by reproject"),
                     ALMETHOD=(f"reproject_{method}", "resampling function"))
    if method == "interp":
        resampled["ALORDER"] = (order, "interpolation order")
    if area is not None:
        resampled["ALAREA"] = (float(f"{area:.6g}"), "median new/old pixel area (applied)")
    _record(out[other].meta,
            f"align_pair({options}): {other} exposure resampled onto the {grid} "
            "exposure's grid",
            resampled, quality)
    _record(out[grid].meta,
            f"align_pair({options}): kept on its grid; mask OR-ed with the {other} "
            "exposure's coverage",
            dict(common, ALRESAMP=(False, "kept its own pixels")), quality)
    return AlignedPair(short=out["short"], long=out["long"], offset=quality["offset"],
                       offset_median=quality["offset_median"],
                       n_matched=int(quality["n_matched"]),
                       flux_ratio=quality["flux_ratio"], grid=grid)
