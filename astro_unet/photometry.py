# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Photometric comparison of a processed image with a reference image.

This is the paper's evaluation (Vojtekova et al. 2021, Sect. 4, SExtractor
configuration ``final.sex``) done with photutils 3.0 instead of SExtractor:

=====================  ==========================  ==================================
SExtractor (paper)     value                       here
=====================  ==========================  ==================================
BACK_SIZE/FILTERSIZE   64 / 3                      `~photutils.background.Background2D`
                                                   (SExtractor mode estimator)
DETECT_THRESH          7 (x background rms)        ``detection_threshold``
DETECT_MINAREA         10 px, 8-connected          ``min_area``
FILTER                 N                           no convolution before detection
DEBLEND_NTHRESH/CONT   32 / 0.005                  `~photutils.segmentation.deblend_sources`
X/Y_IMAGE              isophotal barycentre        `~photutils.segmentation.SourceCatalog`
                                                   ``x_centroid``/``y_centroid``
PHOT_APERTURES         10 px diameter              `~photutils.aperture.CircularAperture`
                                                   of radius 5 px, exact overlap
cross-match (TOPCAT)   nearest neighbour           `scipy.spatial.KDTree` or
                                                   `astropy.coordinates.search_around_sky`
=====================  ==========================  ==================================

SExtractor's CLEAN step has no photutils counterpart; ``benchmarks/sep_crosscheck.py``
measures how far this implementation is from SEP (the SExtractor library).
"""

import warnings

import numpy as np
import astropy.units as u
from astropy.nddata import NDData, StdDevUncertainty
from astropy.table import QTable
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS
from scipy.spatial import KDTree

from . import _validation
from . import metrics as _metrics

__all__ = ["photometric_comparison"]

_THRESHOLD_MODES = ("self", "reference")
_MATCH_MODES = ("auto", "pixel", "sky")


# --------------------------------------------------------------------------- image preparation
def _per_image(value, key):
    """``value`` or, for a dict, its entry for ``key`` ('reference', 'test', 'input')."""
    if isinstance(value, dict):
        unknown = set(value) - {"reference", "test", "input"}
        if unknown:
            raise ValueError(
                f"Unknown keys {sorted(unknown)}: use 'reference', 'test' and 'input'."
            )
        return value.get(key)
    return value


def _as_nddata(image, name):
    """NDData view of ``image``; plain arrays become dimensionless NDData."""
    if isinstance(image, NDData):
        return image
    if isinstance(image, u.Quantity):
        return NDData(np.asarray(image.value), unit=image.unit)
    if isinstance(image, np.ndarray):
        return NDData(image, unit=u.dimensionless_unscaled)
    raise TypeError(
        f"{name} must be an astropy.nddata.CCDData/NDData instance or a numpy array, "
        f"got {type(image).__name__}."
    )


ERROR_MODELS = ("background", "declared")


def _prepare(image, name, unit, *, exposure_time=None, gain=None, errors="declared"):
    """
    Everything the measurement needs from one image, in ``unit``.

    Returns a dict with ``data`` (float64 copy, bad pixels set to 0), ``bad``
    (bool), ``uncertainty`` (per-pixel standard deviation in ``unit`` or None),
    ``poisson_scale`` (electrons per ``unit``, or None), ``wcs`` (celestial
    `~astropy.wcs.WCS` or None) and ``error_model`` (a description).
    """
    ccd = _as_nddata(image, name)
    data = _validation.validate_ccd(ccd, name=name)
    own_unit = u.Unit(ccd.unit)
    if unit is None:
        unit = own_unit
    try:
        factor = own_unit.to(unit)
    except u.UnitConversionError:
        raise u.UnitsError(
            f"{name} unit '{own_unit}' cannot be converted to the reference unit '{unit}'."
        ) from None
    bad = _validation.bad_pixel_mask(ccd)
    data *= factor
    data[bad] = 0.0

    uncertainty = None
    ignored = ""
    unc = ccd.uncertainty if errors == "declared" else None
    if unc is not None and not isinstance(unc, StdDevUncertainty):
        try:
            unc = unc.represent_as(StdDevUncertainty)
        except (TypeError, ValueError, NotImplementedError, AttributeError):
            ignored = f"; {type(ccd.uncertainty).__name__} ignored"
            unc = None
    if unc is not None:
        unc_unit = own_unit if unc.unit is None else u.Unit(unc.unit)
        uncertainty = np.array(unc.array, dtype=float, copy=True) * unc_unit.to(unit)
        if uncertainty.shape != data.shape:
            raise ValueError(f"{name}.uncertainty shape differs from its data shape.")
        bad = bad | ~np.isfinite(uncertainty)
        uncertainty[bad] = 0.0
        data[bad] = 0.0

    # explicit values must be valid; missing ones only switch the Poisson term off
    if exposure_time is not None:
        _validation.get_exposure_time(ccd, exposure_time)
    if gain is not None:
        _validation.get_gain(ccd, gain)
    poisson_scale = None
    if uncertainty is None and errors == "declared":
        try:
            scale, _ = _validation.electron_scale(
                ccd, exposure_time=exposure_time, gain=gain
            )
            poisson_scale = scale / factor
        except (u.UnitsError, ValueError):
            poisson_scale = None
    if errors == "background":
        model = "measured background rms only (SExtractor GAIN = 0)"
    elif uncertainty is not None:
        model = "uncertainty (taken as the total per-pixel error)"
    elif poisson_scale is not None:
        model = f"background rms + source Poisson ({poisson_scale:.6g} electron per {unit})"
    else:
        model = "background rms only (no exposure time / gain for a Poisson term)"
    model += ignored

    wcs = ccd.wcs if isinstance(ccd.wcs, WCS) and ccd.wcs.has_celestial else None
    return dict(
        data=data, bad=bad, uncertainty=uncertainty, poisson_scale=poisson_scale,
        wcs=None if wcs is None else wcs.celestial, error_model=model, unit=unit,
    )


# --------------------------------------------------------------------------- measurement
def _background(data, bad, *, box=64, filter_size=3):
    """Background and background-rms maps (SExtractor-like estimators)."""
    from photutils.background import (
        Background2D, SExtractorBackground, StdBackgroundRMS,
    )
    from astropy.stats import SigmaClip

    clip = SigmaClip(sigma=3.0, maxiters=10)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            bkg = Background2D(
                data, (int(box), int(box)), mask=bad, filter_size=(filter_size, filter_size),
                sigma_clip=clip, bkg_estimator=SExtractorBackground(sigma_clip=None),
                bkg_rms_estimator=StdBackgroundRMS(sigma_clip=None),
            )
            return np.asarray(bkg.background, float), np.asarray(bkg.background_rms, float)
    except ValueError:
        # e.g. every box has too many masked pixels: one global estimate
        values = clip(data[~bad], masked=False)
        level = float(SExtractorBackground(sigma_clip=None).calc_background(values))
        rms = float(StdBackgroundRMS(sigma_clip=None).calc_background_rms(values))
        return np.full(data.shape, level), np.full(data.shape, rms)


def _aperture_sums(data_sub, x, y, *, radius, error, bad):
    """Exact circular-aperture sums and their errors at (x, y)."""
    from photutils.aperture import CircularAperture, aperture_photometry

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    aper = CircularAperture(np.column_stack([x, y]), r=float(radius))
    phot = aperture_photometry(data_sub, aper, error=error, mask=bad, method="exact")
    flux = np.asarray(phot["aperture_sum"], dtype=float)
    err = np.asarray(phot["aperture_sum_err"], dtype=float)
    return flux, err


def _error_map(data_sub, rms, *, uncertainty=None, poisson_scale=None):
    """Per-pixel 1-sigma error: the uncertainty, or rms (+) source Poisson noise."""
    if uncertainty is not None:
        return uncertainty
    var = rms * rms
    if poisson_scale is not None:
        var = var + np.clip(data_sub, 0, None) / poisson_scale
    return np.sqrt(var)


def _detect_and_measure(data, *, bad=None, uncertainty=None, poisson_scale=None,
                        detection_threshold=7.0, min_area=10, aperture_radius=5.0,
                        background_box=64, background_filter=3, nlevels=32,
                        contrast=0.005, threshold_image=None):
    """
    Background, detection, deblending, centroids and aperture photometry.

    The private engine of `photometric_comparison` (also used by
    ``benchmarks/sep_crosscheck.py``).  ``data`` is a plain float array;
    ``threshold_image`` (absolute, above the background) overrides
    ``detection_threshold * background_rms``.

    Returns a dict with arrays ``label``, ``x``, ``y`` (0-based pixel
    centroids), ``area`` (segment pixels), ``flux``, ``flux_err``, ``snr``,
    the maps ``background``, ``background_rms``, ``threshold``, ``error``
    and ``data_sub`` (background-subtracted data), and ``segmentation``
    (the deblended `~photutils.segmentation.SegmentationImage`, None when
    nothing is detected).
    """
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources
    from photutils.utils.exceptions import NoDetectionsWarning

    data = np.asarray(data, dtype=float)
    if bad is None:
        bad = ~np.isfinite(data)
    bad = np.asarray(bad, dtype=bool) | ~np.isfinite(data)
    work = np.where(bad, 0.0, data)
    background, rms = _background(work, bad, box=background_box,
                                  filter_size=background_filter)
    data_sub = work - background
    data_sub[bad] = 0.0
    threshold = detection_threshold * rms if threshold_image is None else threshold_image
    threshold = np.broadcast_to(np.asarray(threshold, dtype=float), data.shape)
    error = _error_map(data_sub, rms, uncertainty=uncertainty, poisson_scale=poisson_scale)
    error = np.where(bad, 0.0, error)

    result = dict(background=background, background_rms=rms, threshold=threshold,
                  error=error, data_sub=data_sub, segmentation=None)
    empty = dict(label=np.zeros(0, int), x=np.zeros(0), y=np.zeros(0),
                 area=np.zeros(0, int), flux=np.zeros(0), flux_err=np.zeros(0),
                 snr=np.zeros(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segm = detect_sources(data_sub, threshold, n_pixels=int(min_area),
                              connectivity=8, mask=bad)
    if segm is None or segm.n_labels == 0:
        result.update(empty)
        return result
    if nlevels and nlevels > 1 and contrast < 1:
        with warnings.catch_warnings():
            # "deblending mode changed to linear" notes are informational
            warnings.simplefilter("ignore", AstropyUserWarning)
            segm = deblend_sources(data_sub, segm, n_pixels=int(min_area),
                                   n_levels=int(nlevels), contrast=float(contrast),
                                   mode="exponential", connectivity=8,
                                   progress_bar=False)
    result["segmentation"] = segm
    cat = SourceCatalog(data_sub, segm, mask=bad)
    x = np.atleast_1d(np.asarray(cat.x_centroid, dtype=float))
    y = np.atleast_1d(np.asarray(cat.y_centroid, dtype=float))
    label = np.atleast_1d(np.asarray(cat.label, dtype=int))
    area = np.atleast_1d(np.asarray(getattr(cat.area, "value", cat.area))).astype(int)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, label, area = x[ok], y[ok], label[ok], area[ok]
    flux, flux_err = _aperture_sums(data_sub, x, y, radius=aperture_radius,
                                    error=error, bad=bad)
    snr = np.full(flux.shape, np.nan)
    np.divide(flux, flux_err, out=snr, where=flux_err > 0)
    result.update(label=label, x=x, y=y, area=area, flux=flux, flux_err=flux_err, snr=snr)
    return result


# --------------------------------------------------------------------------- matching
def _greedy(i, j, d):
    """One-to-one pairs from candidate pairs (i, j, distance), closest first."""
    order = np.lexsort((j, i, d))
    used_i, used_j = set(), set()
    pairs = []
    for k in order:
        if i[k] in used_i or j[k] in used_j:
            continue
        used_i.add(i[k])
        used_j.add(j[k])
        pairs.append((i[k], j[k], d[k]))
    if not pairs:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    a, b, c = zip(*pairs)
    return np.array(a, int), np.array(b, int), np.array(c, float)


def _match_pixels(x1, y1, x2, y2, radius):
    """Pixel-space one-to-one nearest matching within ``radius``."""
    if len(x1) == 0 or len(x2) == 0:
        return _greedy(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    p1 = np.column_stack([x1, y1])
    p2 = np.column_stack([x2, y2])
    neighbours = KDTree(p1).query_ball_tree(KDTree(p2), r=radius)
    i = np.array([a for a, nb in enumerate(neighbours) for _ in nb], dtype=int)
    j = np.array([b for nb in neighbours for b in nb], dtype=int)
    d = np.hypot(*(p1[i] - p2[j]).T) if i.size else np.zeros(0)
    return _greedy(i, j, d)


def _pixel_scale_arcsec(wcs):
    from astropy.wcs.utils import proj_plane_pixel_scales

    # celestial axes of a FITS WCS are normalised to degrees by wcslib
    scales = proj_plane_pixel_scales(wcs) * u.deg
    return float(np.mean(scales.to_value(u.arcsec)))


def _match_sky(x1, y1, wcs1, x2, y2, wcs2, radius_pix):
    """Sky one-to-one matching; separations returned in reference pixels."""
    from astropy.coordinates import search_around_sky

    if len(x1) == 0 or len(x2) == 0:
        return _greedy(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    scale = _pixel_scale_arcsec(wcs1)
    c1 = wcs1.pixel_to_world(np.asarray(x1), np.asarray(y1))
    c2 = wcs2.pixel_to_world(np.asarray(x2), np.asarray(y2))
    i, j, sep, _ = search_around_sky(c1, c2, radius_pix * scale * u.arcsec)
    return _greedy(np.asarray(i, int), np.asarray(j, int), sep.to_value(u.arcsec) / scale)


#: Public names of the engine for the package's other modules (``align``), which
#: never import a ``_private`` name; not in ``__all__``, not part of the user API.
detect_and_measure = _detect_and_measure
match_pixels = _match_pixels


# --------------------------------------------------------------------------- public function
def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _positive(value, name, *, integer=False):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}.") from None
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}.")
    if integer:
        if number != int(number):
            raise ValueError(f"{name} must be an integer, got {value!r}.")
        return int(number)
    return number


def photometric_comparison(reference, test, *, input=None, detection_threshold=7.0,
                           min_area=10, aperture_radius=5.0, match_radius=2.0,
                           background_box=64, background_filter=3, nlevels=32,
                           contrast=0.005, threshold="self", match="auto",
                           errors="background", exposure_time=None, gain=None):
    r"""
    Detect, measure and cross-match sources in a reference and a test image.

    The paper's evaluation (SExtractor ``final.sex`` settings) with photutils:
    for each image a `~photutils.background.Background2D` background
    (``background_box`` px meshes, ``background_filter`` median filter,
    SExtractor mode estimator, 3-sigma clipping) is subtracted; sources are
    segments of at least ``min_area`` 8-connected pixels above the detection
    threshold, deblended with `~photutils.segmentation.deblend_sources`
    (``nlevels`` exponential levels, ``contrast``), with no smoothing filter;
    positions are the `~photutils.segmentation.SourceCatalog` barycentres
    (``x_centroid``, ``y_centroid``, 0-based pixels); fluxes are exact
    circular-aperture sums of radius ``aperture_radius`` on the
    background-subtracted image.  Masked or non-finite pixels are excluded
    everywhere.  Reference and test detections are then matched one-to-one
    (closest pairs first, each detection used once) within ``match_radius``.

    Flux errors (per pixel, summed in quadrature over the aperture) with
    ``errors="background"`` (default) are the background rms map measured on
    each image itself, as SExtractor does with ``GAIN = 0``.  This is what the
    SNR gain should compare: a denoised image's declared uncertainty is a
    model (or an estimate), and its ``EXPTIME`` is the long exposure's, so
    either would report the noise it is supposed to have rather than the noise
    it has.  With ``errors="declared"``:

    - if the image has an ``uncertainty``, it is taken as the total per-pixel
      standard deviation;
    - otherwise :math:`\sigma^2 = \sigma_\mathrm{bkg}^2 + \max(d - b, 0)/g`,
      the background rms map plus the source Poisson variance, where
      :math:`g` is the number of electrons per data unit (the exposure time
      for electron/s, the gain for adu, from the arguments or the
      ``EXPTIME``/``GAIN`` keywords);
    - when :math:`g` is unknown (e.g. electron/s without an exposure time, or
      a plain array) only the background rms is used.

    ``table.meta['error_model']`` says which applied to each image.  SNR is
    flux / flux error.

    Parameters
    ----------
    reference : `~astropy.nddata.CCDData`, `~astropy.nddata.NDData` or `~numpy.ndarray`
        The ground truth (e.g. the long exposure).  Plain arrays (and
        Quantities) are accepted and treated as dimensionless (or the
        Quantity's unit); all images must then be of the same kind, since
        units are checked.
    test : same types as ``reference``
        The image to evaluate (e.g. the denoised short exposure), on the same
        pixel grid (same shape) and in a unit convertible to the reference's.
    input : same types as ``reference``, optional
        The noisy input image.  When given, aperture photometry is also done
        in it at the reference positions (``flux_input``, ``snr_input``) and
        ``summary['snr_gain']`` is the paper's eq. 28 SNR gain
        (`~astro_unet.snr_gain` of ``snr_test`` over ``snr_input`` for the
        matched sources).
    detection_threshold : float, optional
        Detection threshold in units of the background rms (DETECT_THRESH, 7).
    min_area : int, optional
        Minimum number of connected pixels (DETECT_MINAREA, 10).
    aperture_radius : float, optional
        Aperture radius in pixels (5, the paper's 10 px diameter).
    match_radius : float, optional
        Matching radius in reference pixels (2).
    background_box, background_filter : int, optional
        Background mesh size and median-filter size in meshes (64, 3).
        Images smaller than a mesh get a single mesh.
    nlevels, contrast : optional
        Deblending levels and minimum contrast (32, 0.005); ``nlevels=0`` or
        ``contrast=1`` switch deblending off.
    threshold : {'self', 'reference'}, optional
        'self' (the paper): each image is thresholded at
        ``detection_threshold`` times its *own* background rms.  'reference':
        every image is thresholded at the same absolute level, the
        reference's ``detection_threshold`` x background-rms map, above its
        own background.  A denoised image has a lower rms, so 'self' detects
        fainter (and possibly spurious) sources in it, while 'reference' asks
        whether a source is as significant as in the reference.
    match : {'auto', 'pixel', 'sky'}, optional
        'pixel': `scipy.spatial.KDTree` on pixel positions; 'sky':
        `astropy.coordinates.search_around_sky` on the positions transformed
        with each image's celestial WCS (``match_radius`` converted to arcsec
        with the reference pixel scale); 'auto' (default): 'sky' when both
        images have a celestial FITS WCS, else 'pixel'.
    errors : {'background', 'declared'}, optional
        How flux errors (and so SNR) are computed: 'background' (default) from
        the measured background rms only; 'declared' from the images'
        uncertainties, else background rms plus source Poisson noise (see
        above).
    exposure_time, gain : float, `~astropy.units.Quantity` or dict, optional
        Override the ``EXPTIME`` / ``GAIN`` header values used for the Poisson
        term of ``errors="declared"``: one value for all images or a dict with
        keys 'reference', 'test', 'input'.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per source in the union of the catalogues: matched pairs
        first (by ``id_ref``), then unmatched reference sources, then
        unmatched test sources.  Columns: ``id_ref``, ``id_test`` (segment
        labels, -1 when absent), ``matched``, ``x_ref``, ``y_ref``,
        ``x_test``, ``y_test`` (0-based pixels, NaN when absent),
        ``separation`` (reference pixels), ``flux_ref``, ``flux_ref_err``,
        ``flux_test``, ``flux_test_err`` (aperture sums in the reference
        unit), ``snr_ref``, ``snr_test``, ``rel_flux_err`` =
        (flux_test - flux_ref) / flux_ref and, with ``input``,
        ``flux_input``, ``flux_input_err``, ``snr_input`` and ``snr_ratio`` =
        snr_test / snr_input.  ``meta`` holds the settings and error models.
    summary : dict
        ``n_reference``, ``n_test``, ``n_matched`` (true positives),
        ``n_missed``, ``n_spurious``, ``tpr`` = TP / n_reference (recall),
        ``precision`` = TP / n_test, ``f_measure`` = 2 P R / (P + R),
        ``rfe_mean``, ``rfe_median`` (relative flux error in per cent: mean
        and median over matched sources with positive reference flux of
        :math:`|F_\mathrm{test} - F_\mathrm{ref}| / F_\mathrm{ref}`),
        ``rfe_err`` (standard error of ``rfe_mean``), ``snr_gain``,
        ``psnr``, ``ssim``, ``kl`` (`~astro_unet.psnr`, `~astro_unet.ssim`,
        `~astro_unet.kl_divergence` of the whole images),
        ``background_rms_ref``/``_test`` (median rms, Quantity), ``threshold``
        and ``match``.  Ratios with a zero denominator are NaN (no crash on
        empty catalogues); ``f_measure`` is 0 when nothing matches.

    Raises
    ------
    TypeError
        An input is neither NDData nor an array.
    ValueError
        Not 2-D, shapes differ, no usable pixel, a bad option value.
    astropy.units.UnitsError
        No unit, or units that cannot be converted to the reference's.

    Examples
    --------
    >>> from astro_unet import load_sample_image, photometric_comparison
    >>> ccd = load_sample_image()
    >>> table, summary = photometric_comparison(ccd, ccd)
    >>> summary["tpr"], summary["precision"], summary["rfe_mean"]
    (1.0, 1.0, 0.0)
    >>> summary["n_reference"] == len(table) > 10
    True
    >>> table["flux_ref"].unit
    Unit("electron / s")
    """
    _check_choice(threshold, _THRESHOLD_MODES, "threshold")
    _check_choice(match, _MATCH_MODES, "match")
    detection_threshold = _positive(detection_threshold, "detection_threshold")
    min_area = _positive(min_area, "min_area", integer=True)
    aperture_radius = _positive(aperture_radius, "aperture_radius")
    match_radius = _positive(match_radius, "match_radius")
    background_box = _positive(background_box, "background_box", integer=True)
    background_filter = _positive(background_filter, "background_filter", integer=True)
    nlevels = int(nlevels)
    if nlevels < 0:
        raise ValueError(f"nlevels must be >= 0, got {nlevels}.")
    contrast = float(contrast)
    if not 0 <= contrast <= 1:
        raise ValueError(f"contrast must be in [0, 1], got {contrast}.")

    if errors not in ERROR_MODELS:
        raise ValueError(f"errors must be one of {ERROR_MODELS}, got {errors!r}.")
    ref = _prepare(reference, "reference", None, errors=errors,
                   exposure_time=_per_image(exposure_time, "reference"),
                   gain=_per_image(gain, "reference"))
    unit = ref["unit"]
    tst = _prepare(test, "test", unit, errors=errors,
                   exposure_time=_per_image(exposure_time, "test"),
                   gain=_per_image(gain, "test"))
    if tst["data"].shape != ref["data"].shape:
        raise ValueError(
            f"reference and test must have the same shape, got {ref['data'].shape} and "
            f"{tst['data'].shape}."
        )
    inp = None
    if input is not None:
        inp = _prepare(input, "input", unit, errors=errors,
                       exposure_time=_per_image(exposure_time, "input"),
                       gain=_per_image(gain, "input"))
        if inp["data"].shape != ref["data"].shape:
            raise ValueError(
                f"input must have the reference shape {ref['data'].shape}, "
                f"got {inp['data'].shape}."
            )
    if match == "sky" and (ref["wcs"] is None or tst["wcs"] is None):
        raise ValueError("match='sky' needs a celestial WCS on both reference and test.")
    use_sky = match == "sky" or (
        match == "auto" and ref["wcs"] is not None and tst["wcs"] is not None
    )

    settings = dict(detection_threshold=detection_threshold, min_area=min_area,
                    aperture_radius=aperture_radius, background_box=background_box,
                    background_filter=background_filter, nlevels=nlevels,
                    contrast=contrast)
    cat_ref = _detect_and_measure(ref["data"], bad=ref["bad"],
                                  uncertainty=ref["uncertainty"],
                                  poisson_scale=ref["poisson_scale"], **settings)
    threshold_image = cat_ref["threshold"] if threshold == "reference" else None
    cat_tst = _detect_and_measure(tst["data"], bad=tst["bad"],
                                  uncertainty=tst["uncertainty"],
                                  poisson_scale=tst["poisson_scale"],
                                  threshold_image=threshold_image, **settings)

    if use_sky:
        i_ref, i_tst, sep = _match_sky(cat_ref["x"], cat_ref["y"], ref["wcs"],
                                       cat_tst["x"], cat_tst["y"], tst["wcs"], match_radius)
    else:
        i_ref, i_tst, sep = _match_pixels(cat_ref["x"], cat_ref["y"],
                                          cat_tst["x"], cat_tst["y"], match_radius)
    order = np.argsort(i_ref, kind="stable")
    i_ref, i_tst, sep = i_ref[order], i_tst[order], sep[order]
    n_ref, n_tst, n_match = len(cat_ref["x"]), len(cat_tst["x"]), len(i_ref)
    miss_ref = np.setdiff1d(np.arange(n_ref), i_ref)
    miss_tst = np.setdiff1d(np.arange(n_tst), i_tst)

    rows_ref = np.concatenate([i_ref, miss_ref, np.full(len(miss_tst), -1)]).astype(int)
    rows_tst = np.concatenate([i_tst, np.full(len(miss_ref), -1), miss_tst]).astype(int)
    nrow = len(rows_ref)

    def pick(cat, key, rows, fill=np.nan):
        values = np.asarray(cat[key])
        out = np.full(nrow, fill, dtype=values.dtype if values.dtype.kind == "i" else float)
        has = rows >= 0
        out[has] = values[rows[has]]
        return out

    table = QTable()
    table["id_ref"] = pick(cat_ref, "label", rows_ref, fill=-1)
    table["id_test"] = pick(cat_tst, "label", rows_tst, fill=-1)
    table["matched"] = np.arange(nrow) < n_match
    table["x_ref"] = pick(cat_ref, "x", rows_ref)
    table["y_ref"] = pick(cat_ref, "y", rows_ref)
    table["x_test"] = pick(cat_tst, "x", rows_tst)
    table["y_test"] = pick(cat_tst, "y", rows_tst)
    separation = np.full(nrow, np.nan)
    separation[:n_match] = sep
    table["separation"] = separation
    table["flux_ref"] = pick(cat_ref, "flux", rows_ref) * unit
    table["flux_ref_err"] = pick(cat_ref, "flux_err", rows_ref) * unit
    table["flux_test"] = pick(cat_tst, "flux", rows_tst) * unit
    table["flux_test_err"] = pick(cat_tst, "flux_err", rows_tst) * unit
    table["snr_ref"] = pick(cat_ref, "snr", rows_ref)
    table["snr_test"] = pick(cat_tst, "snr", rows_tst)
    f_ref = table["flux_ref"].value
    f_tst = table["flux_test"].value
    rel = np.full(nrow, np.nan)
    both = np.isfinite(f_ref) & np.isfinite(f_tst) & (f_ref != 0)
    rel[both] = (f_tst[both] - f_ref[both]) / f_ref[both]
    table["rel_flux_err"] = rel

    gain_snr = np.nan
    if inp is not None:
        # forced photometry at the reference positions, with the input's own background
        background, rms = _background(inp["data"], inp["bad"], box=background_box,
                                      filter_size=background_filter)
        data_sub = np.where(inp["bad"], 0.0, inp["data"] - background)
        error = _error_map(data_sub, rms, uncertainty=inp["uncertainty"],
                           poisson_scale=inp["poisson_scale"])
        error = np.where(inp["bad"], 0.0, error)
        has = np.isfinite(table["x_ref"])
        flux_in = np.full(nrow, np.nan)
        err_in = np.full(nrow, np.nan)
        flux_in[has], err_in[has] = _aperture_sums(
            data_sub, table["x_ref"][has], table["y_ref"][has], radius=aperture_radius,
            error=error, bad=inp["bad"])
        snr_in = np.full(nrow, np.nan)
        np.divide(flux_in, err_in, out=snr_in, where=np.isfinite(err_in) & (err_in > 0))
        table["flux_input"] = flux_in * unit
        table["flux_input_err"] = err_in * unit
        table["snr_input"] = snr_in
        ratio = np.full(nrow, np.nan)
        ok = np.isfinite(snr_in) & (snr_in > 0) & np.isfinite(table["snr_test"])
        ratio[ok] = table["snr_test"][ok] / snr_in[ok]
        table["snr_ratio"] = ratio
        m = table["matched"]
        gain_snr = _metrics.snr_gain(np.asarray(table["snr_test"][m]), snr_in[m])

    table.meta["settings"] = dict(settings, match_radius=match_radius, threshold=threshold,
                                  match="sky" if use_sky else "pixel")
    table.meta["error_model"] = {"reference": ref["error_model"], "test": tst["error_model"]}
    if inp is not None:
        table.meta["error_model"]["input"] = inp["error_model"]

    summary = _summary(table, n_ref, n_tst, n_match, gain_snr, ref, tst, cat_ref, cat_tst)
    summary["threshold"] = threshold
    summary["match"] = "sky" if use_sky else "pixel"
    return table, summary


def _ratio(a, b):
    return float(a) / float(b) if b > 0 else np.nan


def _summary(table, n_ref, n_tst, n_match, gain_snr, ref, tst, cat_ref, cat_tst):
    """The summary dict of `photometric_comparison`."""
    tpr = _ratio(n_match, n_ref)
    precision = _ratio(n_match, n_tst)
    if np.isfinite(tpr) and np.isfinite(precision):
        f_measure = 0.0 if tpr + precision == 0 else 2 * tpr * precision / (tpr + precision)
    else:
        f_measure = 0.0 if n_match == 0 and (n_ref > 0 or n_tst > 0) else np.nan
    matched = np.asarray(table["matched"])
    f_ref = table["flux_ref"].value[matched]
    rel = np.abs(np.asarray(table["rel_flux_err"])[matched])
    rel = rel[np.isfinite(rel) & (f_ref > 0)]
    if rel.size:
        rfe_mean = float(100 * np.mean(rel))
        rfe_median = float(100 * np.median(rel))
        rfe_err = float(100 * np.std(rel, ddof=1) / np.sqrt(rel.size)) if rel.size > 1 else np.nan
    else:
        rfe_mean = rfe_median = rfe_err = np.nan

    def image_metric(func, **kwargs):
        try:
            return func(ref["data"], tst["data"], mask=ref["bad"] | tst["bad"], **kwargs)
        except ValueError:  # too small for SSIM, constant reference, ...
            return np.nan

    unit = ref["unit"]
    return dict(
        n_reference=int(n_ref), n_test=int(n_tst), n_matched=int(n_match),
        n_missed=int(n_ref - n_match), n_spurious=int(n_tst - n_match),
        tpr=tpr, precision=precision, f_measure=float(f_measure),
        rfe_mean=rfe_mean, rfe_median=rfe_median, rfe_err=rfe_err,
        snr_gain=float(gain_snr),
        psnr=float(image_metric(_metrics.psnr)),
        ssim=float(image_metric(_metrics.ssim)),
        kl=float(image_metric(_metrics.kl_divergence)),
        background_rms_ref=float(np.median(cat_ref["background_rms"][~ref["bad"]])) * unit,
        background_rms_test=float(np.median(cat_tst["background_rms"][~tst["bad"]])) * unit,
    )
