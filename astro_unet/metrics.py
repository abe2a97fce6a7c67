# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Image-quality and detection metrics of the Astro U-net paper.

Pure NumPy/SciPy/scikit-image code.  Image metrics (`psnr`, `ssim`,
`kl_divergence`) accept `numpy.ndarray`, `~astropy.units.Quantity` or
`~astropy.nddata.NDData` (``CCDData``) inputs; pixels that are NaN/inf, or
masked in either image (their ``mask`` or the ``mask`` argument), are ignored.
When both images carry a unit, the test image is converted to the reference
unit (incompatible units raise `~astropy.units.UnitsError`); an image without
a unit is assumed to be in the other's unit.  Catalogue metrics (`snr_gain`,
`completeness_curve`, `depth`) take per-source arrays.
"""

import numpy as np
import astropy.units as u
from astropy.nddata import NDData
from astropy.stats import sigma_clip
from scipy import ndimage

__all__ = ["psnr", "ssim", "kl_divergence", "snr_gain", "completeness_curve", "depth"]


# --------------------------------------------------------------------------- helpers
def _split(image, name):
    """(float64 data copy, bool mask or None, unit or None) of one image."""
    if isinstance(image, NDData):
        data = np.array(image.data, dtype=float, copy=True)
        mask = None if image.mask is None else np.asarray(image.mask, dtype=bool)
        unit = None if image.unit is None else u.Unit(image.unit)
    elif isinstance(image, u.Quantity):
        data = np.array(image.value, dtype=float, copy=True)
        mask, unit = None, image.unit
    else:
        try:
            data = np.array(image, dtype=float, copy=True)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a numpy array, Quantity or NDData, got {type(image).__name__}."
            ) from None
        mask, unit = None, None
    if data.ndim == 0:
        raise ValueError(f"{name} must be an image (array), got a scalar.")
    if mask is not None and mask.shape != data.shape:
        raise ValueError(f"{name}.mask shape {mask.shape} differs from its data {data.shape}.")
    return data, mask, unit


def _pair(reference, test, mask=None):
    """Reference/test data (test in the reference unit) and the mask of usable pixels."""
    ref, ref_mask, ref_unit = _split(reference, "reference")
    tst, tst_mask, tst_unit = _split(test, "test")
    if ref.shape != tst.shape:
        raise ValueError(
            f"reference and test must have the same shape, got {ref.shape} and {tst.shape}."
        )
    if ref_unit is not None and tst_unit is not None and tst_unit != ref_unit:
        try:
            tst = tst * tst_unit.to(ref_unit)
        except u.UnitConversionError:
            raise u.UnitsError(
                f"test unit '{tst_unit}' cannot be converted to the reference unit '{ref_unit}'."
            ) from None
    valid = np.isfinite(ref) & np.isfinite(tst)
    for m in (ref_mask, tst_mask):
        if m is not None:
            valid &= ~m
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ref.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the images' {ref.shape}.")
        valid &= ~mask
    if not valid.any():
        raise ValueError("No pixel is finite and unmasked in both images.")
    return ref, tst, valid


def _range_value(data_range, unit):
    """``data_range`` as a float in ``unit`` (Quantity accepted)."""
    if isinstance(data_range, u.Quantity):
        data_range = data_range.to_value(unit) if unit is not None else data_range.value
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a finite positive number, got {data_range!r}.")
    return data_range


def _unit_of(image):
    if isinstance(image, NDData):
        return None if image.unit is None else u.Unit(image.unit)
    if isinstance(image, u.Quantity):
        return image.unit
    return None


# --------------------------------------------------------------------------- image metrics
def psnr(reference, test, *, data_range=None, mask=None):
    r"""
    Peak signal-to-noise ratio of ``test`` with respect to ``reference`` (dB).

    .. math::

        \mathrm{PSNR} = 10 \log_{10} \frac{R^2}{\mathrm{MSE}}, \qquad
        \mathrm{MSE} = \frac{1}{N} \sum_{i \in \mathrm{valid}} (T_i - I_i)^2

    where :math:`I` is the reference, :math:`T` the test image, and the sum
    runs over the :math:`N` pixels that are finite and unmasked in both.

    Parameters
    ----------
    reference, test : `~numpy.ndarray`, `~astropy.units.Quantity` or `~astropy.nddata.NDData`
        Images of the same shape.
    data_range : float or `~astropy.units.Quantity`, optional
        The peak :math:`R`.  By default, as in the paper's code, the maximum
        of the reference pixels that survive a 3-sigma clip
        (`astropy.stats.sigma_clip`), so that a few saturated stars do not
        set the scale.  Pass ``np.ptp(reference)`` for the usual
        image-processing convention.
    mask : array-like of bool, optional
        Extra pixels to ignore (True = ignore).

    Returns
    -------
    psnr : float
        In decibels; ``inf`` when the images are identical on the valid pixels.

    Raises
    ------
    ValueError
        Shape mismatch, no usable pixel, or a non-positive peak.
    astropy.units.UnitsError
        Incompatible units.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet import psnr
    >>> ref = np.zeros((8, 8)); ref[0, 0] = 1.0
    >>> float(psnr(ref, ref + 0.1, data_range=1.0))
    20.0
    >>> psnr(ref, ref)
    inf
    """
    ref, tst, valid = _pair(reference, test, mask)
    diff = tst[valid] - ref[valid]
    mse = float(np.mean(diff * diff))
    if mse == 0:
        return np.inf
    if data_range is None:
        kept = sigma_clip(ref[valid], sigma=3, masked=False)
        peak = float(np.max(kept)) if kept.size else float(np.max(ref[valid]))
        if not peak > 0:
            raise ValueError(
                "The clipped maximum of the reference is not positive; pass data_range=..."
            )
    else:
        peak = _range_value(data_range, _unit_of(reference))
    return float(10.0 * np.log10(peak * peak / mse))


def ssim(reference, test, *, data_range=None, mask=None, win_size=7):
    r"""
    Mean structural similarity index of ``test`` with respect to ``reference``.

    The local index (Wang et al. 2004) computed by
    `skimage.metrics.structural_similarity` in ``win_size`` x ``win_size``
    windows,

    .. math::

        \mathrm{SSIM}(x, y) = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
        {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
        \quad C_1 = (0.01 R)^2,\ C_2 = (0.03 R)^2,

    is averaged over the windows that lie inside the image and contain no
    invalid (NaN or masked) pixel.  Invalid pixels are first filled with the
    median of the valid reference pixels in both images; without invalid
    pixels the result equals scikit-image's mean SSIM.

    Parameters
    ----------
    reference, test : `~numpy.ndarray`, `~astropy.units.Quantity` or `~astropy.nddata.NDData`
        2-D images of the same shape, at least ``win_size`` pixels on a side.
    data_range : float or `~astropy.units.Quantity`, optional
        :math:`R`.  Default: max - min of the valid reference pixels (the
        paper relied on an old scikit-image default of 2 for float images,
        which depends on the image unit, so it is not reproduced).
    mask : array-like of bool, optional
        Extra pixels to ignore (True = ignore).
    win_size : int, optional
        Odd window side (default 7, scikit-image's).

    Returns
    -------
    ssim : float
        1 for identical images, smaller otherwise (down to -1).

    Raises
    ------
    ValueError
        Shape mismatch, not 2-D, image smaller than the window, no usable
        pixel, or a zero data range.
    astropy.units.UnitsError
        Incompatible units.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet import ssim
    >>> ref = np.random.default_rng(0).normal(size=(32, 32))
    >>> ssim(ref, ref)
    1.0
    >>> bool(ssim(ref, ref + np.random.default_rng(1).normal(size=(32, 32))) < 0.7)
    True
    """
    from skimage.metrics import structural_similarity

    ref, tst, valid = _pair(reference, test, mask)
    if ref.ndim != 2:
        raise ValueError(f"ssim needs 2-D images, got {ref.ndim}-D.")
    win_size = int(win_size)
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size}.")
    if min(ref.shape) < win_size:
        raise ValueError(
            f"ssim needs images of at least {win_size}x{win_size} pixels, got {ref.shape}."
        )
    if data_range is None:
        data_range = float(np.ptp(ref[valid]))
        if not data_range > 0:
            raise ValueError("The reference is constant; pass data_range=...")
    else:
        data_range = _range_value(data_range, _unit_of(reference))
    fill = float(np.median(ref[valid]))
    ref = np.where(valid, ref, fill)
    tst = np.where(valid, tst, fill)
    _, smap = structural_similarity(
        ref, tst, data_range=data_range, win_size=win_size, full=True
    )
    pad = (win_size - 1) // 2
    use = np.zeros(ref.shape, dtype=bool)
    use[pad:ref.shape[0] - pad, pad:ref.shape[1] - pad] = True
    if not valid.all():
        clean = ~ndimage.binary_dilation(~valid, structure=np.ones((win_size, win_size)))
        if (use & clean).any():
            use &= clean
        else:
            use &= valid
    if not use.any():
        use = valid
    return float(np.mean(smap[use]))


def kl_divergence(reference, test, *, bins=256, range=None, mask=None, epsilon=1e-10):
    r"""
    Kullback-Leibler divergence between the pixel-value histograms (nats).

    With :math:`P` the normalised histogram of the reference pixel values
    and :math:`Q` that of the test pixel values (same bins, same pixels),

    .. math::

        D_\mathrm{KL}(P \,\|\, Q) = \sum_k p_k \ln \frac{p_k}{q_k}, \qquad
        p_k = \frac{P_k + \epsilon}{1 + K\epsilon}, \quad
        q_k = \frac{Q_k + \epsilon}{1 + K\epsilon},

    i.e. the information lost when the test distribution is used to
    approximate the reference one (the paper's direction: ground truth
    first).  The smoothing :math:`\epsilon` (per bin, :math:`K` bins) keeps
    empty test bins finite.  Zero for identical histograms, positive
    otherwise.

    Parameters
    ----------
    reference, test : `~numpy.ndarray`, `~astropy.units.Quantity` or `~astropy.nddata.NDData`
        Images of the same shape; only pixels valid in both are counted.
    bins : int, optional
        Number of equal-width bins (default 256).
    range : (float, float), optional
        Histogram range in the reference unit.  Default: the 0.5 and 99.5
        percentiles of the valid reference pixels.  Values outside the range
        are counted in the first / last bin, so every pixel contributes.
    mask : array-like of bool, optional
        Extra pixels to ignore (True = ignore).
    epsilon : float, optional
        Smoothing added to each bin probability (default 1e-10).

    Returns
    -------
    kl : float
        The divergence in nats (natural logarithm).

    Raises
    ------
    ValueError
        Shape mismatch, no usable pixel, bad ``bins``/``range``/``epsilon``.
    astropy.units.UnitsError
        Incompatible units.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet import kl_divergence
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(64, 64))
    >>> kl_divergence(ref, ref)
    0.0
    >>> bool(kl_divergence(ref, 0.5 * ref) > 0.1)
    True
    """
    ref, tst, valid = _pair(reference, test, mask)
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}.")
    epsilon = float(epsilon)
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
    r = ref[valid]
    t = tst[valid]
    if range is None:
        lo, hi = np.percentile(r, [0.5, 99.5])
    else:
        lo, hi = range
        unit = _unit_of(reference)
        lo = lo.to_value(unit) if isinstance(lo, u.Quantity) and unit is not None else lo
        hi = hi.to_value(unit) if isinstance(hi, u.Quantity) and unit is not None else hi
        lo, hi = float(getattr(lo, "value", lo)), float(getattr(hi, "value", hi))
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"range must be two finite numbers (low < high), got {range!r}.")
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    p, _ = np.histogram(np.clip(r, lo, hi), bins=edges)
    q, _ = np.histogram(np.clip(t, lo, hi), bins=edges)
    p = (p / p.sum() + epsilon) / (1 + bins * epsilon)
    q = (q / q.sum() + epsilon) / (1 + bins * epsilon)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


# --------------------------------------------------------------------------- catalogue metrics
def snr_gain(snr_test, snr_input, *, statistic="mean"):
    r"""
    SNR gain of the paper (eq. 28): mean ratio of matched-source SNRs.

    .. math::

        G = \frac{1}{N} \sum_{i=1}^{N}
            \frac{\mathrm{SNR}_{\mathrm{test},i}}{\mathrm{SNR}_{\mathrm{input},i}}

    over the :math:`N` sources (the same sources, e.g. those matched to the
    reference catalogue, measured in the same aperture) whose two SNRs are
    finite and whose input SNR is positive.  ``SNR = flux / flux_err`` of
    the aperture photometry (see `~astro_unet.photometric_comparison`, which
    fills ``snr_test`` and ``snr_input``).

    Parameters
    ----------
    snr_test, snr_input : array-like
        Per-source SNR in the processed (test) and the noisy input image.
    statistic : {'mean', 'median'}, optional
        'mean' is the paper's definition; 'median' is robust to outliers.

    Returns
    -------
    gain : float
        NaN when no source is usable.

    Raises
    ------
    ValueError
        Arrays of different shapes or an unknown ``statistic``.

    Examples
    --------
    >>> from astro_unet import snr_gain
    >>> snr_gain([20.0, 30.0, 5.0], [10.0, 10.0, 0.0])
    2.5
    """
    a = np.asarray(getattr(snr_test, "value", snr_test), dtype=float)
    b = np.asarray(getattr(snr_input, "value", snr_input), dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"snr_test and snr_input differ in shape: {a.shape} vs {b.shape}.")
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}.")
    use = np.isfinite(a) & np.isfinite(b) & (b > 0)
    if not use.any():
        return np.nan
    ratio = a[use] / b[use]
    return float(np.mean(ratio) if statistic == "mean" else np.median(ratio))


def _curve(reference_fluxes, detected_mask, bins, log):
    unit = reference_fluxes.unit if isinstance(reference_fluxes, u.Quantity) else None
    flux = np.asarray(getattr(reference_fluxes, "value", reference_fluxes), dtype=float).ravel()
    det = np.asarray(detected_mask).ravel()
    if det.dtype != bool:
        raise TypeError("detected_mask must be a boolean array.")
    if flux.shape != det.shape:
        raise ValueError(
            f"reference_fluxes and detected_mask differ in size: {flux.size} vs {det.size}."
        )
    use = np.isfinite(flux)
    if log:
        use &= flux > 0
    flux, det = flux[use], det[use]
    if np.ndim(bins) == 0:
        nbins = int(bins)
        if nbins < 1:
            raise ValueError(f"bins must be a positive integer or bin edges, got {bins!r}.")
        if flux.size == 0:
            raise ValueError("No finite (positive, for log bins) reference flux.")
        lo, hi = flux.min(), flux.max()
        if log:
            lo, hi = np.log10(lo), np.log10(hi)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, nbins + 1)
        if log:
            edges = 10.0**edges
            edges[0], edges[-1] = min(edges[0], flux.min()), max(edges[-1], flux.max())
    else:
        if isinstance(bins, u.Quantity):
            bins = bins.to_value(unit) if unit is not None else bins.value
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be a 1-D increasing sequence of at least 2 values.")
        if log and edges[0] <= 0:
            raise ValueError("log=True needs positive bin edges.")
    counts, _ = np.histogram(flux, bins=edges)
    found, _ = np.histogram(flux[det], bins=edges)
    completeness = np.full(counts.shape, np.nan)
    np.divide(found, counts, out=completeness, where=counts > 0)
    centres = np.sqrt(edges[:-1] * edges[1:]) if log else 0.5 * (edges[:-1] + edges[1:])
    return centres, completeness, counts, unit


def completeness_curve(reference_fluxes, detected_mask, *, bins=10, log=True):
    r"""
    Fraction of reference sources detected, in bins of reference flux.

    .. math::

        C_b = \frac{N_\mathrm{detected}(F \in b)}{N(F \in b)}

    Parameters
    ----------
    reference_fluxes : array-like or `~astropy.units.Quantity`
        True (or reference-image) flux of every source.
    detected_mask : array-like of bool
        True where the source was recovered (e.g. the ``matched`` column of
        `~astro_unet.photometric_comparison` restricted to reference rows).
    bins : int or array-like, optional
        Number of bins spanning the finite fluxes (default 10), or bin edges.
    log : bool, optional
        Logarithmic bins (default): edges equally spaced in log flux and
        centres at the geometric mean of the edges; non-positive fluxes are
        ignored.  False: linear bins and arithmetic centres.

    Returns
    -------
    centres : `~numpy.ndarray` or `~astropy.units.Quantity`
        Bin centres (in the flux unit when one is given).
    completeness : `~numpy.ndarray`
        Detected fraction per bin; NaN for empty bins.
    counts : `~numpy.ndarray`
        Number of reference sources per bin.

    Raises
    ------
    ValueError
        Size mismatch, no usable flux, bad bins.
    TypeError
        ``detected_mask`` is not boolean.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet import completeness_curve
    >>> flux = np.array([1.0, 2.0, 3.0, 4.0])
    >>> centres, comp, counts = completeness_curve(
    ...     flux, np.array([False, True, True, True]), bins=[0.5, 2.5, 4.5], log=False)
    >>> centres, comp, counts
    (array([1.5, 3.5]), array([0.5, 1. ]), array([2, 2]))
    """
    centres, completeness, counts, unit = _curve(reference_fluxes, detected_mask, bins, log)
    if unit is not None:
        centres = centres * unit
    return centres, completeness, counts


def depth(reference_fluxes, detected_mask, *, level=0.9, bins=10, log=True):
    r"""
    Flux at which the completeness falls to ``level`` (the 90 % depth).

    From the `completeness_curve`, going from the brightest non-empty bin
    toward fainter ones, the first bin :math:`i` with :math:`C_i <` ``level``
    and the brighter neighbour :math:`j` (:math:`C_j \ge` ``level``) give,
    by linear interpolation in :math:`\log F` (in :math:`F` when
    ``log=False``),

    .. math::

        \log F_\mathrm{depth} = \log F_j + \frac{C_j - \mathrm{level}}{C_j - C_i}
        (\log F_i - \log F_j).

    Parameters
    ----------
    reference_fluxes, detected_mask, bins, log
        As for `completeness_curve`.
    level : float, optional
        Completeness level in (0, 1] (default 0.9).

    Returns
    -------
    depth : float or `~astropy.units.Quantity`
        NaN when even the brightest bin is below ``level``; the faintest bin
        centre (a bright limit of the true depth) when no bin falls below it.

    Raises
    ------
    ValueError
        ``level`` outside (0, 1], or the errors of `completeness_curve`.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet import depth
    >>> flux = np.array([1.0, 1.0, 3.0, 3.0])   # bin centres 1.25 (0 %) and 3.0 (100 %)
    >>> float(depth(flux, np.array([False, False, True, True]), bins=[0.5, 2, 4], log=False))
    2.825
    """
    level = float(level)
    if not 0 < level <= 1:
        raise ValueError(f"level must be in (0, 1], got {level}.")
    centres, comp, counts, unit = _curve(reference_fluxes, detected_mask, bins, log)
    keep = counts > 0
    centres, comp = centres[keep], comp[keep]
    result = np.nan
    if centres.size and comp[-1] >= level:
        below = np.nonzero(comp < level)[0]
        if below.size == 0:
            result = centres[0]
        else:
            i = below[-1]  # faintest-to-brightest order: the brightest bin below level
            j = i + 1
            t = (comp[j] - level) / (comp[j] - comp[i])
            if log:
                result = 10.0 ** (np.log10(centres[j])
                                  + t * (np.log10(centres[i]) - np.log10(centres[j])))
            else:
                result = centres[j] + t * (centres[i] - centres[j])
    result = float(result)
    return result * unit if unit is not None else result
